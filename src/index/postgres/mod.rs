//! The index in PostgreSQL + pgvector (`[index] url`): the same documents,
//! chunks, vectors and BM25 statistics as the embedded index, in one database
//! that any number of `ragmap serve` processes share with one indexer.
//!
//! - Searches read one committed generation each: a `REPEATABLE READ READ
//!   ONLY` transaction per search ([`read`]), on the replica of
//!   `[index] read_url` when there is one.
//! - Lexical search is BM25 computed from stored postings with FTS5's own
//!   formula, field weights, tokens ([`tokens`]), pruning and tie order, so
//!   both backends rank alike; vectors are pgvector HNSW over half vectors.
//! - An index run is one transaction under an advisory lock ([`write`]): a
//!   killed run leaves the previous generation, a second indexer waits.
//!   Its commit notifies the servers listening on the primary.
//! - The schema is versioned and migrated under a lock ([`schema`]).
//!
//! Every statement runs on this backend's own runtime ([`database`]), so
//! the index can be used from any thread.

mod database;
mod read;
mod schema;
pub(crate) mod tokens;
mod write;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;

use super::{BackendStatus, Counts, Description, DocRow, Index, IndexError, SearchError, Snapshot};
use crate::config::{Config, IndexSettings};
use database::Database;

pub(crate) use read::export;
pub(crate) use write::target;

/// What can go wrong with the index database, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("[index] url is not a PostgreSQL URL ({detail}); write postgres://USER@HOST:PORT/DATABASE, or unset it for the embedded index")]
    BadUrl { detail: String },
    #[error("cannot reach the index database {at}: {detail}; check that PostgreSQL runs there and that [index] url (RAGMAP_INDEX_URL, --index-url) names it")]
    Unreachable { at: String, detail: String },
    #[error("the index database {at} did not answer within {secs:.0} s; check the network and the server ([index] connect_timeout_secs)")]
    NoAnswer { at: String, secs: f64 },
    #[error("the index database {at} refused the connection: {detail}; fix the user, password or database name in [index] url (or set PGPASSWORD)")]
    Refused { at: String, detail: String },
    #[error("all {size} connections to the index database {at} stayed busy; raise [index] pool_size or check for slow statements")]
    Busy { at: String, size: usize },
    #[error("the index database {at} cancelled a statement that ran past [index] statement_timeout_secs; raise it, or check the database's load and locks")]
    Timeout { at: String },
    #[error("the index database {at} has no `vector` extension: run `CREATE EXTENSION vector;` in that database as a superuser (pgvector 0.8.3 or later recommended)")]
    NoVector { at: String },
    #[error("pgvector is not installed on the server of {at}: install it (0.8.3 or later recommended), then run `CREATE EXTENSION vector;` in the database")]
    NoPgvector { at: String },
    #[error("the index database {at} has pgvector {found}; ragmap needs 0.7 or later (0.8.3 recommended): upgrade it, then `ALTER EXTENSION vector UPDATE;`")]
    OldPgvector { at: String, found: String },
    #[error("the index in {at} has schema version {found}, newer than this ragmap knows ({known}); upgrade ragmap")]
    NewerSchema { at: String, found: i32, known: i32 },
    #[error("the index in {at} has schema version {found}, written by an older ragmap; run `ragmap index` to update it (nothing is re-embedded)")]
    OlderSchema { at: String, found: i32 },
    #[error("the index database {at} failed: {detail}")]
    Failed { at: String, detail: String },
}

impl PgError {
    pub fn failed(at: &str, detail: impl ToString) -> PgError {
        PgError::Failed {
            at: at.to_string(),
            detail: detail.to_string(),
        }
    }

    pub fn exit_code(&self) -> u8 {
        use crate::exit;
        match self {
            PgError::Unreachable { .. }
            | PgError::NoAnswer { .. }
            | PgError::Refused { .. }
            | PgError::Busy { .. }
            | PgError::Timeout { .. } => exit::DATABASE,
            PgError::NoVector { .. } | PgError::NoPgvector { .. } | PgError::OldPgvector { .. } => {
                exit::SETUP
            }
            PgError::NewerSchema { .. } | PgError::OlderSchema { .. } => exit::INDEX,
            PgError::BadUrl { .. } | PgError::Failed { .. } => exit::FAILURE,
        }
    }
}

impl From<PgError> for SearchError {
    fn from(e: PgError) -> SearchError {
        SearchError::with_code(e.to_string(), e.exit_code())
    }
}

/// What a client error means for the user. The server's message when it
/// sent one (the client's own `Display` says only "db error"), else the
/// chain of causes.
pub(crate) fn classify(at: &str, e: &tokio_postgres::Error) -> PgError {
    let at = at.to_string();
    if let Some(db) = e.as_db_error() {
        let detail = db.message().to_string();
        let code = db.code();
        return if *code == SqlState::QUERY_CANCELED {
            PgError::Timeout { at }
        } else if [
            SqlState::INVALID_PASSWORD,
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            SqlState::INVALID_CATALOG_NAME,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code)
        {
            PgError::Refused { at, detail }
        } else if [SqlState::CANNOT_CONNECT_NOW, SqlState::ADMIN_SHUTDOWN].contains(code) {
            PgError::Unreachable { at, detail }
        } else {
            PgError::Failed { at, detail }
        };
    }
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    let lost = [
        "connecting",
        "communicating",
        "connection closed",
        "timeout",
    ];
    if lost.iter().any(|w| detail.contains(w)) {
        PgError::Unreachable { at, detail }
    } else {
        PgError::Failed { at, detail }
    }
}

/// `url` without its password (in the user part or a `password=` parameter),
/// for messages and `ragmap status`.
pub fn redact(url: &str) -> String {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a URL that is not postgres://)".into();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, hosts)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{user}@{hosts}")
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.to_ascii_lowercase().starts_with("password="))
                .collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Whether `url` names a PostgreSQL database (the only kind `[index] url` takes).
pub fn is_postgres_url(url: &str) -> bool {
    let url = url.trim().to_ascii_lowercase();
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The client configuration for `url`: its own settings, plus ragmap's
/// where it names none (application name, timeouts, keepalives), the
/// password from `PGPASSWORD` when the URL has none, and the session
/// settings searches need.
fn session_config(
    url: &str,
    settings: &IndexSettings,
    application: &str,
    statement_timeout: Option<Duration>,
) -> Result<tokio_postgres::Config, PgError> {
    if !is_postgres_url(url) {
        return Err(PgError::BadUrl {
            detail: format!("it starts {:?}", url.split("://").next().unwrap_or(url)),
        });
    }
    let mut config: tokio_postgres::Config =
        url.parse()
            .map_err(|e: tokio_postgres::Error| PgError::BadUrl {
                detail: e.to_string(),
            })?;
    if config.get_password().is_none() {
        if let Some(password) = std::env::var_os("PGPASSWORD").filter(|p| !p.is_empty()) {
            config.password(password.to_string_lossy().as_bytes());
        }
    }
    if config.get_application_name().is_none() {
        config.application_name(application);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(database::seconds(settings.connect_timeout_secs, 5.0));
    }
    // A peer that vanishes without closing is noticed within about a minute.
    config
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(3);
    let timeout_ms = statement_timeout.map_or(0, |t| t.as_millis().max(1));
    let ef_search = settings.ef_search.clamp(1, 1000);
    let ours = format!(
        "-c statement_timeout={timeout_ms} -c jit=off -c hnsw.ef_search={ef_search} -c hnsw.iterative_scan=relaxed_order"
    );
    let options = match config.get_options() {
        Some(theirs) => format!("{theirs} {ours}"),
        None => ours,
    };
    config.options(options);
    Ok(config)
}

/// An index in PostgreSQL, opened for searching.
pub struct Postgres {
    db: Arc<Database>,
    /// The generation this handle serves (see [`Index::generation`]).
    current: AtomicI64,
}

impl Postgres {
    /// Opens the index `config`'s `[index] url` names (searches on
    /// `read_url` when set): checks that the index is there and readable.
    pub fn open(config: &Config) -> Result<Postgres, IndexError> {
        let db = Database::shared(&config.index)?;
        let (pool, at) = (db.read_pool(), db.read_at.clone());
        let found = db.read(async move { database::version_and_generation(&pool, &at).await })?;
        let Some((version, generation)) = found else {
            return Err(IndexError::Missing(db.at.clone().into()));
        };
        schema::check_readable(version, &db.read_at)?;
        db.generations.saw(generation);
        Ok(Postgres {
            db,
            current: AtomicI64::new(generation),
        })
    }

    fn saw(&self, generation: i64) {
        self.current.store(generation, Ordering::Release);
        self.db.generations.saw(generation);
    }
}

impl Index for Postgres {
    fn generation(&self) -> String {
        self.current.load(Ordering::Acquire).to_string()
    }

    fn refresh(&mut self) -> bool {
        let latest = self.db.latest_generation();
        let moved = latest > self.current.load(Ordering::Acquire);
        if moved {
            self.current.store(latest, Ordering::Release);
        }
        moved
    }

    fn snapshot(&self) -> Result<Option<Box<dyn Snapshot + '_>>, IndexError> {
        Ok(Some(Box::new(read::Reading::begin(self)?)))
    }

    fn counts(&self) -> Result<Counts, IndexError> {
        let (pool, at) = (self.db.read_pool(), self.db.read_at.clone());
        Ok(self
            .db
            .read(async move { read::counts(&pool, &at).await })?)
    }

    fn describe(&self) -> Result<Description, IndexError> {
        let (pool, at) = (self.db.read_pool(), self.db.read_at.clone());
        let (meta, bytes) = self
            .db
            .read(async move { read::describe(&pool, &at).await })?;
        let location = match self.db.reads_replica() {
            true => format!("{} (searches read {})", self.db.at, self.db.read_at),
            false => self.db.at.clone(),
        };
        Ok(Description {
            location,
            bytes_on_disk: bytes,
            model: meta.get("model").cloned(),
            dimensions: meta.get("dimensions").and_then(|d| d.parse().ok()),
            settings: meta.get("settings").cloned(),
            built_at: meta.get("built_at").cloned(),
        })
    }

    fn documents(&self) -> Result<HashMap<String, DocRow>, IndexError> {
        let (pool, at) = (self.db.read_pool(), self.db.read_at.clone());
        Ok(self
            .db
            .read(async move { read::documents(&pool, &at).await })?)
    }

    fn backend(&self) -> BackendStatus {
        let replica_lag_seconds = self.db.reads_replica().then(|| {
            let (pool, at) = (self.db.read_pool(), self.db.read_at.clone());
            self.db
                .read(async move { read::replica_lag(&pool, &at).await })
                .ok()
        });
        BackendStatus {
            name: "postgres",
            replica_lag_seconds: replica_lag_seconds.flatten(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        for (url, shown) in [
            (
                "postgres://ragmap:s3cret@127.0.0.1:5433/ragmap",
                "postgres://ragmap@127.0.0.1:5433/ragmap",
            ),
            (
                "postgresql://u:p%40ss@h1:5432,h2:5433/db?sslmode=disable&password=x",
                "postgresql://u@h1:5432,h2:5433/db?sslmode=disable",
            ),
            ("postgres://h/db?password=x", "postgres://h/db"),
            ("postgres://user@h", "postgres://user@h"),
        ] {
            assert_eq!(redact(url), shown);
            assert!(!redact(url).contains("s3cret"));
        }
    }

    #[test]
    fn only_postgres_urls_are_taken() {
        let settings = IndexSettings::default();
        assert!(session_config("mysql://h/db", &settings, "ragmap", None).is_err());
        let config = session_config(
            "postgres://u:pw@127.0.0.1:5433/db?application_name=mine",
            &settings,
            "ragmap",
            Some(Duration::from_secs(2)),
        )
        .unwrap();
        assert_eq!(config.get_application_name(), Some("mine"));
        assert!(config
            .get_options()
            .unwrap()
            .contains("statement_timeout=2000"));
        assert_eq!(config.get_password(), Some(&b"pw"[..]));
    }
}
