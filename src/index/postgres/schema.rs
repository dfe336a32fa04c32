//! The index's tables (`schema.sql`), their version, and the checks a
//! database must pass: the `vector` extension, and a schema this ragmap knows.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::PgError;

/// The version `schema.sql` creates.
pub const VERSION: i32 = 1;

/// `MIGRATIONS[i]` brings version `i + 1` to `i + 2`, in the migrating run's
/// transaction (none yet: version 1 is the first).
const MIGRATIONS: &[&str] = &[];

/// The schema the index lives in, and the one a full build fills before it
/// takes its place.
pub const LIVE: &str = "ragmap";
pub const NEXT: &str = "ragmap_next";

/// Advisory lock keys ("ragmap" in ASCII and a number): one index run at a
/// time per database, and one migration.
pub const INDEX_LOCK: i64 = 0x7261_676d_6170_0001;
const MIGRATE_LOCK: i64 = 0x7261_676d_6170_0002;

/// HNSW in pgvector indexes half vectors of up to 4,000 dimensions; past
/// that, searches scan exactly.
const HNSW_MAX_DIMENSIONS: usize = 4000;

const SQL: &str = include_str!("schema.sql");

/// The block of `schema.sql` headed `-- name: {name}`, for `schema` and `dimensions`.
fn block(name: &str, schema: &str, dimensions: usize) -> String {
    let marker = format!("-- name: {name}\n");
    let start = SQL.find(&marker).map_or(0, |i| i + marker.len());
    let end = SQL[start..]
        .find("-- name: ")
        .map_or(SQL.len(), |i| start + i);
    SQL[start..end]
        .replace("{schema}", schema)
        .replace("{dimensions}", &dimensions.to_string())
}

/// The tables of a new index in `schema`, without keys.
pub fn tables(schema: &str, dimensions: usize) -> String {
    block("tables", schema, dimensions)
}

/// The keys and indexes of a loaded `schema`.
pub fn keys(schema: &str, dimensions: usize) -> String {
    let mut sql = block("keys", schema, dimensions);
    if dimensions <= HNSW_MAX_DIMENSIONS {
        sql.push_str(&block("hnsw", schema, dimensions));
    }
    sql
}

/// Whether `e` says the index's tables are not there.
pub fn is_missing(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::INVALID_SCHEMA_NAME
    )
}

/// The stored schema version, `None` when there is no index yet.
pub async fn stored_version(client: &Client, at: &str) -> Result<Option<i32>, PgError> {
    let failed = |e: tokio_postgres::Error| super::classify(at, &e);
    let exists: bool = client
        .query_one(
            &format!("SELECT to_regclass('{LIVE}.state') IS NOT NULL"),
            &[],
        )
        .await
        .map_err(failed)?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_one(&format!("SELECT schema_version FROM {LIVE}.state"), &[])
        .await
        .map_err(failed)?;
    Ok(Some(row.get(0)))
}

/// What a reader makes of the stored version: fine, or the error to give.
pub fn check_readable(found: i32, at: &str) -> Result<(), PgError> {
    match found.cmp(&VERSION) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(PgError::NewerSchema {
            at: at.to_string(),
            found,
            known: VERSION,
        }),
        std::cmp::Ordering::Less => Err(PgError::OlderSchema {
            at: at.to_string(),
            found,
        }),
    }
}

/// Brings an older schema up to [`VERSION`] under the migration lock, in one
/// transaction; says what it did. A newer one is refused.
pub async fn migrate(client: &Client, at: &str) -> Result<Option<String>, PgError> {
    let failed = |e: tokio_postgres::Error| super::classify(at, &e);
    client.batch_execute("BEGIN").await.map_err(failed)?;
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await
        .map_err(failed)?;
    let found = stored_version(client, at).await?;
    let outcome = match found {
        Some(v) if v > VERSION => Err(PgError::NewerSchema {
            at: at.to_string(),
            found: v,
            known: VERSION,
        }),
        Some(v) if v < VERSION => apply_migrations(client, at, v).await,
        _ => Ok(None),
    };
    let end = if outcome.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    client.batch_execute(end).await.map_err(failed)?;
    outcome
}

async fn apply_migrations(client: &Client, at: &str, from: i32) -> Result<Option<String>, PgError> {
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(from as usize - 1) {
        client
            .batch_execute(&sql.replace("{schema}", LIVE))
            .await
            .map_err(|e| PgError::failed(at, format!("migrating to schema {}: {e}", step + 2)))?;
    }
    client
        .execute(
            &format!("UPDATE {LIVE}.state SET schema_version = $1"),
            &[&VERSION],
        )
        .await
        .map_err(|e| super::classify(at, &e))?;
    Ok(Some(format!(
        "index schema {from} → {VERSION} (nothing re-embedded)"
    )))
}

/// Makes sure the database has pgvector 0.7 or later (`halfvec`), creating
/// the extension when the role may.
pub async fn ensure_vector(client: &Client, at: &str) -> Result<(), PgError> {
    let mut version = installed_vector(client)
        .await
        .map_err(|e| super::classify(at, &e))?;
    if version.is_none() {
        if let Err(e) = client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
            .await
        {
            return Err(match e.code() {
                Some(c)
                    if *c == SqlState::UNDEFINED_FILE || *c == SqlState::FEATURE_NOT_SUPPORTED =>
                {
                    PgError::NoPgvector { at: at.to_string() }
                }
                Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
                    PgError::NoVector { at: at.to_string() }
                }
                _ => super::classify(at, &e),
            });
        }
        version = installed_vector(client)
            .await
            .map_err(|e| super::classify(at, &e))?;
    }
    let version = version.unwrap_or_default();
    let numbers: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    if numbers.as_slice() < [0, 7].as_slice() {
        return Err(PgError::OldPgvector {
            at: at.to_string(),
            found: version,
        });
    }
    Ok(())
}

async fn installed_vector(client: &Client) -> Result<Option<String>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'",
            &[],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}
