//! The index catalogue in SQLite: documents, chunks (with their vectors, so the
//! HNSW graph can always be rebuilt without re-embedding), the BM25 full-text
//! table, and the identity of the settings the index was built with.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::terms::{FieldTerms, FieldWeights};
use super::{ChunkRow, DocRow, NewChunk, NewDocument, Pruning, TermCounts};

pub const DB_FILE: &str = "catalog.sqlite";

/// 2: the full-text table has one column per field (title, url, heading,
/// body) instead of one for everything. A version-1 catalogue is migrated by
/// [`Store::open_rw`] (the full-text rows are derived again from the chunks;
/// nothing is re-embedded).
const SCHEMA_VERSION: &str = "2";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    title TEXT NOT NULL,
    source TEXT NOT NULL,
    sections TEXT NOT NULL,
    modified INTEGER,
    indexed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    heading TEXT NOT NULL,
    text TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id, ordinal);
";

const INSERT_TERMS: &str =
    "INSERT INTO chunk_terms(rowid, title, url, heading, body) VALUES (?1, ?2, ?3, ?4, ?5)";

/// The full-text tables: per chunk, the fields of [`FieldTerms`] in the
/// order `bm25()` takes their weights; per document (rowid = document id),
/// its title and URL words alone, for matching the names a question uses.
const FTS_SCHEMA: &str = "
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_terms USING fts5(title, url, heading, body, tokenize = 'unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE IF NOT EXISTS doc_terms USING fts5(title, url, tokenize = 'unicode61 remove_diacritics 2');
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("index schema version {found} is not {SCHEMA_VERSION}")]
    Schema { found: String },
    /// A catalogue an older ragmap wrote, which [`Store::open_rw`] migrates.
    #[error("index schema version {found} is older than {SCHEMA_VERSION}")]
    Outdated { found: String },
}

pub struct Store {
    conn: Connection,
    /// Set by [`Store::open_rw`] when it migrated an older catalogue.
    migrated: Option<String>,
}

/// An open read transaction of a [`Store`]; ends when dropped.
pub struct Snapshot<'s> {
    store: &'s Store,
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        let _ = self.store.conn.execute_batch("COMMIT");
    }
}

impl Store {
    /// Opens or creates the catalogue for writing.
    pub fn open_rw(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        let mut store = Store {
            conn,
            migrated: None,
        };
        match store.meta("schema_version")? {
            None => {
                store.conn.execute_batch(FTS_SCHEMA)?;
                store.set_meta(&[("schema_version", SCHEMA_VERSION)])?;
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(v) if v == "1" => {
                store.migrate_from_1()?;
                store.migrated = Some(format!(
                    "index schema 1 → {SCHEMA_VERSION}: full-text rows rebuilt with title, URL and heading fields (nothing re-embedded)"
                ));
            }
            Some(found) => return Err(StoreError::Schema { found }),
        }
        Ok(store)
    }

    /// What [`Store::open_rw`] migrated, if anything.
    pub fn migrated(&self) -> Option<&str> {
        self.migrated.as_deref()
    }

    /// Schema 1 → 2 in one transaction: the one-column full-text table is
    /// replaced by the per-field one, its rows derived again from each
    /// chunk's text, heading path and document. A crash leaves version 1.
    fn migrate_from_1(&self) -> Result<(), StoreError> {
        self.begin()?;
        let result = (|| {
            self.conn.execute_batch(
                "DROP TABLE IF EXISTS chunk_terms; DROP TABLE IF EXISTS doc_terms;",
            )?;
            self.conn.execute_batch(FTS_SCHEMA)?;
            self.refill_terms()?;
            self.set_meta(&[("schema_version", SCHEMA_VERSION)])
        })();
        match result {
            Ok(()) => self.commit(),
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    /// Derives every document's and chunk's full-text row from the catalogue.
    fn refill_terms(&self) -> Result<(), StoreError> {
        let mut docs = self
            .conn
            .prepare("SELECT id, title, source FROM documents")?;
        let mut cursor = docs.query([])?;
        while let Some(r) = cursor.next()? {
            let (id, title, source): (i64, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            self.insert_doc_terms(id, &title, &source)?;
        }
        let mut rows = self.conn.prepare(
            "SELECT c.id, d.title, d.source, c.heading, c.text FROM chunks c JOIN documents d ON d.id = c.doc_id",
        )?;
        let mut insert = self.conn.prepare_cached(INSERT_TERMS)?;
        let mut cursor = rows.query([])?;
        while let Some(r) = cursor.next()? {
            let (id, title, source, heading, text): (i64, String, String, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
            let t = FieldTerms::of(&title, &source, &heading, &text);
            insert.execute(params![id, t.title, t.url, t.heading, t.body])?;
        }
        Ok(())
    }

    /// Opens an existing catalogue for reading only.
    pub fn open_ro(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let store = Store {
            conn,
            migrated: None,
        };
        match store.meta("schema_version")? {
            Some(v) if v == SCHEMA_VERSION => Ok(store),
            Some(v) if v == "1" => Err(StoreError::Outdated { found: v }),
            found => Err(StoreError::Schema {
                found: found.unwrap_or_else(|| "missing".into()),
            }),
        }
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets each `(key, value)` of `entries`.
    pub fn set_meta(&self, entries: &[(&str, &str)]) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )?;
        for (key, value) in entries {
            stmt.execute(params![key, value])?;
        }
        Ok(())
    }

    /// A read transaction: reads see one committed state until it is dropped.
    pub fn snapshot(&self) -> Result<Snapshot<'_>, StoreError> {
        self.conn.execute_batch("BEGIN DEFERRED")?;
        Ok(Snapshot { store: self })
    }

    pub fn begin(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    pub fn commit(&self) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    pub fn rollback(&self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }

    pub fn documents(&self) -> Result<HashMap<String, DocRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, path, hash, title, source, sections FROM documents")?;
        let rows = stmt.query_map([], |r| {
            Ok(DocRow {
                id: r.get(0)?,
                path: r.get(1)?,
                hash: r.get(2)?,
                title: r.get(3)?,
                source: r.get(4)?,
                sections: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
            })
        })?;
        let mut out = HashMap::new();
        for row in rows {
            let row = row?;
            out.insert(row.path.clone(), row);
        }
        Ok(out)
    }

    /// Chunk ids of a document, for removing its vectors.
    pub fn chunk_ids_of(&self, doc_id: i64) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM chunks WHERE doc_id = ?1")?;
        let ids = stmt
            .query_map([doc_id], |r| r.get(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(ids)
    }

    /// Removes a document with its chunks and their full-text rows.
    pub fn delete_document(&self, doc_id: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM chunk_terms WHERE rowid IN (SELECT id FROM chunks WHERE doc_id = ?1)",
            [doc_id],
        )?;
        self.conn
            .execute("DELETE FROM doc_terms WHERE rowid = ?1", [doc_id])?;
        self.conn
            .execute("DELETE FROM chunks WHERE doc_id = ?1", [doc_id])?;
        self.conn
            .execute("DELETE FROM documents WHERE id = ?1", [doc_id])?;
        Ok(())
    }

    /// Drops everything indexed (for a rebuild), keeping the schema.
    pub fn clear(&self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("DELETE FROM chunk_terms; DELETE FROM doc_terms; DELETE FROM chunks; DELETE FROM documents;")?;
        Ok(())
    }

    pub fn insert_document(&self, doc: &NewDocument) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO documents(path, hash, title, source, sections, modified, indexed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                doc.path,
                doc.hash,
                doc.title,
                doc.source,
                serde_json::to_string(doc.sections).unwrap_or_default(),
                doc.modified,
                doc.indexed_at
            ],
        )?;
        let id = self.conn.last_insert_rowid();
        self.insert_doc_terms(id, doc.title, doc.source)?;
        Ok(id)
    }

    fn insert_doc_terms(&self, doc_id: i64, title: &str, source: &str) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("INSERT INTO doc_terms(rowid, title, url) VALUES (?1, ?2, ?3)")?;
        stmt.execute(params![
            doc_id,
            super::terms::index_text(title),
            super::terms::index_text(&super::terms::url_words(source))
        ])?;
        Ok(())
    }

    /// Documents whose title or URL holds any of `terms` (see
    /// [`super::terms::match_expr`]), best BM25 first, as (document id,
    /// score): one row per document, so a long page counts once.
    pub fn title_search(
        &self,
        terms: &[String],
        limit: usize,
        weights: &FieldWeights,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let Some(expr) = super::terms::match_expr(terms) else {
            return Ok(Vec::new());
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, bm25(doc_terms, ?3, ?4) AS score FROM doc_terms WHERE doc_terms MATCH ?1 ORDER BY score, rowid LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(
                params![expr, limit as i64, weights.title, weights.url],
                |r| Ok((r.get::<_, i64>(0)?, -r.get::<_, f64>(1)?)),
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The first chunk of a document, for a document found by its title alone.
    pub fn first_chunk_of(&self, doc_id: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM chunks WHERE doc_id = ?1 ORDER BY ordinal LIMIT 1")?
            .query_row([doc_id], |r| r.get(0))
            .optional()?)
    }

    pub fn insert_chunk(&self, doc_id: i64, chunk: &NewChunk) -> Result<i64, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO chunks(doc_id, ordinal, start, end, heading, text, tokens, vector) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        stmt.execute(params![
            doc_id,
            chunk.ordinal as i64,
            chunk.start as i64,
            chunk.end as i64,
            chunk.heading,
            chunk.text,
            chunk.tokens as i64,
            vector_to_blob(chunk.vector)
        ])?;
        let id = self.conn.last_insert_rowid();
        let t = chunk.terms;
        let mut fts = self.conn.prepare_cached(INSERT_TERMS)?;
        fts.execute(params![id, t.title, t.url, t.heading, t.body])?;
        Ok(id)
    }

    /// Every stored vector, for rebuilding the HNSW graph.
    pub fn for_each_vector(&self, mut f: impl FnMut(i64, &[f32])) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare("SELECT id, vector FROM chunks")?;
        let mut rows = stmt.query([])?;
        let mut buf = Vec::new();
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let blob = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
            blob_to_vector(blob, &mut buf);
            f(id, &buf);
        }
        Ok(())
    }

    /// Each chunk of a document as (document title, heading, text, vector).
    pub fn for_each_chunk_of(
        &self,
        doc_id: i64,
        mut f: impl FnMut(&str, &str, &str, &[f32]),
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT d.title, c.heading, c.text, c.vector FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.doc_id = ?1",
        )?;
        let mut rows = stmt.query([doc_id])?;
        let mut buf = Vec::new();
        while let Some(row) = rows.next()? {
            let text = |i| row.get_ref(i).and_then(|v| Ok(v.as_str()?));
            let blob = row.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?;
            blob_to_vector(blob, &mut buf);
            f(text(0)?, text(1)?, text(2)?, &buf);
        }
        Ok(())
    }

    /// Every document (id, path, hash, title, source, sections, modified)
    /// and every chunk (its document, the chunk, its vector), in id and
    /// ordinal order: what a copy of the index needs.
    pub fn export(
        &self,
        mut document: impl FnMut(i64, String, String, String, String, Vec<String>, Option<i64>),
        mut chunk: impl FnMut(i64, crate::chunk::Chunk, Vec<f32>),
    ) -> Result<(), StoreError> {
        let mut docs = self.conn.prepare(
            "SELECT id, path, hash, title, source, sections, modified FROM documents ORDER BY id",
        )?;
        let mut rows = docs.query([])?;
        while let Some(r) = rows.next()? {
            let sections: String = r.get(5)?;
            document(
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                serde_json::from_str(&sections).unwrap_or_default(),
                r.get(6)?,
            );
        }
        let mut chunks = self.conn.prepare(
            "SELECT doc_id, ordinal, start, end, heading, text, tokens, vector FROM chunks ORDER BY doc_id, ordinal",
        )?;
        let mut rows = chunks.query([])?;
        while let Some(r) = rows.next()? {
            let mut vector = Vec::new();
            blob_to_vector(
                r.get_ref(7)?.as_blob().map_err(rusqlite::Error::from)?,
                &mut vector,
            );
            let row = crate::chunk::Chunk {
                ordinal: r.get::<_, i64>(1)? as usize,
                start: r.get::<_, i64>(2)? as usize,
                end: r.get::<_, i64>(3)? as usize,
                heading_path: r.get(4)?,
                text: r.get(5)?,
                tokens: r.get::<_, i64>(6)? as usize,
            };
            chunk(r.get(0)?, row, vector);
        }
        Ok(())
    }

    /// The rows of the chunks `ids`, in one statement (a lookup per id
    /// costs more in statement steps than the rows themselves).
    pub fn chunks_by_ids(&self, ids: &[i64]) -> Result<HashMap<i64, ChunkRow>, StoreError> {
        let mut out = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(out);
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.id, c.doc_id, c.ordinal, c.start, c.end, c.heading, c.text, d.title, d.source, d.path
             FROM chunks c JOIN documents d ON d.id = c.doc_id
             WHERE c.id IN (SELECT value FROM json_each(?1))",
        )?;
        let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        for row in stmt.query_map([list], chunk_row)? {
            let row = row?;
            out.insert(row.id, row);
        }
        Ok(out)
    }

    /// The chunks right before and after `ordinal` in a document.
    pub fn neighbours(
        &self,
        doc_id: i64,
        ordinal: i64,
        radius: i64,
    ) -> Result<Vec<ChunkRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.id, c.doc_id, c.ordinal, c.start, c.end, c.heading, c.text, d.title, d.source, d.path
             FROM chunks c JOIN documents d ON d.id = c.doc_id
             WHERE c.doc_id = ?1 AND c.ordinal BETWEEN ?2 AND ?3 ORDER BY c.ordinal",
        )?;
        let rows = stmt
            .query_map(
                params![doc_id, ordinal - radius, ordinal + radius],
                chunk_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// BM25 search for a question's terms ([`super::terms::query_terms`]),
    /// best first, as (chunk id, score). On a large index the most common
    /// terms are left out first ([`Store::prune_common_terms`]), which bounds
    /// the rows BM25 has to score.
    pub fn lexical_search_terms(
        &self,
        terms: &[String],
        limit: usize,
        weights: &FieldWeights,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let counts = &mut TermCounts::default();
        self.lexical_search_pruned(terms, limit, weights, Pruning::OWN_TERMS, counts)
    }

    /// [`Store::lexical_search_terms`] within `pruning`, counting each term's
    /// matches once per `counts` (one question's searches share them).
    pub fn lexical_search_pruned(
        &self,
        terms: &[String],
        limit: usize,
        weights: &FieldWeights,
        pruning: Pruning,
        counts: &mut TermCounts,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let kept = self.prune_counted(terms, pruning, counts)?;
        match super::terms::match_expr(&kept) {
            Some(expr) => self.lexical_search(&expr, limit, weights),
            None => Ok(Vec::new()),
        }
    }

    /// The terms worth a BM25 query within `budget` matching rows.
    ///
    /// FTS5 computes `bm25()` for every row that matches any term of an OR
    /// query before it can sort them, about a microsecond per row and term:
    /// on 100k chunks a question with a few common words ("model", "data",
    /// "训练") matches half the index and takes tens of milliseconds, while
    /// listing the same rows without scoring takes a few. So each term's
    /// matches are counted (capped at `budget`, so the count itself stays
    /// cheap), and when their sum exceeds the budget the rarest terms are
    /// kept, up to the budget (at least one). The terms left out are the ones
    /// with the lowest IDF, which add least to any score; a chunk matching
    /// only them would rank near the bottom anyway. Indexes of at most
    /// `budget` chunks are never pruned.
    pub fn prune_common_terms(
        &self,
        terms: &[String],
        budget: usize,
    ) -> Result<Vec<String>, StoreError> {
        let pruning = Pruning {
            budget,
            drop_common: false,
            unpruned_up_to: budget,
        };
        self.prune_counted(terms, pruning, &mut TermCounts::default())
    }

    fn prune_counted(
        &self,
        terms: &[String],
        pruning: Pruning,
        counts: &mut TermCounts,
    ) -> Result<Vec<String>, StoreError> {
        if terms.len() <= 1 && !pruning.drop_common {
            return Ok(terms.to_vec());
        }
        // max(id) is an index lookup and bounds the chunk count from above.
        let max_id = match counts.max_id {
            Some(id) => id,
            None => {
                let id: Option<i64> = self
                    .conn
                    .prepare_cached("SELECT max(id) FROM chunks")?
                    .query_row([], |r| r.get(0))?;
                *counts.max_id.insert(id.unwrap_or(0))
            }
        };
        if max_id <= pruning.unpruned_up_to as i64 {
            return Ok(terms.to_vec());
        }
        let mut count = self.conn.prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM chunk_terms WHERE chunk_terms MATCH ?1 LIMIT ?2)",
        )?;
        // A count made for a larger budget serves a smaller one.
        let cap = pruning.cap();
        let mut count_word = |word: &str| -> Result<i64, StoreError> {
            Ok(match counts.rows.get(word) {
                Some(&(n, counted_to)) if n < counted_to || counted_to >= cap => n,
                _ => {
                    let n: i64 =
                        count.query_row(params![super::terms::quote(word), cap], |r| r.get(0))?;
                    counts.rows.insert(word.to_string(), (n, cap));
                    n
                }
            })
        };
        let kept = pruning.kept(terms, &mut count_word)?;
        Ok(kept.into_iter().map(|i| terms[i].clone()).collect())
    }

    /// BM25 search over segmented chunk text, a match in each field weighted
    /// by `weights`; best first, as (chunk id, score).
    pub fn lexical_search(
        &self,
        match_expr: &str,
        limit: usize,
        weights: &FieldWeights,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, bm25(chunk_terms, ?3, ?4, ?5, ?6) AS score FROM chunk_terms WHERE chunk_terms MATCH ?1 ORDER BY score, rowid LIMIT ?2",
        )?;
        let w = weights;
        let rows = stmt
            .query_map(
                params![match_expr, limit as i64, w.title, w.url, w.heading, w.body],
                |r| Ok((r.get::<_, i64>(0)?, -r.get::<_, f64>(1)?)),
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn counts(&self) -> Result<(i64, i64, i64), StoreError> {
        Ok(self.conn.query_row(
            "SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM chunks), (SELECT coalesce(sum(tokens), 0) FROM chunks)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?)
    }
}

fn chunk_row(r: &rusqlite::Row) -> rusqlite::Result<ChunkRow> {
    Ok(ChunkRow {
        id: r.get(0)?,
        doc_id: r.get(1)?,
        ordinal: r.get(2)?,
        start: r.get(3)?,
        end: r.get(4)?,
        heading: r.get(5)?,
        text: r.get(6)?,
        title: r.get(7)?,
        source: r.get(8)?,
        path: r.get(9)?,
    })
}

fn vector_to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn blob_to_vector(blob: &[u8], out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        blob.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalogue with one document whose chunks hold `texts` as body text.
    fn store_with(texts: &[&str]) -> (tempfile::TempDir, Store) {
        let fields: Vec<FieldTerms> = texts
            .iter()
            .map(|t| FieldTerms {
                body: t.to_string(),
                ..FieldTerms::default()
            })
            .collect();
        let (dir, store, _) = store_with_fields(&fields);
        (dir, store)
    }

    /// A catalogue with one document, a chunk per entry of `fields`; the chunk ids.
    fn store_with_fields(fields: &[FieldTerms]) -> (tempfile::TempDir, Store, Vec<i64>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_rw(&dir.path().join(DB_FILE)).unwrap();
        let doc = store
            .insert_document(&NewDocument {
                path: "a.md",
                hash: "h",
                title: "A",
                source: "a.md",
                sections: &[],
                modified: None,
                indexed_at: "2026-01-01T00:00:00Z",
            })
            .unwrap();
        let ids = fields
            .iter()
            .enumerate()
            .map(|(i, terms)| {
                store
                    .insert_chunk(
                        doc,
                        &NewChunk {
                            ordinal: i,
                            start: 0,
                            end: terms.body.len(),
                            heading: "",
                            text: &terms.body,
                            tokens: 1,
                            terms,
                            vector: &[0.0; 4],
                        },
                    )
                    .unwrap()
            })
            .collect();
        (dir, store, ids)
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A catalogue as ragmap wrote it before the full-text fields.
    fn version_1_catalogue(path: &Path) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(
            "CREATE VIRTUAL TABLE chunk_terms USING fts5(terms, tokenize = 'unicode61 remove_diacritics 2');
             INSERT INTO meta VALUES ('schema_version', '1');
             INSERT INTO documents(id, path, hash, title, source, sections, indexed_at)
                 VALUES (1, 'web/vllm.md', 'h', 'vllm-project/vllm', 'http://127.0.0.1:8719/github.com/vllm-project/vllm/index.html', '[]', 't');
             INSERT INTO chunks(id, doc_id, ordinal, start, end, heading, text, tokens, vector)
                 VALUES (7, 1, 0, 0, 10, 'About', '高效管理注意力的键值缓存', 5, x'00000000');
             INSERT INTO chunk_terms(rowid, terms) VALUES (7, 'vllm project vllm about 高效 管理');",
        )
        .unwrap();
    }

    #[test]
    fn a_version_1_catalogue_is_migrated_without_losing_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        version_1_catalogue(&path);
        // Readers are told to update it, not that it is damaged.
        let err = Store::open_ro(&path).err().unwrap();
        assert!(matches!(err, StoreError::Outdated { .. }), "{err}");

        let store = Store::open_rw(&path).unwrap();
        assert!(store.migrated().unwrap().contains("nothing re-embedded"));
        assert_eq!(
            store.meta("schema_version").unwrap().unwrap(),
            SCHEMA_VERSION
        );
        let only = |field: &str, term: &str| {
            let expr = format!("{{{field}}} : {}", super::super::terms::quote(term));
            store
                .lexical_search(&expr, 5, &FieldWeights::default())
                .unwrap()
        };
        // Each field derived again from the chunk and its document.
        assert_eq!(only("title", "vllm").len(), 1);
        assert_eq!(only("url", "github").len(), 1);
        assert_eq!(only("heading", "about").len(), 1);
        assert_eq!(only("body", "缓存").len(), 1);
        assert!(only("body", "vllm").is_empty());
        drop(store);
        // Migrated once: opening again changes nothing, and readers accept it.
        assert!(Store::open_rw(&path).unwrap().migrated().is_none());
        assert!(Store::open_ro(&path).is_ok());
    }

    #[test]
    fn field_weights_rank_a_title_match_above_a_body_match() {
        let fields = [
            FieldTerms::of(
                "vLLM",
                "https://github.com/vllm-project/vllm",
                "",
                "serving engine",
            ),
            FieldTerms::of(
                "Notes",
                "notes/x.md",
                "",
                "we compared vllm with another serving engine",
            ),
        ];
        let (_dir, store, ids) = store_with_fields(&fields);
        let query = strings(&["vllm"]);
        let even = store
            .lexical_search_terms(&query, 5, &FieldWeights::default())
            .unwrap();
        let titled = FieldWeights {
            title: 5.0,
            url: 3.0,
            ..FieldWeights::default()
        };
        let weighted = store.lexical_search_terms(&query, 5, &titled).unwrap();
        assert_eq!(weighted[0].0, ids[0], "{weighted:?}");
        assert!(weighted[0].1 > even.iter().find(|h| h.0 == ids[0]).unwrap().1);
    }

    #[test]
    fn bridge_searches_drop_a_common_term_even_alone_and_cost_phrases_by_their_rarest_word() {
        let mut texts = vec!["common filler"; 28];
        texts.extend(["common rare", "rare words"]);
        let (_dir, store) = store_with(&texts);
        let bridge = Pruning {
            budget: 10,
            drop_common: true,
            unpruned_up_to: 10,
        };
        let mut counts = TermCounts::default();
        let prune = |terms: &[&str], counts: &mut TermCounts| {
            store
                .prune_counted(&strings(terms), bridge, counts)
                .unwrap()
        };
        assert!(prune(&["common"], &mut counts).is_empty());
        assert_eq!(
            prune(&["common rare"], &mut counts),
            strings(&["common rare"])
        );
        // Counted once per question: the cache answers the second time.
        assert_eq!(counts.rows.get("common").map(|c| c.0), Some(11));
        assert_eq!(counts.rows.get("rare").map(|c| c.0), Some(2));
        // Not past `unpruned_up_to`: nothing is left out.
        let small = Pruning {
            unpruned_up_to: 100,
            ..bridge
        };
        let kept = store
            .prune_counted(&strings(&["common"]), small, &mut counts)
            .unwrap();
        assert_eq!(kept, strings(&["common"]));
    }

    #[test]
    fn common_terms_are_pruned_only_past_the_budget() {
        let mut texts = vec!["common filler"; 28];
        texts.extend(["common rare", "rare words"]);
        let (_dir, store) = store_with(&texts);
        let query = strings(&["common", "rare", "absent"]);
        // 30 chunks, budget 10: "common" (30 rows) goes, "rare" (2) stays.
        assert_eq!(
            store.prune_common_terms(&query, 10).unwrap(),
            strings(&["rare"])
        );
        // Within the budget nothing changes.
        assert_eq!(store.prune_common_terms(&query, 100).unwrap(), query);
        // A single term is never dropped.
        let one = strings(&["common"]);
        assert_eq!(store.prune_common_terms(&one, 10).unwrap(), one);
        // Unpruned (30 chunks is far below the default budget): the chunks
        // with the rare term rank first.
        let hits = store
            .lexical_search_terms(&query, 10, &FieldWeights::default())
            .unwrap();
        let mut first: Vec<i64> = hits.iter().take(2).map(|h| h.0).collect();
        first.sort();
        assert_eq!(first, vec![29, 30], "{hits:?}");
    }
}
