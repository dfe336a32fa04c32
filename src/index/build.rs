//! `ragmap index`: the corpus against what the index holds, the new and
//! changed documents chunked and embedded, and every change written in one
//! commit by the backend ([`Target`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rayon::prelude::*;

use super::terms::FieldTerms;
use super::{DocRow, IndexError};
use crate::chunk::{self, Chunk, Chunker};
use crate::config::Config;
use crate::corpus::{self, Document, FrontMatter, Skipped};
use crate::embed::{self, EmbedError, Embedder};

pub struct BuildOptions {
    pub rebuild: bool,
    pub progress: bool,
}

/// The tokenizer and the embedder a build loads, kept by a caller that builds
/// again and again (the watcher): loading them takes a few tenths of a second
/// of CPU, more than the rest of a one-note run.
#[derive(Default)]
pub struct Models {
    tokenizer: Option<std::sync::Arc<crate::tokenizer::Tokenizer>>,
    embedder: Option<Embedder>,
    /// Load every configured embedding session, not only as many as this
    /// build's passages pay for: loaded once, they share the small runs too.
    all_sessions: bool,
}

impl Models {
    /// Models for many builds: see [`Models::all_sessions`].
    pub fn kept() -> Models {
        Models {
            all_sessions: true,
            ..Models::default()
        }
    }

    /// Whether a build left the embedder loaded for the next one.
    pub fn loaded(&self) -> bool {
        self.embedder.is_some() && self.tokenizer.is_some()
    }
}

/// The corpus files a build reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every file: new, changed and deleted documents are found by reading
    /// and hashing the whole corpus.
    Everything,
    /// Only these paths (relative to the corpus folder, `/`-separated): each
    /// a file or a folder, present or gone. Indexed documents elsewhere are
    /// taken as unchanged without being read (what `--watch` knows changed).
    Paths(BTreeSet<String>),
}

#[derive(Debug, Default, serde::Serialize)]
pub struct BuildReport {
    pub documents: usize,
    pub added: usize,
    pub changed: usize,
    pub deleted: usize,
    pub unchanged: usize,
    /// Corpus files read and hashed (all of them unless the build was scoped).
    pub scanned: usize,
    pub chunks_embedded: usize,
    /// Chunks of changed documents whose embedded text was already indexed:
    /// their stored vectors were kept instead of embedding them again.
    pub chunks_reused: usize,
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
    /// The chunks of documents `doc_ids` with their vectors, so that a build
    /// keeps the vector of a chunk whose embedded text did not change. A
    /// backend that cannot read vectors back offers none: they are embedded again.
    fn stored_chunks(&self, _doc_ids: &[i64]) -> Result<Vec<StoredChunk>, IndexError> {
        Ok(Vec::new())
    }
}

/// An indexed chunk with what its vector was embedded from.
pub(crate) struct StoredChunk {
    /// Its document's title.
    pub title: String,
    pub heading: String,
    pub text: String,
    pub vector: Vec<f32>,
}

/// One corpus document waiting to be (re)indexed.
pub(crate) struct Pending {
    pub doc: Document,
    pub chunks: Vec<chunk::Chunk>,
}

/// The embedding model and chunk settings an index is built with: another
/// model (name or dimension) is refused, changed local model files or chunk
/// settings re-embed everything.
pub(crate) struct Identity {
    /// Sizes and times of the local model's files: while it matches,
    /// `model_files` is read from the index instead of hashing the files again.
    pub model_stamp: String,
    /// The model's name (`embed::model_name`).
    pub model: String,
    /// The length of the model's vectors.
    pub dimensions: usize,
    /// A hash of the local model's files; empty when the vectors came from a
    /// server (its weights cannot be hashed here).
    pub model_files: String,
    pub settings: String,
}

impl Identity {
    pub fn full(&self) -> String {
        format!(
            "{}:{}:{};{}",
            self.model, self.dimensions, self.model_files, self.settings
        )
    }
}

/// The identity the last build recorded.
#[derive(Default)]
struct Stored {
    model: Option<String>,
    dimensions: Option<usize>,
    model_files: Option<String>,
    model_stamp: Option<String>,
    settings: Option<String>,
    /// A whole identity was recorded (a build committed).
    committed: bool,
}

impl Stored {
    fn read(target: &dyn Target) -> Result<Stored, IndexError> {
        Stored::from_meta(|key| target.meta(key))
    }

    /// From an index's meta values (`get` reads one), written by any ragmap.
    fn from_meta(
        get: impl Fn(&str) -> Result<Option<String>, IndexError>,
    ) -> Result<Stored, IndexError> {
        let mut model = get("model")?;
        let mut model_files = get("model_files")?;
        if model_files.is_none() {
            if let Some((name, hash)) = model.as_deref().and_then(legacy_model) {
                (model, model_files) = (Some(name.to_string()), Some(hash.to_string()));
            }
        }
        Ok(Stored {
            model,
            dimensions: get("dimensions")?.and_then(|d| d.parse().ok()),
            model_files,
            model_stamp: get("model_stamp")?,
            settings: get("settings")?,
            committed: get("identity")?.is_some(),
        })
    }
}

/// The vector length an index's meta `dimensions` records. Indexes from
/// before it was recorded hold the only model there was then (384).
pub(crate) fn recorded_dimensions(recorded: Option<String>) -> usize {
    recorded.and_then(|d| d.parse().ok()).unwrap_or(384)
}

/// An index written before names and file hashes were kept apart recorded
/// the local model as `multilingual-e5-small:<hash>`: its name and hash.
pub(crate) fn legacy_model(recorded: &str) -> Option<(&str, &str)> {
    let (name, hash) = recorded.split_once(':')?;
    let legacy =
        name == crate::config::EMBEDDING_MODEL && hash.chars().all(|c| c.is_ascii_hexdigit());
    legacy.then_some((name, hash))
}

/// How a model is named in messages: its name, dimension and, for a server, where.
pub(crate) fn describe_model(
    name: &str,
    dimensions: Option<usize>,
    server: Option<&str>,
) -> String {
    let mut out = format!("{name:?}");
    match (dimensions, server) {
        (Some(d), Some(s)) => out.push_str(&format!(" ({d} dimensions, from {s})")),
        (Some(d), None) => out.push_str(&format!(" ({d} dimensions)")),
        (None, Some(s)) => out.push_str(&format!(" (from {s})")),
        (None, None) => {}
    }
    out
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
    /// Indexed documents a scoped build did not look at.
    outside: usize,
}

/// The vectors of the pending chunks, in order, and what producing them took.
#[derive(Default)]
struct Embedded {
    vectors: Vec<Vec<f32>>,
    /// What embedded them (told when they are committed).
    embedder: Option<Embedder>,
    model_load_seconds: f64,
    embed_seconds: f64,
}

/// Brings the index in line with the corpus, re-embedding only what changed.
pub fn build(config: &Config, options: &BuildOptions) -> Result<BuildReport, IndexError> {
    build_in(config, options, &Scope::Everything, &mut Models::default())
}

/// [`build`] reading only the corpus files `scope` names (the whole corpus
/// when the index is rebuilt: every document is embedded again then), with
/// the `models` an earlier build left loaded, and leaving them loaded.
pub fn build_in(
    config: &Config,
    options: &BuildOptions,
    scope: &Scope,
    models: &mut Models,
) -> Result<BuildReport, IndexError> {
    let started = Instant::now();
    let corpus_dir = config.corpus_dir();
    if !corpus_dir.is_dir() {
        return Err(IndexError::NoCorpus(corpus_dir));
    }
    // Read before the index is opened, so that an empty corpus changes
    // nothing, not even under --rebuild.
    let whole = match (scope, options.rebuild) {
        (Scope::Everything, _) | (_, true) => Some(scan_corpus(&corpus_dir)?),
        _ => None,
    };
    // Checked before anything is written, so a missing install changes nothing.
    embed::check_assets(config)?;
    let model_stamp = match config.embed_base_url() {
        Some(_) => None,
        None => Some(embed::model_files_stamp(config)?),
    };
    let mut target = embed::timed("opening the index", || {
        super::target(config, options.rebuild)
    })?;
    let stored = Stored::read(&*target)?;
    let mut identity = identify(config, &stored, model_stamp)?;
    let rebuilt = rebuild_reason(options.rebuild, &stored, &identity)?;
    let full_rebuild = rebuilt.is_some();
    let known = match full_rebuild {
        true => HashMap::new(),
        false => target.documents()?,
    };
    let (mut diff, mut report) = compare(&corpus_dir, scope, whole, known, full_rebuild)?;
    report.count(&diff);
    report.migrated = target.migrated();
    report.rebuilt = rebuilt;
    if report.documents == 0 {
        return Err(IndexError::EmptyCorpus(corpus_dir));
    }
    let nothing_to_do = diff.pending.is_empty() && diff.stale.is_empty() && !full_rebuild;
    if nothing_to_do && stored.committed && target.is_whole() {
        report.total_seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    let index_dimensions = stored.dimensions.filter(|_| !full_rebuild);
    let (vectors, mut embedded) = pending_vectors(
        config,
        &*target,
        &mut diff,
        index_dimensions,
        (options, models),
        &mut report,
    )?;
    // Kept vectors are the index's own length, embedded ones checked against it.
    identity.dimensions = match vectors.first() {
        Some(v) => v.len(),
        None => index_dimensions.unwrap_or(identity.dimensions),
    };

    embed::timed("commit", || {
        target.commit(&Changes {
            full_rebuild,
            stale: &diff.stale,
            pending: &diff.pending,
            vectors: &vectors,
            identity: &identity,
            now: corpus::now_rfc3339(),
        })
    })?;
    if let Some(mut embedder) = embedded.embedder.take() {
        embedder.committed();
        models.embedder = Some(embedder);
    }
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The corpus (all of it: `whole` when read already; or the paths `scope`
/// names, unless everything is rebuilt) against the documents the index knows.
fn compare(
    corpus_dir: &Path,
    scope: &Scope,
    whole: Option<(Vec<Document>, BuildReport)>,
    known: HashMap<String, DocRow>,
    full_rebuild: bool,
) -> Result<(Diff, BuildReport), IndexError> {
    let (docs, report) = match (whole, scope) {
        (Some(whole), _) => whole,
        (None, Scope::Paths(paths)) if !full_rebuild => {
            return scan_paths(corpus_dir, paths, known)
        }
        (None, _) => scan_corpus(corpus_dir)?,
    };
    Ok((diff(docs, &known), report))
}

/// Chunks the pending documents and finds their vectors: kept from the index
/// where a chunk's embedded text is indexed already, embedded otherwise (as
/// vectors of the index's `dimensions` when it has some).
fn pending_vectors(
    config: &Config,
    target: &dyn Target,
    diff: &mut Diff,
    dimensions: Option<usize>,
    (options, models): (&BuildOptions, &mut Models),
    report: &mut BuildReport,
) -> Result<(Vec<Vec<f32>>, Embedded), IndexError> {
    let chunk_started = Instant::now();
    let first_session = embed::timed("chunking", || {
        chunk_while_loading(config, &mut diff.pending, models)
    })?;
    report.chunk_seconds = chunk_started.elapsed().as_secs_f64();
    // A rebuild has nothing stale: every document is pending.
    let kept = target.stored_chunks(&diff.stale)?;
    let mut reuse = Reuse::of(&diff.pending, kept);
    report.chunks_embedded = reuse.texts.len();
    report.chunks_reused = reuse.reused;
    report.tokens_embedded = reuse.tokens;
    let sessions = match models.all_sessions {
        true => config.embed.sessions,
        false => embed::sessions_for(config, reuse.texts.len()),
    };
    let mut embedded = embed_texts(
        config,
        first_session,
        &reuse.texts,
        (options, sessions),
        dimensions,
    )?;
    report.model_load_seconds = embedded.model_load_seconds;
    report.embed_seconds = embedded.embed_seconds;
    let vectors = reuse.fill(std::mem::take(&mut embedded.vectors));
    Ok((vectors, embedded))
}

impl BuildReport {
    fn count(&mut self, diff: &Diff) {
        self.added = diff.added;
        self.changed = diff.changed;
        self.deleted = diff.deleted;
        self.unchanged = diff.unchanged + diff.outside;
        self.documents = diff.added + diff.changed + self.unchanged;
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
    let (docs, report) = read_documents(corpus_dir, &paths);
    if docs.is_empty() {
        return Err(IndexError::EmptyCorpus(corpus_dir.to_path_buf()));
    }
    Ok((docs, report))
}

/// The corpus against the index within `paths` (see [`Scope::Paths`]): the
/// markdown files they name or hold are read; the indexed documents they
/// cover and no longer hold are deleted; the others count as unchanged.
fn scan_paths(
    corpus_dir: &Path,
    paths: &BTreeSet<String>,
    known: HashMap<String, DocRow>,
) -> Result<(Diff, BuildReport), IndexError> {
    let mut files = BTreeSet::new();
    for rel in paths {
        let path = corpus_dir.join(rel);
        if path.is_dir() {
            let listed = corpus::list_markdown(&path).map_err(|source| IndexError::Io {
                what: "cannot list",
                path: path.clone(),
                source,
            })?;
            files.extend(listed);
        } else if corpus::is_markdown(&path) && path.exists() {
            files.insert(path);
        }
    }
    let covered = |doc: &str| {
        paths.iter().any(|p| {
            doc.strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    };
    let (within, outside): (HashMap<_, _>, HashMap<_, _>) =
        known.into_iter().partition(|(path, _)| covered(path));
    let files: Vec<_> = files.into_iter().collect();
    let (docs, report) = read_documents(corpus_dir, &files);
    let mut diff = diff(docs, &within);
    diff.outside = outside.len();
    Ok((diff, report))
}

/// Reads `paths`: the documents, and a report of what was read, skipped
/// and read without its front matter.
fn read_documents(corpus_dir: &Path, paths: &[std::path::PathBuf]) -> (Vec<Document>, BuildReport) {
    let mut docs = Vec::with_capacity(paths.len());
    let mut skipped = Vec::new();
    for path in paths {
        match corpus::read_document(corpus_dir, path) {
            Ok(doc) => docs.push(doc),
            Err(skip) => skipped.push(skip),
        }
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
        scanned: paths.len(),
        skipped,
        warnings,
        ..BuildReport::default()
    };
    (docs, report)
}

fn settings_identity(config: &Config) -> String {
    format!(
        "chunker=v{};max_tokens={};overlap_tokens={}",
        chunk::CHUNKER_VERSION,
        config.chunk.max_tokens,
        config.chunk.overlap_tokens
    )
}

/// This build's identity. The local model's file hash is reused from the
/// index while the files' stamp matches (computing it hashes the files); a
/// remote model's dimension is known once its first vectors arrive (0 until
/// then), and the file hash of a local build it adds to is kept.
fn identify(
    config: &Config,
    stored: &Stored,
    model_stamp: Option<String>,
) -> Result<Identity, IndexError> {
    let settings = settings_identity(config);
    let model = embed::model_name(config);
    let Some(model_stamp) = model_stamp else {
        let same = stored
            .model
            .as_deref()
            .is_some_and(|m| embed::same_model(m, &model));
        let kept = |v: &Option<String>| v.clone().filter(|_| same).unwrap_or_default();
        return Ok(Identity {
            model_stamp: kept(&stored.model_stamp),
            model_files: kept(&stored.model_files),
            model,
            dimensions: 0,
            settings,
        });
    };
    let model_files = match &stored.model_stamp {
        Some(stamp) if *stamp == model_stamp => stored.model_files.clone(),
        _ => None,
    };
    let model_files = match model_files.filter(|f| !f.is_empty()) {
        Some(files) => files,
        None => embed::model_files_hash(config)?,
    };
    Ok(Identity {
        model_stamp,
        model,
        dimensions: embed::local_dimensions(config)?,
        model_files,
        settings,
    })
}

/// Why every document is embedded again, when it is: asked for, the local
/// model's files or the chunk settings changed. Another model (name, or
/// dimension when both are known) is an error: re-embedding a whole corpus
/// is asked for with `--rebuild`, not done because a setting changed.
fn rebuild_reason(
    requested: bool,
    stored: &Stored,
    identity: &Identity,
) -> Result<Option<String>, IndexError> {
    if requested {
        return Ok(Some("--rebuild".into()));
    }
    let Some(model) = stored.model.as_deref().filter(|_| stored.committed) else {
        return Ok(None);
    };
    let known = (identity.dimensions > 0).then_some(identity.dimensions);
    let other_dimensions = matches!((stored.dimensions, known), (Some(a), Some(b)) if a != b);
    if !embed::same_model(model, &identity.model) || other_dimensions {
        return Err(IndexError::ModelMismatch {
            index: describe_model(model, stored.dimensions, None),
            now: "now embeds passages with",
            configured: describe_model(&identity.model, known, None),
        });
    }
    let files = stored.model_files.as_deref().unwrap_or_default();
    if !files.is_empty() && !identity.model_files.is_empty() && files != identity.model_files {
        return Ok(Some("the embedding model changed".into()));
    }
    if stored.settings.as_deref() != Some(identity.settings.as_str()) {
        return Ok(Some("the [chunk] settings changed".into()));
    }
    Ok(None)
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
/// embedder (a remote one is ready at once). What `models` holds already is
/// used as it is. Returns the embedder (none when nothing is pending).
fn chunk_while_loading(
    config: &Config,
    pending: &mut [Pending],
    models: &mut Models,
) -> Result<Option<Result<Embedder, EmbedError>>, chunk::ChunkError> {
    if pending.is_empty() {
        return Ok(None);
    }
    let loaded = models.embedder.take();
    std::thread::scope(|scope| {
        let loader = loaded
            .is_none()
            .then(|| scope.spawn(|| Embedder::begin(config)));
        let tokenizer = match &models.tokenizer {
            Some(tokenizer) => tokenizer.clone(),
            None => std::sync::Arc::new(embed::load_tokenizer(config).map_err(|e| {
                chunk::ChunkError::Tokenizer {
                    path: embed::tokenizer_path(config).display().to_string(),
                    message: e.to_string(),
                }
            })?),
        };
        models.tokenizer = Some(tokenizer.clone());
        let chunker = Chunker::with_tokenizer(tokenizer.clone(), &config.chunk)?;
        pending
            .par_iter_mut()
            .for_each(|p| p.chunks = chunker.chunk(&p.doc.body));
        let Some(loader) = loader else {
            return Ok(loaded.map(Ok));
        };
        let loading = loader
            .join()
            .unwrap_or_else(|_| Err(EmbedError::Run("loading the model panicked".into())));
        Ok(Some(
            loading.and_then(|loading| loading.finish(config, &tokenizer)),
        ))
    })
}

/// The vectors of the pending chunks, in order: kept from the index where
/// a chunk's embedded text is indexed already, to be embedded otherwise.
#[derive(Default)]
struct Reuse {
    /// One per pending chunk; `None` until embedded.
    vectors: Vec<Option<Vec<f32>>>,
    /// What the model embeds, in order of the `None`s.
    texts: Vec<String>,
    /// Their tokens.
    tokens: usize,
    reused: usize,
}

impl Reuse {
    fn of(pending: &[Pending], stored: Vec<StoredChunk>) -> Reuse {
        let stored: HashMap<String, Vec<f32>> = stored
            .into_iter()
            .map(|c| {
                (
                    chunk::embedding_text(&c.title, &c.heading, &c.text),
                    c.vector,
                )
            })
            .collect();
        let mut reuse = Reuse::default();
        for p in pending {
            let title = p.doc.display_title();
            for c in &p.chunks {
                let text = chunk::embedding_text(&title, &c.heading_path, &c.text);
                match stored.get(&text) {
                    Some(vector) => {
                        reuse.vectors.push(Some(vector.clone()));
                        reuse.reused += 1;
                    }
                    None => {
                        reuse.vectors.push(None);
                        reuse.texts.push(text);
                        reuse.tokens += c.tokens;
                    }
                }
            }
        }
        reuse
    }

    /// Every pending chunk's vector, the `embedded` ones (in the order of
    /// `texts`) in the gaps.
    fn fill(&mut self, embedded: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        let mut embedded = embedded.into_iter();
        std::mem::take(&mut self.vectors)
            .into_iter()
            .map_while(|v| v.or_else(|| embedded.next()))
            .collect()
    }
}

/// Embeds `texts` with the first session plus as many more as pay off (or
/// through the server), into vectors of the index's `dimensions` when it has some.
fn embed_texts(
    config: &Config,
    first_session: Option<Result<Embedder, EmbedError>>,
    texts: &[String],
    (options, sessions): (&BuildOptions, usize),
    dimensions: Option<usize>,
) -> Result<Embedded, EmbedError> {
    let mut started = Instant::now();
    let mut embedded = Embedded::default();
    // A model that failed to load matters only when there is text to embed.
    let first_session = match first_session {
        Some(Ok(embedder)) if texts.is_empty() => {
            embedded.embedder = Some(embedder);
            None
        }
        Some(_) if texts.is_empty() => None,
        loaded => loaded,
    };
    if let Some(embedder) = first_session {
        let mut embedder = embedder?;
        embedder.expect_dimensions(dimensions);
        embedder.prepare(config, sessions)?;
        embedded.model_load_seconds = started.elapsed().as_secs_f64();
        started = Instant::now();
        let bar = progress_bar(options.progress, texts.len() as u64, "embedding");
        embedded.vectors = embed::timed("embedding", || {
            embedder.embed_passages(texts, |n| bar.inc(n as u64))
        })?;
        bar.finish_and_clear();
        embedded.embedder = Some(embedder);
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
        let stored = Stored::from_meta(|key| Ok(meta.get(key).cloned()))?;
        let (Some(model), Some(settings)) = (stored.model, stored.settings) else {
            return Err(IndexError::Missing(PathBuf::from(at)));
        };
        Ok(Export {
            identity: Identity {
                model_stamp: stored.model_stamp.unwrap_or_default(),
                model,
                dimensions: recorded_dimensions(meta.get("dimensions").cloned()),
                model_files: stored.model_files.unwrap_or_default(),
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
    pub(super) fn into_pending(mut self) -> (Identity, Vec<Pending>, Vec<Vec<f32>>) {
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
