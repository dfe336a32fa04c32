//! The index: documents, their chunks, each chunk's vector and BM25 terms.
//!
//! [`build`] brings it in line with the corpus (incremental, all-or-nothing:
//! one run's changes land in one commit, so a crash leaves the old index or
//! the new one). [`open`] gives what retrieval, `serve` and `status` read: an
//! [`Index`] whose [`Index::snapshot`] is one committed state, searched by
//! vector, by BM25 terms and by title, and read chunk by chunk.
//!
//! The embedded backend ([`embedded`]) keeps it under `paths.index`: a SQLite
//! catalogue ([`store`]) and a usearch HNSW file derived from it ([`vectors`]).
//! With `[index] url`, the [`postgres`] backend keeps all of it in a
//! PostgreSQL database that several servers share. [`copy`] moves an index
//! between the two without embedding anything again.

mod build;
mod copy;
pub mod embedded;
pub mod postgres;
pub mod store;
pub mod terms;
pub mod vectors;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::config::Config;
use crate::corpus;
use crate::embed::EmbedError;

pub use build::{build, build_in, BuildOptions, BuildReport, Models, NewChunk, NewDocument, Scope};
pub(crate) use build::{describe_model, legacy_model};
pub use copy::{copy, CopyReport};
pub use terms::FieldWeights;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("no index in {0}; run `ragmap index` first")]
    Missing(PathBuf),
    #[error("index file {path} is damaged ({detail}); run `ragmap index --rebuild`")]
    Corrupt { path: PathBuf, detail: String },
    #[error("the index in {0} was written by an older ragmap; run `ragmap index` to update it (nothing is re-embedded)")]
    Outdated(PathBuf),
    #[error(
        "{0} holds no markdown documents; run `ragmap crawl` or add .md files, then `ragmap index`"
    )]
    EmptyCorpus(PathBuf),
    #[error("corpus folder {0} does not exist; create it or set [paths] corpus in config.toml")]
    NoCorpus(PathBuf),
    #[error(transparent)]
    Locked(#[from] crate::lock::LockError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Chunk(#[from] crate::chunk::ChunkError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the index in {path} failed: {detail}")]
    Write { path: PathBuf, detail: String },
    #[error(transparent)]
    Database(#[from] postgres::PgError),
    /// The index holds vectors of another embedding model than `[embed]` names.
    #[error("the index was built with the embedding model {index}, but [embed] {now} {configured}; set [embed] base_url and model back to the index's model, or run `ragmap index --rebuild` to re-embed everything with the new one")]
    ModelMismatch {
        index: String,
        now: &'static str,
        configured: String,
    },
}

impl IndexError {
    pub fn exit_code(&self) -> u8 {
        match self {
            IndexError::Embed(e) => e.exit_code(),
            IndexError::Missing(_)
            | IndexError::Corrupt { .. }
            | IndexError::Outdated(_)
            | IndexError::ModelMismatch { .. } => crate::exit::INDEX,
            IndexError::Database(e) => e.exit_code(),
            _ => crate::exit::FAILURE,
        }
    }
}

/// A search of one committed state that failed (a damaged file, a lost
/// connection): the message says what, and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SearchError {
    pub message: String,
    /// The process exit code it means (see `crate::exit`).
    pub exit_code: u8,
}

impl SearchError {
    pub fn new(message: impl Into<String>) -> SearchError {
        SearchError::with_code(message, crate::exit::FAILURE)
    }

    pub fn with_code(message: impl Into<String>, exit_code: u8) -> SearchError {
        SearchError {
            message: message.into(),
            exit_code,
        }
    }
}

/// Which backend holds an index, as `/health` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendStatus {
    /// `embedded` or `postgres`.
    pub name: &'static str,
    /// Searches read a replica this many seconds behind its primary.
    pub replica_lag_seconds: Option<f64>,
}

/// An open index: what retrieval, `serve` and `status` read.
pub trait Index: Send {
    /// Names the committed state reads see: two opens of one commit give the
    /// same generation, and every commit a new one.
    fn generation(&self) -> String;

    /// Moves to the newest committed state when `ragmap index` committed
    /// since; true when it moved. A state that cannot be opened yet (a
    /// rebuild in progress) keeps the current one, which is still whole.
    fn refresh(&mut self) -> bool;

    /// Starts a read of the current state: until the snapshot drops, every
    /// read sees that one commit, whatever `ragmap index` commits meanwhile.
    /// `None` when a newer commit already landed ([`Index::refresh`], then
    /// read again).
    fn snapshot(&self) -> Result<Option<Box<dyn Snapshot + '_>>, IndexError>;

    /// Documents, chunks and their tokens.
    fn counts(&self) -> Result<Counts, IndexError>;

    /// What the last build recorded, and where the index lives.
    fn describe(&self) -> Result<Description, IndexError>;

    /// Every indexed document by corpus path.
    fn documents(&self) -> Result<HashMap<String, DocRow>, IndexError>;

    /// Which backend this is (and, reading a replica, its lag).
    fn backend(&self) -> BackendStatus {
        BackendStatus {
            name: "embedded",
            replica_lag_seconds: None,
        }
    }
}

/// One committed state of an index, read consistently.
pub trait Snapshot {
    /// The vector side, searchable from another thread while this one runs
    /// the lexical searches (a hybrid search then costs about the slower
    /// of the two rather than their sum).
    fn vectors(&self) -> &dyn VectorSearch;

    /// BM25 over the chunks' segmented fields for `terms` (see
    /// [`terms::query_terms`]), best first, as (chunk id, score), within
    /// `pruning`; `counts` caches each term's matches for one question.
    fn lexical_search(
        &self,
        terms: &[String],
        limit: usize,
        weights: &FieldWeights,
        pruning: Pruning,
        counts: &mut TermCounts,
    ) -> Result<Vec<(i64, f64)>, SearchError>;

    /// Documents whose title or URL holds any of `names`, best first, as
    /// (document id, score): one row per document, so a long page counts once.
    fn title_search(
        &self,
        names: &[String],
        limit: usize,
        weights: &FieldWeights,
    ) -> Result<Vec<(i64, f64)>, SearchError>;

    /// The rows of the chunks `ids` (those that exist), by id.
    fn chunks_by_ids(&self, ids: &[i64]) -> Result<HashMap<i64, ChunkRow>, SearchError>;

    /// The first chunk of a document, for a document found by its title alone.
    fn first_chunk_of(&self, doc_id: i64) -> Result<Option<i64>, SearchError>;

    /// The chunks from `ordinal - radius` to `ordinal + radius` of a document, in order.
    fn neighbours(
        &self,
        doc_id: i64,
        ordinal: i64,
        radius: i64,
    ) -> Result<Vec<ChunkRow>, SearchError>;
}

/// Nearest-neighbour search over the chunks' vectors.
pub trait VectorSearch: Sync {
    /// The `k` chunks nearest to `query`, as (chunk id, cosine similarity), best first.
    fn nearest(&self, query: &[f32], k: usize) -> Result<Vec<(i64, f32)>, SearchError>;
}

/// Opens the index `config` names, for reading: the database of `[index]
/// url` when set, else the embedded index under `paths.index`.
pub fn open(config: &Config) -> Result<Box<dyn Index>, IndexError> {
    match config.index.database_url() {
        Some(_) => Ok(Box::new(postgres::Postgres::open(config)?)),
        None => Ok(Box::new(embedded::Embedded::open_dir(&config.index_dir())?)),
    }
}

/// The index `config` names, for one build to write (`rebuild`: from nothing).
fn target(config: &Config, rebuild: bool) -> Result<Box<dyn build::Target>, IndexError> {
    match config.index.database_url() {
        Some(_) => postgres::target(config, rebuild),
        None => embedded::Embedded::target(config, rebuild),
    }
}

/// Where the index `config` names lives, as messages show it: the
/// database URL without its password, or the index folder.
pub fn location(config: &Config) -> String {
    match config.index.database_url() {
        Some(url) => postgres::redact(url),
        None => config.index_dir().display().to_string(),
    }
}

/// Rows a lexical query may have BM25 score: about 10 ms of FTS5 work on
/// this project's 2-core reference machine (see [`Pruning`]).
pub const LEXICAL_ROW_BUDGET: usize = 8_000;

/// How far a lexical search may leave out its most common terms, which
/// bounds the rows BM25 has to score on a large index.
#[derive(Debug, Clone, Copy)]
pub struct Pruning {
    /// Rows BM25 may score.
    pub budget: usize,
    /// Leave out even the rarest term when it alone matches more rows than
    /// the budget (for searches that only add evidence: a term that common
    /// would add little but cost).
    pub drop_common: bool,
    /// Indexes of at most this many chunks are never pruned: every search
    /// of theirs is cheap.
    pub unpruned_up_to: usize,
}

impl Pruning {
    /// A question's own terms: the whole budget, and the rarest term kept
    /// however common it is.
    pub const OWN_TERMS: Pruning = Pruning {
        budget: LEXICAL_ROW_BUDGET,
        drop_common: false,
        unpruned_up_to: LEXICAL_ROW_BUDGET,
    };

    /// Counting a term's matches stops here, one row past the budget: that
    /// is all pruning needs to know.
    pub(crate) fn cap(&self) -> i64 {
        self.budget as i64 + 1
    }

    /// The indexes of the `terms` worth scoring, in order: the rarest first
    /// while their matches fit the budget (all of them when they all fit).
    /// `count_word` counts a word's matches up to [`Pruning::cap`].
    pub(crate) fn kept<E>(
        &self,
        terms: &[String],
        mut count_word: impl FnMut(&str) -> Result<i64, E>,
    ) -> Result<Vec<usize>, E> {
        let (budget, cap) = (self.budget as i64, self.cap());
        let mut counted = Vec::with_capacity(terms.len());
        for (i, term) in terms.iter().enumerate() {
            // A phrase ("large language model") is matched by walking the
            // rows of its rarest word, so that word's count is what the
            // phrase costs. Counting the phrase itself would walk them all
            // whenever the phrase is rarer than the cap.
            let mut n = i64::MAX;
            for word in term.split(' ').filter(|w| !w.is_empty()) {
                n = n.min(count_word(word)?);
            }
            counted.push((n.min(cap), i));
        }
        if counted.iter().map(|(n, _)| n).sum::<i64>() <= budget {
            return Ok((0..terms.len()).collect());
        }
        counted.sort_unstable();
        let mut kept = Vec::new();
        let mut total = 0;
        for (n, i) in counted {
            if n == 0 {
                continue;
            }
            if total + n > budget && (self.drop_common || !kept.is_empty()) {
                break;
            }
            total += n;
            kept.push(i);
        }
        kept.sort_unstable();
        Ok(kept)
    }
}

/// How many chunks each term matches (capped), counted once per question
/// however many of its searches use the term.
#[derive(Debug, Default)]
pub struct TermCounts {
    /// Rows matched, and the cap the count stopped at.
    pub(crate) rows: HashMap<String, (i64, i64)>,
    /// An upper bound of the chunk count.
    pub(crate) max_id: Option<i64>,
}

/// A document row as the index knows it.
#[derive(Debug, Clone)]
pub struct DocRow {
    pub id: i64,
    pub path: String,
    pub hash: String,
    pub title: String,
    pub source: String,
    pub sections: Vec<String>,
}

/// A chunk row joined with its document, as retrieval returns it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChunkRow {
    pub id: i64,
    pub doc_id: i64,
    pub ordinal: i64,
    pub start: i64,
    pub end: i64,
    pub heading: String,
    pub text: String,
    pub title: String,
    pub source: String,
    pub path: String,
}

/// Documents, chunks and the tokens embedded.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Counts {
    pub documents: i64,
    pub chunks: i64,
    pub tokens: i64,
}

/// What an index says of itself.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Description {
    /// Where it lives: a folder, or a database named without its password.
    pub location: String,
    pub bytes_on_disk: u64,
    pub model: Option<String>,
    /// The length of the index's vectors.
    pub dimensions: Option<usize>,
    pub settings: Option<String>,
    pub built_at: Option<String>,
}

/// What `ragmap status` shows about the index.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub counts: Counts,
    #[serde(flatten)]
    pub description: Description,
    /// Corpus documents added, changed or deleted since the last build.
    pub changed_since: Vec<String>,
}

pub fn status(config: &Config) -> Result<Status, IndexError> {
    let index = open(config)?;
    let known = index.documents()?;
    Ok(Status {
        counts: index.counts()?,
        description: index.describe()?,
        changed_since: changes_since(&config.corpus_dir(), &known),
    })
}

/// The corpus documents added, changed or deleted since `known` was indexed.
fn changes_since(corpus_dir: &std::path::Path, known: &HashMap<String, DocRow>) -> Vec<String> {
    let mut changed = Vec::new();
    let mut seen = HashSet::new();
    for path in corpus::list_markdown(corpus_dir).unwrap_or_default() {
        let rel = corpus::rel_path(corpus_dir, &path);
        let hash = std::fs::read(&path)
            .map(|b| corpus::content_hash(&b))
            .unwrap_or_default();
        match known.get(&rel) {
            Some(row) if row.hash == hash => {}
            Some(_) => changed.push(format!("changed: {rel}")),
            None => changed.push(format!("new: {rel}")),
        }
        seen.insert(rel);
    }
    for path in known.keys().filter(|p| !seen.contains(*p)) {
        changed.push(format!("deleted: {path}"));
    }
    changed.sort();
    changed
}
