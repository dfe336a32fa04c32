//! An index run: one transaction on a connection of its own, which holds
//! the database's index lock from the run's start (a second `ragmap index`
//! waits for it) to its end, so that what the run compared the corpus
//! against is still what it changes. Killed anywhere, the transaction rolls
//! back and searches keep reading the previous generation.
//!
//! An incremental run deletes and inserts rows in place. A full build (the
//! first, `--rebuild`, a new model or chunker, a copy) loads a new schema
//! beside the live one, adds its keys and HNSW graph after the rows are in,
//! and swaps it in just before COMMIT: searches wait only for the swap.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::database::{Database, CHANNEL};
use super::read::{FIELD_SPAN, MAX_OFFSET};
use super::schema::{self, INDEX_LOCK, LIVE, NEXT};
use super::{classify, tokens, PgError};
use crate::config::Config;
use crate::index::build::{Changes, Identity, Target};
use crate::index::terms::{index_text, url_words};
use crate::index::{DocRow, IndexError, NewChunk, NewDocument};

/// Chunks written per COPY round (their postings are built in memory first).
const BATCH_CHUNKS: usize = 1000;

/// What the live index's state row says about ids and generations.
#[derive(Clone, Copy)]
struct Stored {
    generation: i64,
    dimensions: usize,
    next_document_id: i64,
    next_chunk_id: i64,
}

struct Writer {
    db: Arc<Database>,
    client: Arc<Client>,
    rebuild: bool,
    meta: HashMap<String, String>,
    stored: Option<Stored>,
    migrated: Option<String>,
}

/// The index `config` names for one run to write (`rebuild`: from nothing):
/// the lock taken (waiting for another run), pgvector checked, the schema
/// migrated, what the index holds read.
pub(crate) fn target(config: &Config, rebuild: bool) -> Result<Box<dyn Target>, IndexError> {
    let db = Database::shared(&config.index)?;
    let client = db.connect_direct()?;
    let (c, at) = (client.clone(), db.at.clone());
    let (meta, stored, migrated) = db.run(async move {
        lock(&c, &at).await?;
        schema::ensure_vector(&c, &at).await?;
        let migrated = schema::migrate(&c, &at).await?;
        let (meta, stored) = read_stored(&c, &at).await?;
        Ok((meta, stored, migrated))
    })?;
    Ok(Box::new(Writer {
        db,
        client,
        rebuild,
        meta,
        stored,
        migrated,
    }))
}

/// Takes the index lock for this connection's life; says so while waiting.
async fn lock(client: &Client, at: &str) -> Result<(), PgError> {
    let failed = |e: tokio_postgres::Error| classify(at, &e);
    let free: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&INDEX_LOCK])
        .await
        .map_err(failed)?
        .get(0);
    if !free {
        eprintln!("waiting for another `ragmap index` writing to {at} to finish");
        client
            .execute("SELECT pg_advisory_lock($1)", &[&INDEX_LOCK])
            .await
            .map_err(failed)?;
    }
    Ok(())
}

async fn read_stored(
    client: &Client,
    at: &str,
) -> Result<(HashMap<String, String>, Option<Stored>), PgError> {
    if schema::stored_version(client, at).await?.is_none() {
        return Ok((HashMap::new(), None));
    }
    let failed = |e: tokio_postgres::Error| classify(at, &e);
    let meta = client
        .query(&format!("SELECT key, value FROM {LIVE}.meta"), &[])
        .await
        .map_err(failed)?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let row = client
        .query_one(
            &format!(
                "SELECT generation, dimensions, next_document_id, next_chunk_id FROM {LIVE}.state"
            ),
            &[],
        )
        .await
        .map_err(failed)?;
    let stored = Stored {
        generation: row.get(0),
        dimensions: row.get::<_, i32>(1) as usize,
        next_document_id: row.get(2),
        next_chunk_id: row.get(3),
    };
    Ok((meta, Some(stored)))
}

impl Target for Writer {
    fn meta(&self, key: &str) -> Result<Option<String>, IndexError> {
        Ok(self.meta.get(key).cloned())
    }

    fn documents(&self) -> Result<HashMap<String, DocRow>, IndexError> {
        if self.stored.is_none() {
            return Ok(HashMap::new());
        }
        let (client, at) = (self.client.clone(), self.db.at.clone());
        let rows = self.db.run(async move {
            let sql = format!("{} {LIVE}.documents", super::read::DOCUMENT_ROWS);
            client.query(&sql, &[]).await.map_err(|e| classify(&at, &e))
        })?;
        Ok(super::read::document_rows(rows))
    }

    fn is_whole(&self) -> bool {
        self.stored.is_some()
    }

    fn migrated(&self) -> Option<String> {
        self.migrated.clone()
    }

    fn commit(&mut self, changes: &Changes) -> Result<(), IndexError> {
        let full = changes.full_rebuild
            || self
                .stored
                .is_none_or(|s| s.dimensions != changes.identity.dimensions);
        let outcome = match full {
            true => self.load_full(changes),
            false => self.update(changes),
        };
        if outcome.is_err() {
            let client = self.client.clone();
            let _ = self.db.run(async move {
                let _ = client.batch_execute("ROLLBACK").await;
                Ok(())
            });
        }
        outcome
    }
}

impl Writer {
    fn at(&self) -> String {
        self.db.at.clone()
    }

    /// Runs `sql` (several statements) on the run's connection.
    fn execute(&self, sql: String) -> Result<(), PgError> {
        let (client, at) = (self.client.clone(), self.at());
        self.db.run(async move {
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| classify(&at, &e))
        })
    }

    /// An incremental run: the stale documents out, the pending ones in,
    /// statistics and generation updated, all in one transaction.
    fn update(&mut self, changes: &Changes) -> Result<(), IndexError> {
        let stored = self.stored.expect("an incremental run has a live index");
        self.execute("BEGIN".into())?;
        self.forget(changes.stale)?;
        let mut ids = Ids {
            document: stored.next_document_id,
            chunk: stored.next_chunk_id,
        };
        let first = ids;
        self.insert_all(changes, LIVE, &mut ids)?;
        let (client, at) = (self.client.clone(), self.at());
        let generation = self.db.run(async move {
            let failed = |e: tokio_postgres::Error| classify(&at, &e);
            count_terms(&client, first).await.map_err(failed)?;
            let row = client
                .query_one(&state_update(), &[&ids.document, &ids.chunk])
                .await
                .map_err(failed)?;
            Ok(row.get::<_, i64>(0))
        })?;
        self.finish(changes.identity, &changes.now, generation, LIVE, None)
    }

    /// Takes the stale documents' postings, document frequencies, rows,
    /// chunks and vectors out.
    fn forget(&self, stale: &[i64]) -> Result<(), PgError> {
        if stale.is_empty() {
            return Ok(());
        }
        let (client, at, stale) = (self.client.clone(), self.at(), stale.to_vec());
        self.db.run(async move {
            let failed = |e: tokio_postgres::Error| classify(&at, &e);
            for sql in forget_postings() {
                client.execute(&sql, &[&stale]).await.map_err(failed)?;
            }
            client
                .execute(DELETE_DOCUMENTS, &[&stale])
                .await
                .map_err(failed)?;
            Ok(())
        })
    }

    /// A full build into a new schema, swapped in at the end.
    fn load_full(&mut self, changes: &Changes) -> Result<(), IndexError> {
        let dimensions = changes.identity.dimensions;
        let continued = self.stored.filter(|_| !self.rebuild);
        let mut ids = Ids {
            document: continued.map_or(1, |s| s.next_document_id),
            chunk: continued.map_or(1, |s| s.next_chunk_id),
        };
        self.execute(format!(
            "BEGIN; DROP SCHEMA IF EXISTS {NEXT} CASCADE; {}",
            schema::tables(NEXT, dimensions)
        ))?;
        self.insert_all(changes, NEXT, &mut ids)?;
        let generation = self.stored.map_or(0, |s| s.generation) + 1;
        let chunks = changes.vectors.len();
        self.execute(format!(
            "INSERT INTO {NEXT}.terms SELECT term, count(*) FROM {NEXT}.postings GROUP BY term; \
             INSERT INTO {NEXT}.doc_terms SELECT term, count(*) FROM {NEXT}.doc_postings GROUP BY term; \
             SET LOCAL maintenance_work_mem = '{}MB'; {}",
            graph_memory_mib(chunks, dimensions),
            schema::keys(NEXT, dimensions)
        ))?;
        let (client, at) = (self.client.clone(), self.at());
        let new_state = new_state(generation, dimensions, ids);
        self.db.run(async move {
            client
                .batch_execute(&new_state)
                .await
                .map_err(|e| classify(&at, &e))
        })?;
        let swap = self.stored.is_some().then(|| {
            format!(
                "ANALYZE {NEXT}.documents, {NEXT}.chunks, {NEXT}.embeddings, {NEXT}.postings, {NEXT}.terms, {NEXT}.doc_postings, {NEXT}.doc_terms; \
                 LOCK TABLE {LIVE}.state IN ACCESS EXCLUSIVE MODE; DROP SCHEMA {LIVE} CASCADE;"
            )
        });
        let swap = format!(
            "{} ALTER SCHEMA {NEXT} RENAME TO {LIVE};",
            swap.unwrap_or_else(|| format!(
                "ANALYZE {NEXT}.postings, {NEXT}.chunks, {NEXT}.embeddings;"
            ))
        );
        self.finish(changes.identity, &changes.now, generation, NEXT, Some(swap))
    }

    /// Records the identity, runs `swap` (a full build's), notifies the
    /// listening servers and commits.
    fn finish(
        &mut self,
        identity: &Identity,
        now: &str,
        generation: i64,
        schema: &str,
        swap: Option<String>,
    ) -> Result<(), IndexError> {
        let entries = [
            ("identity", identity.full()),
            ("model", identity.model.clone()),
            ("dimensions", identity.dimensions.to_string()),
            ("model_files", identity.model_files.clone()),
            ("model_stamp", identity.model_stamp.clone()),
            ("settings", identity.settings.clone()),
            ("built_at", now.to_string()),
        ];
        let (keys, values): (Vec<String>, Vec<String>) = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .unzip();
        let (client, at, schema) = (self.client.clone(), self.at(), schema.to_string());
        self.db.run(async move {
            let failed = |e: tokio_postgres::Error| classify(&at, &e);
            let upsert = format!(
                "INSERT INTO {schema}.meta (key, value) SELECT * FROM unnest($1::text[], $2::text[]) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            );
            client.execute(&upsert, &[&keys, &values]).await.map_err(failed)?;
            if let Some(swap) = swap {
                client.batch_execute(&swap).await.map_err(failed)?;
            }
            client
                .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &generation.to_string()])
                .await
                .map_err(failed)?;
            client.batch_execute("COMMIT").await.map_err(failed)
        })?;
        self.db.generations.saw(generation);
        Ok(())
    }

    /// Every pending document, its chunks, vectors and postings, COPYed
    /// into `schema` in rounds of [`BATCH_CHUNKS`] chunks.
    fn insert_all(&self, changes: &Changes, schema: &str, ids: &mut Ids) -> Result<(), IndexError> {
        let vector = self.db.vector_type(&self.db.primary_pool(), &self.db.at)?;
        let mut batch = Batch::default();
        changes.for_each_document(
            |doc, chunks| {
                batch.add(doc, chunks, ids);
                if batch.chunks.len() >= BATCH_CHUNKS {
                    self.copy(std::mem::take(&mut batch), schema, &vector)?;
                }
                Ok::<_, IndexError>(())
            },
            || PgError::failed(&self.db.at, "fewer vectors than chunks").into(),
        )?;
        if !batch.docs.is_empty() {
            self.copy(batch, schema, &vector)?;
        }
        Ok(())
    }

    fn copy(&self, batch: Batch, schema: &str, vector: &Type) -> Result<(), IndexError> {
        let rows = batch.into_rows()?;
        let (client, at, schema, vector) = (
            self.client.clone(),
            self.at(),
            schema.to_string(),
            vector.clone(),
        );
        Ok(self.db.run(async move {
            rows.copy(&client, &schema, vector)
                .await
                .map_err(|e| classify(&at, &e))
        })?)
    }
}

/// The next ids to give out (never reused, as SQLite's AUTOINCREMENT).
#[derive(Clone, Copy)]
struct Ids {
    document: i64,
    chunk: i64,
}

/// `maintenance_work_mem` for building the HNSW graph of `chunks` half
/// vectors in memory (pgvector's rule: about 1.3 × the elements' size).
fn graph_memory_mib(chunks: usize, dimensions: usize) -> usize {
    let element = 2 * dimensions + 8 + 2 * 32 * 8;
    (64 + chunks * element * 13 / 10 / (1 << 20)).min(2048)
}

/// The postings of the chunks and the documents of the documents `$1`
/// deleted, and their terms' frequencies lowered by as many.
fn forget_postings() -> [String; 2] {
    // (rows, their column naming the document, postings, the postings' row
    // column, frequency table)
    [
        ("chunks", "doc_id", "postings", "chunk_id", "terms"),
        ("documents", "id", "doc_postings", "doc_id", "doc_terms"),
    ]
    .map(|(rows, document, postings, row, terms)| {
        format!(
            "WITH gone AS ( \
                 SELECT r.id, t.term FROM ragmap.{rows} r CROSS JOIN LATERAL unnest(r.terms) AS t(term) \
                 WHERE r.{document} = ANY($1)), \
             del AS (DELETE FROM ragmap.{postings} p USING gone WHERE p.term = gone.term AND p.{row} = gone.id) \
             UPDATE ragmap.{terms} t SET df = t.df - g.n \
             FROM (SELECT term, count(*) AS n FROM gone GROUP BY term) g WHERE t.term = g.term"
        )
    })
}

/// Chunks and vectors go with their documents (ON DELETE CASCADE).
const DELETE_DOCUMENTS: &str = "DELETE FROM ragmap.documents WHERE id = ANY($1)";

/// The new rows' tokens counted into the document frequencies, and the
/// tokens no row holds any more dropped.
async fn count_terms(client: &Client, first: Ids) -> Result<(), tokio_postgres::Error> {
    // (frequency table, rows whose `terms` it counts, the first new row)
    let tables = [
        ("terms", "chunks", first.chunk),
        ("doc_terms", "documents", first.document),
    ];
    for (table, rows, first) in tables {
        let sql = format!(
            "INSERT INTO ragmap.{table} (term, df) \
             SELECT t.term, count(*) FROM ragmap.{rows} r CROSS JOIN LATERAL unnest(r.terms) AS t(term) \
             WHERE r.id >= $1 GROUP BY t.term \
             ON CONFLICT (term) DO UPDATE SET df = ragmap.{table}.df + excluded.df"
        );
        client.execute(&sql, &[&first]).await?;
    }
    client
        .batch_execute(
            "DELETE FROM ragmap.terms WHERE df <= 0; DELETE FROM ragmap.doc_terms WHERE df <= 0",
        )
        .await
}

/// The live state row recomputed from the rows, the generation bumped.
fn state_update() -> String {
    format!(
        "UPDATE {LIVE}.state SET generation = generation + 1, committed_at = now(), {counts}, \
         next_document_id = $1, next_chunk_id = $2 RETURNING generation",
        counts = state_counts(LIVE)
    )
}

fn state_counts(schema: &str) -> String {
    format!(
        "documents = (SELECT count(*) FROM {schema}.documents), \
         document_tokens = (SELECT coalesce(sum(dl), 0) FROM {schema}.documents), \
         chunks = (SELECT count(*) FROM {schema}.chunks), \
         chunk_tokens = (SELECT coalesce(sum(dl), 0) FROM {schema}.chunks), \
         tokens = (SELECT coalesce(sum(tokens), 0) FROM {schema}.chunks)"
    )
}

/// The state row of a full build's new schema.
fn new_state(generation: i64, dimensions: usize, ids: Ids) -> String {
    format!(
        "INSERT INTO {NEXT}.state (schema_version, generation, dimensions, documents, document_tokens, \
             chunks, chunk_tokens, tokens, next_document_id, next_chunk_id) \
         VALUES ({version}, {generation}, {dimensions}, 0, 0, 0, 0, 0, {doc}, {chunk}); \
         UPDATE {NEXT}.state SET {counts}",
        version = schema::VERSION,
        doc = ids.document,
        chunk = ids.chunk,
        counts = state_counts(NEXT)
    )
}

/// Pending documents and chunks of one COPY round.
#[derive(Default)]
struct Batch {
    docs: Vec<DocRecord>,
    chunks: Vec<ChunkRecord>,
}

struct DocRecord {
    id: i64,
    path: String,
    hash: String,
    title: String,
    source: String,
    sections: Vec<String>,
    modified: Option<i64>,
    indexed_at: String,
    /// Title and URL index text.
    fields: [String; 2],
}

struct ChunkRecord {
    id: i64,
    doc_id: i64,
    ordinal: i32,
    start: i64,
    end: i64,
    heading: String,
    text: String,
    tokens: i32,
    /// Title, URL, heading and body index text.
    fields: [String; 4],
    vector: Vec<f32>,
}

impl Batch {
    fn add(&mut self, doc: &NewDocument, chunks: &[NewChunk], ids: &mut Ids) {
        let doc_id = ids.document;
        ids.document += 1;
        self.docs.push(DocRecord {
            id: doc_id,
            path: doc.path.to_string(),
            hash: doc.hash.to_string(),
            title: doc.title.to_string(),
            source: doc.source.to_string(),
            sections: doc.sections.to_vec(),
            modified: doc.modified,
            indexed_at: doc.indexed_at.to_string(),
            fields: [index_text(doc.title), index_text(&url_words(doc.source))],
        });
        for c in chunks {
            let t = c.terms;
            self.chunks.push(ChunkRecord {
                id: ids.chunk,
                doc_id,
                ordinal: c.ordinal as i32,
                start: c.start as i64,
                end: c.end as i64,
                heading: c.heading.to_string(),
                text: c.text.to_string(),
                tokens: c.tokens as i32,
                fields: [
                    t.title.clone(),
                    t.url.clone(),
                    t.heading.clone(),
                    t.body.clone(),
                ],
                vector: c.vector.to_vec(),
            });
            ids.chunk += 1;
        }
    }

    /// The rows of every table, each text split into FTS5's tokens.
    fn into_rows(self) -> Result<Rows, IndexError> {
        let texts: Vec<&str> = self
            .docs
            .iter()
            .flat_map(|d| d.fields.iter())
            .chain(self.chunks.iter().flat_map(|c| c.fields.iter()))
            .map(String::as_str)
            .collect();
        let mut split = tokens::tokenize(&texts)
            .map_err(|e| PgError::failed("the tokenizer", e))?
            .into_iter();
        let mut rows = Rows::default();
        for d in self.docs {
            let fields: Vec<Vec<String>> = split.by_ref().take(2).collect();
            let (dl, terms) = rows.doc_postings(d.id, &fields);
            rows.docs.push((d, dl, terms));
        }
        for c in self.chunks {
            let fields: Vec<Vec<String>> = split.by_ref().take(4).collect();
            let (dl, terms) = rows.postings(c.id, &fields);
            rows.chunks.push((c, dl, terms));
        }
        Ok(rows)
    }
}

/// One posting: a token's count in each field of a row, and its positions.
struct Posting {
    term: String,
    id: i64,
    dl: i32,
    tf: [i16; 4],
    pos: Vec<i16>,
}

#[derive(Default)]
struct Rows {
    docs: Vec<(DocRecord, i32, Vec<String>)>,
    chunks: Vec<(ChunkRecord, i32, Vec<String>)>,
    postings: Vec<Posting>,
    doc_postings: Vec<Posting>,
}

/// The postings of one row's fields, its length in tokens and its
/// distinct tokens.
fn postings_of(id: i64, fields: &[Vec<String>]) -> (i32, Vec<String>, Vec<Posting>) {
    let mut by_term: BTreeMap<&str, ([i16; 4], Vec<i16>)> = BTreeMap::new();
    for (f, tokens) in fields.iter().enumerate() {
        for (offset, token) in tokens.iter().enumerate() {
            let entry = by_term.entry(token).or_default();
            entry.0[f] = entry.0[f].saturating_add(1);
            if offset < MAX_OFFSET {
                entry.1.push((f as i32 * FIELD_SPAN + offset as i32) as i16);
            }
        }
    }
    let dl = fields.iter().map(Vec::len).sum::<usize>() as i32;
    let terms = by_term.keys().map(|t| t.to_string()).collect();
    let postings = by_term
        .into_iter()
        .map(|(term, (tf, pos))| Posting {
            term: term.to_string(),
            id,
            dl,
            tf,
            pos,
        })
        .collect();
    (dl, terms, postings)
}

impl Rows {
    fn postings(&mut self, id: i64, fields: &[Vec<String>]) -> (i32, Vec<String>) {
        let (dl, terms, postings) = postings_of(id, fields);
        self.postings.extend(postings);
        (dl, terms)
    }

    fn doc_postings(&mut self, id: i64, fields: &[Vec<String>]) -> (i32, Vec<String>) {
        let (dl, terms, postings) = postings_of(id, fields);
        self.doc_postings.extend(postings);
        (dl, terms)
    }

    /// Writes every table's rows with binary COPY.
    async fn copy(
        self,
        client: &Client,
        schema: &str,
        vector: Type,
    ) -> Result<(), tokio_postgres::Error> {
        self.copy_rows(client, schema).await?;
        let vectors: Vec<(i64, pgvector::Vector)> = self
            .chunks
            .iter()
            .map(|(c, _, _)| (c.id, pgvector::Vector::from(c.vector.clone())))
            .collect();
        let rows = vectors
            .iter()
            .map(|(id, v)| -> Vec<&(dyn ToSql + Sync)> { vec![id, v] });
        let sql =
            format!("COPY {schema}.embeddings (chunk_id, embedding) FROM STDIN (FORMAT binary)");
        copy_in(client, &sql, &[Type::INT8, vector], rows).await?;
        self.copy_postings(client, schema).await
    }

    async fn copy_rows(&self, client: &Client, schema: &str) -> Result<(), tokio_postgres::Error> {
        use Type as T;
        let docs = self
            .docs
            .iter()
            .map(|(d, dl, terms)| -> Vec<&(dyn ToSql + Sync)> {
                vec![
                    &d.id,
                    &d.path,
                    &d.hash,
                    &d.title,
                    &d.source,
                    &d.sections,
                    &d.modified,
                    &d.indexed_at,
                    dl,
                    terms,
                ]
            });
        let sql = format!(
            "COPY {schema}.documents (id, path, hash, title, source, sections, modified, indexed_at, dl, terms) \
             FROM STDIN (FORMAT binary)"
        );
        let types = [
            T::INT8,
            T::TEXT,
            T::TEXT,
            T::TEXT,
            T::TEXT,
            T::TEXT_ARRAY,
            T::INT8,
            T::TEXT,
            T::INT4,
            T::TEXT_ARRAY,
        ];
        copy_in(client, &sql, &types, docs).await?;
        let chunks = self
            .chunks
            .iter()
            .map(|(c, dl, terms)| -> Vec<&(dyn ToSql + Sync)> {
                vec![
                    &c.id, &c.doc_id, &c.ordinal, &c.start, &c.end, &c.heading, &c.text, &c.tokens,
                    dl, terms,
                ]
            });
        let sql = format!(
            "COPY {schema}.chunks (id, doc_id, ordinal, start_byte, end_byte, heading, text, tokens, dl, terms) \
             FROM STDIN (FORMAT binary)"
        );
        let types = [
            T::INT8,
            T::INT8,
            T::INT4,
            T::INT8,
            T::INT8,
            T::TEXT,
            T::TEXT,
            T::INT4,
            T::INT4,
            T::TEXT_ARRAY,
        ];
        copy_in(client, &sql, &types, chunks).await
    }

    async fn copy_postings(
        &self,
        client: &Client,
        schema: &str,
    ) -> Result<(), tokio_postgres::Error> {
        use Type as T;
        let rows = self.postings.iter().map(|p| -> Vec<&(dyn ToSql + Sync)> {
            vec![
                &p.term, &p.id, &p.dl, &p.tf[0], &p.tf[1], &p.tf[2], &p.tf[3], &p.pos,
            ]
        });
        let sql = format!(
            "COPY {schema}.postings (term, chunk_id, dl, tf_title, tf_url, tf_heading, tf_body, pos) \
             FROM STDIN (FORMAT binary)"
        );
        let types = [
            T::TEXT,
            T::INT8,
            T::INT4,
            T::INT2,
            T::INT2,
            T::INT2,
            T::INT2,
            T::INT2_ARRAY,
        ];
        copy_in(client, &sql, &types, rows).await?;
        let rows = self
            .doc_postings
            .iter()
            .map(|p| -> Vec<&(dyn ToSql + Sync)> {
                vec![&p.term, &p.id, &p.dl, &p.tf[0], &p.tf[1], &p.pos]
            });
        let sql = format!(
            "COPY {schema}.doc_postings (term, doc_id, dl, tf_title, tf_url, pos) FROM STDIN (FORMAT binary)"
        );
        let types = [T::TEXT, T::INT8, T::INT4, T::INT2, T::INT2, T::INT2_ARRAY];
        copy_in(client, &sql, &types, rows).await
    }
}

async fn copy_in<'a>(
    client: &Client,
    sql: &str,
    types: &[Type],
    rows: impl Iterator<Item = Vec<&'a (dyn ToSql + Sync)>>,
) -> Result<(), tokio_postgres::Error> {
    let sink = client.copy_in(sql).await?;
    let writer = BinaryCopyInWriter::new(sink, types);
    futures_util::pin_mut!(writer);
    for row in rows {
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    Ok(())
}
