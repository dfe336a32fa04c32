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

mod build;
pub mod embedded;
pub mod store;
pub mod terms;
pub mod vectors;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::config::Config;
use crate::corpus;
use crate::embed::EmbedError;

pub use build::{build, BuildOptions, BuildReport, NewChunk, NewDocument};
pub(crate) use build::{describe_model, legacy_model};
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
            _ => crate::exit::FAILURE,
        }
    }
}

/// A search of one committed state that failed (a damaged file, a lost
/// connection): the message says what, and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SearchError(pub String);

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

/// Opens the index `config` names, for reading.
pub fn open(config: &Config) -> Result<Box<dyn Index>, IndexError> {
    Ok(Box::new(embedded::Embedded::open_dir(&config.index_dir())?))
}

/// The index `config` names, for one build to write (`rebuild`: from nothing).
fn target(config: &Config, rebuild: bool) -> Result<Box<dyn build::Target>, IndexError> {
    embedded::Embedded::target(config, rebuild)
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
