//! The vectors a remote indexing run has received but the index has not yet
//! committed, so that a run the server broke off is resumed by the next
//! instead of starting over: a SQLite file in the user's cache
//! (`embed-resume-v1.sqlite`), keyed by a hash of the model's name, the way
//! questions and passages are told apart, and the passage text. A build
//! forgets its passages' rows once it commits. Only an aid: a cache that
//! cannot be opened or written is skipped.

use std::collections::HashMap;
use std::path::PathBuf;

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::config::Prefixes;

pub(super) struct Cache {
    conn: Connection,
    /// What the keys of this model start from.
    scope: String,
}

fn path() -> PathBuf {
    crate::config::default_cache_dir().join("embed-resume-v1.sqlite")
}

impl Cache {
    /// The cache for vectors of `model` asked for as `prefixes` says.
    pub(super) fn open(model: &str, prefixes: Prefixes) -> Option<Cache> {
        let path = path();
        std::fs::create_dir_all(path.parent()?).ok()?;
        let conn = Connection::open(&path).ok()?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL);",
        )
        .ok()?;
        let short = model
            .rsplit('/')
            .next()
            .unwrap_or(model)
            .to_ascii_lowercase();
        Some(Cache {
            conn,
            scope: format!("{short}\u{0}{prefixes:?}\u{0}"),
        })
    }

    /// The keys of `texts`' vectors.
    pub(super) fn keys(&self, texts: &[String]) -> Vec<Vec<u8>> {
        texts
            .iter()
            .map(|text| {
                let mut hash = Sha256::new();
                hash.update(self.scope.as_bytes());
                hash.update(text.as_bytes());
                hash.finalize().to_vec()
            })
            .collect()
    }

    /// The kept vectors of `keys`, by position.
    pub(super) fn get(&self, keys: &[Vec<u8>]) -> HashMap<usize, Vec<f32>> {
        let mut found = HashMap::new();
        let Ok(mut stmt) = self
            .conn
            .prepare_cached("SELECT vector FROM vectors WHERE key = ?1")
        else {
            return found;
        };
        for (i, key) in keys.iter().enumerate() {
            let blob: Option<Vec<u8>> = stmt
                .query_row(params![key], |r| r.get(0))
                .optional()
                .ok()
                .flatten();
            if let Some(blob) = blob.filter(|b| !b.is_empty() && b.len() % 4 == 0) {
                let v = blob
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                found.insert(i, v);
            }
        }
        found
    }

    /// Keeps one request's vectors, in one transaction.
    pub(super) fn put(&self, keys: &[&[u8]], vectors: &[Vec<f32>]) {
        let _ = (|| -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO vectors(key, vector) VALUES (?1, ?2)",
                )?;
                for (key, v) in keys.iter().zip(vectors) {
                    let blob: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    stmt.execute(params![key, blob])?;
                }
            }
            tx.commit()
        })();
    }

    /// Drops the rows of `keys`.
    pub(super) fn forget(&self, keys: &[Vec<u8>]) {
        let _ = (|| -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            {
                let mut stmt = tx.prepare_cached("DELETE FROM vectors WHERE key = ?1")?;
                for key in keys {
                    stmt.execute(params![key])?;
                }
            }
            tx.commit()
        })();
    }
}
