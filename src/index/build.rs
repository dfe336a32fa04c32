//! `ragmap index`: the corpus against what the index holds, the new and
//! changed documents chunked and embedded, and every change written in one
//! commit by the backend ([`Target`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use rayon::prelude::*;

use super::terms::FieldTerms;
use super::{DocRow, IndexError};
use crate::chunk::{self, Chunker};
use crate::config::Config;
use crate::corpus::{self, Document, Skipped};
use crate::embed::{self, EmbedError, Embedder};

pub struct BuildOptions {
    pub rebuild: bool,
    pub progress: bool,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct BuildReport {
    pub documents: usize,
    pub added: usize,
    pub changed: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub chunks_embedded: usize,
    pub tokens_embedded: usize,
    /// Why everything was rebuilt, when it was.
    pub rebuilt: Option<String>,
    /// How an index written by an older ragmap was brought up to date.
    pub migrated: Option<String>,
    #[serde(skip)]
    pub skipped: Vec<Skipped>,
    /// Documents indexed without their front matter, and why.
    #[serde(skip)]
    pub warnings: Vec<Skipped>,
    /// Splitting the changed documents into chunks (the first embedding
    /// session loads meanwhile).
    pub chunk_seconds: f64,
    /// Waiting for the embedding sessions after splitting (not counted in `embed_seconds`).
    pub model_load_seconds: f64,
    pub embed_seconds: f64,
    pub total_seconds: f64,
}

/// Where a build writes: what the index holds now, and one commit of changes.
pub(crate) trait Target {
    /// A value the last build recorded (`identity`, `model`, `model_stamp`, …).
    fn meta(&self, key: &str) -> Result<Option<String>, IndexError>;
    /// Every indexed document by corpus path.
    fn documents(&self) -> Result<HashMap<String, DocRow>, IndexError>;
    /// Whether the index can be read as it stands (nothing derived is missing).
    fn is_whole(&self) -> bool;
    /// Writes `changes` all at once: a crash leaves the old index or the new one.
    fn commit(&mut self, changes: &Changes) -> Result<(), IndexError>;
    /// How opening brought an index written by an older ragmap up to date.
    fn migrated(&self) -> Option<String>;
}

/// One corpus document waiting to be (re)indexed.
pub(crate) struct Pending {
    pub doc: Document,
    pub chunks: Vec<chunk::Chunk>,
}

/// The embedding model and chunk settings an index is built with: a change of
/// either invalidates every vector.
pub(crate) struct Identity {
    /// Sizes and times of the model files: while it matches, the model's
    /// identity is read from the index instead of hashing the files again.
    pub model_stamp: String,
    pub model: String,
    /// The length of the model's vectors.
    pub dimensions: usize,
    pub settings: String,
}

impl Identity {
    pub fn full(&self) -> String {
        format!("{};{}", self.model, self.settings)
    }
}

/// Everything one build changes.
pub(crate) struct Changes<'a> {
    pub full_rebuild: bool,
    /// Index ids of the documents deleted or changed since the last build.
    pub stale: &'a [i64],
    pub pending: &'a [Pending],
    /// The vectors of the pending chunks, in order.
    pub vectors: &'a [Vec<f32>],
    pub identity: &'a Identity,
    pub now: String,
}

/// A document's row as a build writes it.
pub struct NewDocument<'a> {
    pub path: &'a str,
    pub hash: &'a str,
    pub title: &'a str,
    pub source: &'a str,
    pub sections: &'a [String],
    /// Seconds since the Unix epoch.
    pub modified: Option<i64>,
    pub indexed_at: &'a str,
}

/// A chunk's row as a build writes it.
pub struct NewChunk<'a> {
    pub ordinal: usize,
    pub start: usize,
    pub end: usize,
    pub heading: &'a str,
    pub text: &'a str,
    pub tokens: usize,
    pub terms: &'a FieldTerms,
    pub vector: &'a [f32],
}

impl Changes<'_> {
    /// Each pending document's row with its chunks' rows (terms and vectors
    /// included), in order: what every backend inserts.
    pub fn for_each_document<E>(
        &self,
        mut insert: impl FnMut(&NewDocument, &[NewChunk]) -> Result<(), E>,
        too_few_vectors: impl Fn() -> E,
    ) -> Result<(), E> {
        let mut next_vector = self.vectors.iter();
        for p in self.pending {
            let doc = &p.doc;
            let title = doc.display_title();
            let source = doc.source();
            let modified = doc
                .modified
                .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64);
            let row = NewDocument {
                path: &doc.rel_path,
                hash: &doc.hash,
                title: &title,
                source: &source,
                sections: &doc.front.sections,
                modified,
                indexed_at: &self.now,
            };
            let terms: Vec<FieldTerms> = p
                .chunks
                .iter()
                .map(|c| FieldTerms::of(&title, &source, &c.heading_path, &c.text))
                .collect();
            let mut chunks = Vec::with_capacity(p.chunks.len());
            for (c, terms) in p.chunks.iter().zip(&terms) {
                let vector = next_vector.next().ok_or_else(&too_few_vectors)?;
                chunks.push(NewChunk {
                    ordinal: c.ordinal,
                    start: c.start,
                    end: c.end,
                    heading: &c.heading_path,
                    text: &c.text,
                    tokens: c.tokens,
                    terms,
                    vector,
                });
            }
            insert(&row, &chunks)?;
        }
        Ok(())
    }
}

/// The corpus against the index: what to embed and what to remove.
#[derive(Default)]
struct Diff {
    /// New and changed documents.
    pending: Vec<Pending>,
    /// Index ids of the documents deleted or changed since the last build.
    stale: Vec<i64>,
    added: usize,
    changed: usize,
    deleted: usize,
    unchanged: usize,
}

/// The vectors of the pending chunks, in order, and what producing them took.
#[derive(Default)]
struct Embedded {
    vectors: Vec<Vec<f32>>,
    model_load_seconds: f64,
    embed_seconds: f64,
}

/// Brings the index in line with the corpus, re-embedding only what changed.
pub fn build(config: &Config, options: &BuildOptions) -> Result<BuildReport, IndexError> {
    let started = Instant::now();
    let corpus_dir = config.corpus_dir();
    if !corpus_dir.is_dir() {
        return Err(IndexError::NoCorpus(corpus_dir));
    }
    let (docs, mut report) = scan_corpus(&corpus_dir)?;
    // Checked before anything is written, so a missing install changes nothing.
    let model_stamp = embed::model_files_stamp(config)?;
    let mut target = super::target(config, options.rebuild)?;
    report.migrated = target.migrated();
    let identity = identify(config, &*target, model_stamp)?;
    let stored_identity = target.meta("identity")?;
    report.rebuilt = rebuild_reason(options.rebuild, stored_identity.as_deref(), &identity);
    let full_rebuild = report.rebuilt.is_some();
    let known = match full_rebuild {
        true => HashMap::new(),
        false => target.documents()?,
    };
    let mut diff = diff(docs, &known);
    report.count(&diff);
    let nothing_to_do = diff.pending.is_empty() && diff.stale.is_empty() && !full_rebuild;
    if nothing_to_do && stored_identity.is_some() && target.is_whole() {
        report.total_seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    let chunk_started = Instant::now();
    let first_session = chunk_while_loading(config, &mut diff.pending)?;
    report.chunk_seconds = chunk_started.elapsed().as_secs_f64();
    let texts = embedding_texts(&diff.pending);
    report.chunks_embedded = texts.len();
    report.tokens_embedded = diff
        .pending
        .iter()
        .flat_map(|p| &p.chunks)
        .map(|c| c.tokens)
        .sum();
    let embedded = embed_texts(config, first_session, &texts, options.progress)?;
    report.model_load_seconds = embedded.model_load_seconds;
    report.embed_seconds = embedded.embed_seconds;
    drop(texts);

    target.commit(&Changes {
        full_rebuild,
        stale: &diff.stale,
        pending: &diff.pending,
        vectors: &embedded.vectors,
        identity: &identity,
        now: corpus::now_rfc3339(),
    })?;
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

impl BuildReport {
    fn count(&mut self, diff: &Diff) {
        self.added = diff.added;
        self.changed = diff.changed;
        self.deleted = diff.deleted;
        self.unchanged = diff.unchanged;
    }
}

/// The corpus's readable documents, and a report naming the files skipped
/// and the front matter ignored, with the reason.
fn scan_corpus(corpus_dir: &Path) -> Result<(Vec<Document>, BuildReport), IndexError> {
    let paths = corpus::list_markdown(corpus_dir).map_err(|source| IndexError::Io {
        what: "cannot list",
        path: corpus_dir.to_path_buf(),
        source,
    })?;
    let mut docs = Vec::with_capacity(paths.len());
    let mut skipped = Vec::new();
    for path in &paths {
        match corpus::read_document(corpus_dir, path) {
            Ok(doc) => docs.push(doc),
            Err(skip) => skipped.push(skip),
        }
    }
    if docs.is_empty() {
        return Err(IndexError::EmptyCorpus(corpus_dir.to_path_buf()));
    }
    let warnings = docs
        .iter()
        .filter_map(|d| {
            d.warning.as_ref().map(|reason| Skipped {
                rel_path: d.rel_path.clone(),
                reason: reason.clone(),
            })
        })
        .collect();
    let report = BuildReport {
        documents: docs.len(),
        skipped,
        warnings,
        ..BuildReport::default()
    };
    Ok((docs, report))
}

fn settings_identity(config: &Config) -> String {
    format!(
        "chunker=v{};max_tokens={};overlap_tokens={}",
        chunk::CHUNKER_VERSION,
        config.chunk.max_tokens,
        config.chunk.overlap_tokens
    )
}

/// This build's identity; the model's is reused from the index while the
/// model files' stamp matches (computing it hashes the files).
fn identify(
    config: &Config,
    target: &dyn Target,
    model_stamp: String,
) -> Result<Identity, IndexError> {
    let cached = match target.meta("model_stamp")? {
        Some(stamp) if stamp == model_stamp => target.meta("model")?,
        _ => None,
    };
    let model = match cached {
        Some(model) => model,
        None => embed::model_identity(config)?,
    };
    Ok(Identity {
        model_stamp,
        model,
        dimensions: super::vectors::DIMENSIONS,
        settings: settings_identity(config),
    })
}

/// Why every document is embedded again, when it is: asked for, or the stored
/// identity differs from this build's.
fn rebuild_reason(requested: bool, stored: Option<&str>, identity: &Identity) -> Option<String> {
    if requested {
        return Some("--rebuild".into());
    }
    let identity = identity.full();
    let old = stored.filter(|old| *old != identity)?;
    let reason = if old.split(';').next() != identity.split(';').next() {
        "the embedding model changed"
    } else {
        "the [chunk] settings changed"
    };
    Some(reason.into())
}

/// Compares the corpus with the documents the index knows (by content hash).
fn diff(docs: Vec<Document>, known: &HashMap<String, DocRow>) -> Diff {
    let present: HashSet<&str> = docs.iter().map(|d| d.rel_path.as_str()).collect();
    let deleted: Vec<i64> = known
        .values()
        .filter(|d| !present.contains(d.path.as_str()))
        .map(|d| d.id)
        .collect();
    drop(present);
    let mut diff = Diff {
        deleted: deleted.len(),
        stale: deleted,
        ..Diff::default()
    };
    for doc in docs {
        match known.get(&doc.rel_path) {
            Some(row) if row.hash == doc.hash => {
                diff.unchanged += 1;
                continue;
            }
            Some(row) => {
                diff.changed += 1;
                diff.stale.push(row.id);
            }
            None => diff.added += 1,
        }
        diff.pending.push(Pending {
            doc,
            chunks: Vec::new(),
        });
    }
    diff
}

/// Splits the pending documents on every core while the first embedding
/// session loads: counting tokens for the splitter is the largest cost after
/// the model, both take seconds, and an incremental run needs both. The one
/// tokenizer sizes the chunks and, configured for the model, feeds the
/// embedder. Returns the embedder (none when nothing is pending).
fn chunk_while_loading(
    config: &Config,
    pending: &mut [Pending],
) -> Result<Option<Result<Embedder, EmbedError>>, chunk::ChunkError> {
    if pending.is_empty() {
        return Ok(None);
    }
    std::thread::scope(|scope| {
        let loader = scope.spawn(|| Embedder::load_first_session(config));
        let tokenizer =
            embed::load_tokenizer(config).map_err(|e| chunk::ChunkError::Tokenizer {
                path: embed::tokenizer_path(config).display().to_string(),
                message: e.to_string(),
            })?;
        let tokenizer = std::sync::Arc::new(tokenizer);
        let chunker = Chunker::with_tokenizer(tokenizer.clone(), &config.chunk)?;
        pending
            .par_iter_mut()
            .for_each(|p| p.chunks = chunker.chunk(&p.doc.body));
        let session = loader
            .join()
            .unwrap_or_else(|_| Err(EmbedError::Run("loading the model panicked".into())));
        Ok(Some(session.and_then(|(session, prepacked)| {
            Embedder::from_parts(config, &tokenizer, session, prepacked)
        })))
    })
}

/// What the model embeds for each pending chunk, in order.
fn embedding_texts(pending: &[Pending]) -> Vec<String> {
    pending
        .iter()
        .flat_map(|p| {
            let title = p.doc.display_title();
            p.chunks
                .iter()
                .map(move |c| chunk::embedding_text(&title, &c.heading_path, &c.text))
        })
        .collect()
}

/// Embeds `texts` with the first session plus as many more as pay off.
fn embed_texts(
    config: &Config,
    first_session: Option<Result<Embedder, EmbedError>>,
    texts: &[String],
    progress: bool,
) -> Result<Embedded, EmbedError> {
    let mut started = Instant::now();
    let mut embedded = Embedded::default();
    if let Some(embedder) = first_session.filter(|_| !texts.is_empty()) {
        let mut embedder = embedder?;
        embedder.add_sessions(config, Embedder::sessions_for(config, texts.len()))?;
        embedded.model_load_seconds = started.elapsed().as_secs_f64();
        started = Instant::now();
        let bar = progress_bar(progress, texts.len() as u64, "embedding");
        embedded.vectors = embedder.embed_passages(texts, |n| bar.inc(n as u64))?;
        bar.finish_and_clear();
    }
    embedded.embed_seconds = started.elapsed().as_secs_f64();
    Ok(embedded)
}

fn progress_bar(enabled: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {pos}/{len} chunks, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
