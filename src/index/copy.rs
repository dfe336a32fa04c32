//! `ragmap index --to`: the index copied to another place (an embedded
//! index into PostgreSQL, or back into a folder) with its vectors, so
//! nothing is embedded again. The copy is one full build of the destination
//! (one commit there), from one consistent read of the source.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use super::build::{Changes, Identity, Pending};
use super::{embedded, postgres, IndexError};
use crate::chunk::Chunk;
use crate::config::Config;
use crate::corpus::{Document, FrontMatter};

/// What a copy did.
#[derive(Debug, serde::Serialize)]
pub struct CopyReport {
    pub from: String,
    pub to: String,
    pub documents: usize,
    pub chunks: usize,
    pub seconds: f64,
}

/// Everything an index holds, as a build would write it: documents with
/// their chunks and vectors, and the identity they were embedded with.
pub(crate) struct Export {
    identity: Identity,
    /// By index id, in id order.
    documents: Vec<(i64, Document)>,
    chunks: HashMap<i64, Vec<(Chunk, Vec<f32>)>>,
}

impl Export {
    /// An export of the index at `at` whose meta table is `meta`.
    pub fn new(meta: &HashMap<String, String>, at: &str) -> Result<Export, IndexError> {
        let get = |key: &str| meta.get(key).cloned();
        let (Some(model), Some(settings)) = (get("model"), get("settings")) else {
            return Err(IndexError::Missing(PathBuf::from(at)));
        };
        // Indexes from before the dimension was recorded hold the only
        // model there was then (384), and name it with its file hash.
        let dimensions = get("dimensions")
            .and_then(|d| d.parse().ok())
            .unwrap_or(384);
        let (model, model_files) = match (get("model_files"), super::legacy_model(&model)) {
            (None, Some((name, hash))) => (name.to_string(), hash.to_string()),
            (files, _) => (model, files.unwrap_or_default()),
        };
        Ok(Export {
            identity: Identity {
                model_stamp: get("model_stamp").unwrap_or_default(),
                model,
                dimensions,
                model_files,
                settings,
            },
            documents: Vec::new(),
            chunks: HashMap::new(),
        })
    }

    /// Adds a document row (`modified`: seconds since the Unix epoch).
    #[allow(clippy::too_many_arguments)]
    pub fn document(
        &mut self,
        id: i64,
        path: String,
        hash: String,
        title: String,
        source: String,
        sections: Vec<String>,
        modified: Option<i64>,
    ) {
        // Title and source as the build derives them: a front matter
        // `title` and `url` give back exactly the stored values.
        let front = FrontMatter {
            title: Some(title),
            url: Some(source),
            sections,
            ..FrontMatter::default()
        };
        let modified =
            modified.map(|s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s as u64));
        self.documents.push((
            id,
            Document {
                rel_path: path,
                front,
                body: String::new(),
                hash,
                modified,
                warning: None,
            },
        ));
    }

    /// Adds a chunk of document `doc_id` (in ordinal order) with its vector.
    pub fn chunk(&mut self, doc_id: i64, chunk: Chunk, vector: Vec<f32>) {
        self.chunks.entry(doc_id).or_default().push((chunk, vector));
    }

    /// The documents as pending ones, in id order (so the copy's ids keep
    /// the source's order, which ties are broken by), and their vectors.
    fn into_pending(mut self) -> (Identity, Vec<Pending>, Vec<Vec<f32>>) {
        self.documents.sort_by_key(|(id, _)| *id);
        let mut pending = Vec::with_capacity(self.documents.len());
        let mut vectors = Vec::new();
        for (id, doc) in self.documents {
            let mut chunks = Vec::new();
            for (chunk, vector) in self.chunks.remove(&id).unwrap_or_default() {
                chunks.push(chunk);
                vectors.push(vector);
            }
            pending.push(Pending { doc, chunks });
        }
        (self.identity, pending, vectors)
    }
}

/// The configuration of the index at `to`: a PostgreSQL URL, or a folder
/// (relative to the current directory) for an embedded index.
fn destination(config: &Config, to: &str) -> Config {
    let mut dest = config.clone();
    dest.index.read_url = None;
    if postgres::is_postgres_url(to) {
        dest.index.url = Some(to.trim().to_string());
    } else {
        dest.index.url = None;
        let path = PathBuf::from(to);
        dest.paths.index = std::path::absolute(&path).unwrap_or(path);
    }
    dest
}

/// Copies the index `config` names to `to` (replacing what is there).
pub fn copy(config: &Config, to: &str) -> Result<CopyReport, IndexError> {
    let started = Instant::now();
    let dest = destination(config, to);
    let (from, to) = (super::location(config), super::location(&dest));
    if from == to {
        return Err(IndexError::Write {
            path: PathBuf::from(&to),
            detail: "it is the index being copied; name another place".into(),
        });
    }
    let export = match config.index.database_url() {
        Some(_) => postgres::export(config)?,
        None => embedded::export(&config.index_dir())?,
    };
    let (identity, pending, vectors) = export.into_pending();
    let mut target = super::target(&dest, true)?;
    target.commit(&Changes {
        full_rebuild: true,
        stale: &[],
        pending: &pending,
        vectors: &vectors,
        identity: &identity,
        now: crate::corpus::now_rfc3339(),
    })?;
    Ok(CopyReport {
        from,
        to,
        documents: pending.len(),
        chunks: vectors.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
