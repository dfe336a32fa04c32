//! The index under `index/`: a SQLite catalogue (documents, chunks, vectors,
//! BM25 terms) plus a usearch HNSW file derived from it.
//!
//! `build` is incremental and all-or-nothing: every change of one run lands in
//! a single SQLite transaction, and the HNSW file it refers to is written under
//! a new name before that commit, so a crash leaves the old index or the new one.

pub mod store;
pub mod terms;
pub mod vectors;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rayon::prelude::*;

use crate::chunk::{self, Chunker};
use crate::config::Config;
use crate::corpus::{self, Document, Skipped};
use crate::embed::{self, EmbedError, Embedder};
use store::{NewChunk, NewDocument, Store};
use vectors::Vectors;

pub use store::ChunkRow;

const LOCK_FILE: &str = ".lock";
const VECTORS_PREFIX: &str = "vectors-";
const VECTORS_SUFFIX: &str = ".usearch";

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
    Chunk(#[from] chunk::ChunkError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the index in {path} failed: {detail}")]
    Write { path: PathBuf, detail: String },
}

impl IndexError {
    pub fn exit_code(&self) -> u8 {
        match self {
            IndexError::Embed(e) => e.exit_code(),
            IndexError::Missing(_) | IndexError::Corrupt { .. } | IndexError::Outdated(_) => {
                crate::exit::INDEX
            }
            _ => crate::exit::FAILURE,
        }
    }
}

fn settings_identity(config: &Config) -> String {
    format!(
        "chunker=v{};max_tokens={};overlap_tokens={}",
        chunk::CHUNKER_VERSION,
        config.chunk.max_tokens,
        config.chunk.overlap_tokens
    )
}

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

fn db_path(dir: &Path) -> PathBuf {
    dir.join(store::DB_FILE)
}

fn corrupt(path: &Path, detail: impl ToString) -> IndexError {
    IndexError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// One corpus document waiting to be (re)indexed.
struct Pending {
    doc: Document,
    chunks: Vec<chunk::Chunk>,
}

/// The embedding model and chunk settings an index is built with: a change of
/// either invalidates every vector.
struct Identity {
    /// Sizes and times of the model files: while it matches, the model's
    /// identity is read from the catalogue instead of hashing the files again.
    model_stamp: String,
    model: String,
    settings: String,
}

impl Identity {
    fn full(&self) -> String {
        format!("{};{}", self.model, self.settings)
    }
}

/// The corpus against the catalogue: what to embed and what to remove.
#[derive(Default)]
struct Diff {
    /// New and changed documents.
    pending: Vec<Pending>,
    /// Catalogue ids of the documents deleted or changed since the last build.
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

/// Everything one build changes, written in a single SQLite transaction.
struct Changes<'a> {
    full_rebuild: bool,
    stale: &'a [i64],
    pending: &'a [Pending],
    vectors: &'a [Vec<f32>],
    /// The HNSW file the catalogue refers to now, if any.
    current_vectors: Option<&'a str>,
}

/// A failure while writing the catalogue or the HNSW file; an
/// [`IndexError::Write`] once tied to the index folder.
struct WriteFailure(String);

impl From<store::StoreError> for WriteFailure {
    fn from(e: store::StoreError) -> Self {
        WriteFailure(e.to_string())
    }
}

impl From<vectors::VectorError> for WriteFailure {
    fn from(e: vectors::VectorError) -> Self {
        WriteFailure(e.to_string())
    }
}

impl WriteFailure {
    fn at(self, index_dir: &Path) -> IndexError {
        IndexError::Write {
            path: index_dir.to_path_buf(),
            detail: self.0,
        }
    }
}

/// Brings the index in line with the corpus, re-embedding only what changed.
pub fn build(config: &Config, options: &BuildOptions) -> Result<BuildReport, IndexError> {
    let started = Instant::now();
    let corpus_dir = config.corpus_dir();
    let index_dir = config.index_dir();
    if !corpus_dir.is_dir() {
        return Err(IndexError::NoCorpus(corpus_dir));
    }
    let _lock = lock_index_dir(&index_dir)?;
    let (docs, skipped) = scan_corpus(&corpus_dir)?;
    let warnings = docs
        .iter()
        .filter_map(|d| {
            d.warning.as_ref().map(|reason| Skipped {
                rel_path: d.rel_path.clone(),
                reason: reason.clone(),
            })
        })
        .collect();
    let mut report = BuildReport {
        documents: docs.len(),
        skipped,
        warnings,
        ..BuildReport::default()
    };

    // Checked before anything is written, so a missing install changes nothing.
    let model_stamp = embed::model_files_stamp(config)?;
    if options.rebuild {
        remove_index_files(&index_dir);
    }
    let db = db_path(&index_dir);
    let store = Store::open_rw(&db).map_err(|e| corrupt(&db, e))?;
    report.migrated = store.migrated().map(str::to_string);
    let identity = identify(config, &store, &db, model_stamp)?;
    let stored_identity = store.meta("identity").map_err(|e| corrupt(&db, e))?;
    report.rebuilt = rebuild_reason(options.rebuild, stored_identity.as_deref(), &identity);
    let full_rebuild = report.rebuilt.is_some();

    let known = if full_rebuild {
        Default::default()
    } else {
        store.documents().map_err(|e| corrupt(&db, e))?
    };
    let mut diff = diff(docs, &known);
    report.added = diff.added;
    report.changed = diff.changed;
    report.deleted = diff.deleted;
    report.unchanged = diff.unchanged;
    let current_vectors = store.meta("vectors_file").map_err(|e| corrupt(&db, e))?;
    let nothing_to_do = diff.pending.is_empty() && diff.stale.is_empty() && !full_rebuild;
    if nothing_to_do && stored_identity.is_some() && vectors_usable(&index_dir, &store) {
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

    let changes = Changes {
        full_rebuild,
        stale: &diff.stale,
        pending: &diff.pending,
        vectors: &embedded.vectors,
        current_vectors: current_vectors.as_deref(),
    };
    let vectors_file = write_index(&store, &index_dir, &identity, &changes)?;
    remove_stale_vector_files(&index_dir, &vectors_file);
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Creates the index folder and takes its lock (held until the guard drops).
fn lock_index_dir(index_dir: &Path) -> Result<crate::lock::Lock, IndexError> {
    std::fs::create_dir_all(index_dir).map_err(|source| IndexError::Io {
        what: "cannot create index folder",
        path: index_dir.to_path_buf(),
        source,
    })?;
    Ok(crate::lock::Lock::acquire(index_dir, LOCK_FILE, "index")?)
}

/// The corpus's readable documents, and the files skipped with the reason.
fn scan_corpus(corpus_dir: &Path) -> Result<(Vec<Document>, Vec<Skipped>), IndexError> {
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
    Ok((docs, skipped))
}

/// This build's identity; the model's is reused from the catalogue while the
/// model files' stamp matches (computing it hashes the files).
fn identify(
    config: &Config,
    store: &Store,
    db: &Path,
    model_stamp: String,
) -> Result<Identity, IndexError> {
    let cached = match store.meta("model_stamp").map_err(|e| corrupt(db, e))? {
        Some(stamp) if stamp == model_stamp => store.meta("model").map_err(|e| corrupt(db, e))?,
        _ => None,
    };
    let model = match cached {
        Some(model) => model,
        None => embed::model_identity(config)?,
    };
    Ok(Identity {
        model_stamp,
        model,
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

/// Compares the corpus with the documents the catalogue knows (by content hash).
fn diff(docs: Vec<Document>, known: &HashMap<String, store::DocRow>) -> Diff {
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

/// Writes `changes` in one transaction: a crash leaves the old index or the
/// new one. The HNSW file the new catalogue refers to is written, under a new
/// generation's name, before the commit. Returns that file's name.
fn write_index(
    store: &Store,
    index_dir: &Path,
    identity: &Identity,
    changes: &Changes,
) -> Result<String, IndexError> {
    store
        .begin()
        .map_err(|e| WriteFailure::from(e).at(index_dir))?;
    match apply_changes(store, index_dir, identity, changes) {
        Ok(vectors_file) => {
            store
                .commit()
                .map_err(|e| WriteFailure::from(e).at(index_dir))?;
            Ok(vectors_file)
        }
        Err(failure) => {
            store.rollback();
            Err(failure.at(index_dir))
        }
    }
}

/// The body of [`write_index`]'s transaction.
fn apply_changes(
    store: &Store,
    index_dir: &Path,
    identity: &Identity,
    changes: &Changes,
) -> Result<String, WriteFailure> {
    let removed = remove_documents(store, changes.full_rebuild, changes.stale)?;
    let now = corpus::now_rfc3339();
    let added = insert_documents(store, changes.pending, changes.vectors, &now)?;
    let previous = (!changes.full_rebuild)
        .then_some(changes.current_vectors)
        .flatten();
    let vectors = updated_vectors(store, index_dir, previous, &removed, &added)?;
    let (vectors_file, generation) = save_vectors(store, index_dir, &vectors)?;
    store.set_meta(&[
        ("vectors_file", &vectors_file),
        ("vectors_count", &vectors.len().to_string()),
        ("vectors_generation", &generation.to_string()),
        ("identity", &identity.full()),
        ("model", &identity.model),
        ("model_stamp", &identity.model_stamp),
        ("settings", &identity.settings),
        ("built_at", &now),
    ])?;
    Ok(vectors_file)
}

/// Deletes the stale documents (everything, on a full rebuild); returns the ids
/// of their chunks.
fn remove_documents(
    store: &Store,
    full_rebuild: bool,
    stale: &[i64],
) -> Result<Vec<i64>, WriteFailure> {
    let mut removed_ids = Vec::new();
    if full_rebuild {
        store.clear()?;
        return Ok(removed_ids);
    }
    for &doc_id in stale {
        removed_ids.extend(store.chunk_ids_of(doc_id)?);
        store.delete_document(doc_id)?;
    }
    Ok(removed_ids)
}

/// Inserts the pending documents with their chunks, terms and vectors; returns
/// each new chunk's id with its vector.
fn insert_documents<'v>(
    store: &Store,
    pending: &[Pending],
    vectors: &'v [Vec<f32>],
    now: &str,
) -> Result<Vec<(i64, &'v [f32])>, WriteFailure> {
    let mut added: Vec<(i64, &[f32])> = Vec::with_capacity(vectors.len());
    let mut next_vector = vectors.iter();
    for p in pending {
        let doc = &p.doc;
        let title = doc.display_title();
        let modified = doc
            .modified
            .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        let source = doc.source();
        let doc_id = store.insert_document(&NewDocument {
            path: &doc.rel_path,
            hash: &doc.hash,
            title: &title,
            source: &source,
            sections: &doc.front.sections,
            modified,
            indexed_at: now,
        })?;
        for c in &p.chunks {
            let vector = next_vector
                .next()
                .ok_or_else(|| WriteFailure("fewer vectors than chunks".into()))?;
            let terms = terms::FieldTerms::of(&title, &source, &c.heading_path, &c.text);
            let id = store.insert_chunk(
                doc_id,
                &NewChunk {
                    ordinal: c.ordinal,
                    start: c.start,
                    end: c.end,
                    heading: &c.heading_path,
                    text: &c.text,
                    tokens: c.tokens,
                    terms: &terms,
                    vector,
                },
            )?;
            added.push((id, vector));
        }
    }
    Ok(added)
}

/// The HNSW graph of the new catalogue: the `previous` file updated when it is
/// intact, otherwise rebuilt from the catalogue's vectors (no re-embedding).
fn updated_vectors(
    store: &Store,
    index_dir: &Path,
    previous: Option<&str>,
    removed: &[i64],
    added: &[(i64, &[f32])],
) -> Result<Vectors, WriteFailure> {
    let (_, total_chunks, _) = store.counts()?;
    let previous = previous.and_then(|name| {
        let expected: usize = store.meta("vectors_count").ok()??.parse().ok()?;
        Vectors::load(&index_dir.join(name), expected).ok()
    });
    let vectors = match previous {
        Some(mut v) => {
            for id in removed {
                v.remove(*id)?;
            }
            for (id, vector) in added {
                v.add(*id, vector)?;
            }
            v
        }
        None => vectors_of_catalogue(store, total_chunks as usize)?,
    };
    if vectors.len() != total_chunks as usize {
        return Err(WriteFailure(format!(
            "vector index holds {} vectors for {total_chunks} chunks",
            vectors.len()
        )));
    }
    Ok(vectors)
}

/// A new HNSW graph of every vector in the catalogue.
fn vectors_of_catalogue(store: &Store, capacity: usize) -> Result<Vectors, WriteFailure> {
    let mut v = Vectors::new(capacity)?;
    let mut failure = None;
    store.for_each_vector(|id, vector| {
        if failure.is_none() {
            if let Err(e) = v.add(id, vector) {
                failure = Some(e);
            }
        }
    })?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(v),
    }
}

/// Saves `vectors` under the next generation's name, synced to disk; returns
/// the file name and the generation.
fn save_vectors(
    store: &Store,
    index_dir: &Path,
    vectors: &Vectors,
) -> Result<(String, u64), WriteFailure> {
    let generation: u64 = store
        .meta("vectors_generation")
        .ok()
        .flatten()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
        + 1;
    let name = format!("{VECTORS_PREFIX}{generation}{VECTORS_SUFFIX}");
    let path = index_dir.join(&name);
    vectors.save(&path)?;
    sync_file(&path);
    Ok((name, generation))
}

fn vectors_usable(index_dir: &Path, store: &Store) -> bool {
    let (Ok(Some(name)), Ok(Some(count))) =
        (store.meta("vectors_file"), store.meta("vectors_count"))
    else {
        return false;
    };
    let Ok(count) = count.parse() else {
        return false;
    };
    Vectors::view(&index_dir.join(name), count).is_ok()
}

fn sync_file(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.sync_all();
    }
}

/// Deletes vector files no committed catalogue refers to (left by a crash or
/// replaced by this run).
fn remove_stale_vector_files(dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(VECTORS_PREFIX) && name.ends_with(VECTORS_SUFFIX) && name != keep {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn remove_index_files(dir: &Path) {
    let db = db_path(dir);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    remove_stale_vector_files(dir, "");
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

/// A built index opened for searching.
pub struct Index {
    pub store: Store,
    pub vectors: Vectors,
    pub dir: PathBuf,
    /// The HNSW file `vectors` maps, as the catalogue names it.
    vectors_file: String,
    /// The catalogue file this connection opened (device, inode): `index
    /// --rebuild` replaces the file rather than writing into it.
    catalogue: Option<(u64, u64)>,
    built_at: String,
}

impl Index {
    /// Opens the index read-only: the catalogue and a memory-mapped HNSW file.
    pub fn open(config: &Config) -> Result<Index, IndexError> {
        Index::open_dir(&config.index_dir())
    }

    /// [`Index::open`] of the index in `dir`.
    pub fn open_dir(dir: &Path) -> Result<Index, IndexError> {
        let dir = dir.to_path_buf();
        let db = db_path(&dir);
        if !db.is_file() {
            return Err(IndexError::Missing(dir));
        }
        let store = Store::open_ro(&db).map_err(|e| match e {
            store::StoreError::Outdated { .. } => IndexError::Outdated(dir.clone()),
            e => corrupt(&db, e),
        })?;
        // The catalogue's identity before reading it: if it is replaced
        // meanwhile, the next search sees a changed identity and reopens.
        let catalogue = file_identity(&db);
        let name = store
            .meta("vectors_file")
            .map_err(|e| corrupt(&db, e))?
            .ok_or_else(|| IndexError::Missing(dir.clone()))?;
        let count: usize = store
            .meta("vectors_count")
            .map_err(|e| corrupt(&db, e))?
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| corrupt(&db, "no vector count recorded"))?;
        let built_at = store.meta("built_at").ok().flatten().unwrap_or_default();
        let path = dir.join(&name);
        if !path.is_file() {
            return Err(corrupt(&path, "missing"));
        }
        let vectors = Vectors::view(&path, count).map_err(|e| corrupt(&path, e))?;
        Ok(Index {
            store,
            vectors,
            dir,
            vectors_file: name,
            catalogue,
            built_at,
        })
    }

    /// Names the committed state this index shows: its build time and HNSW
    /// file. Two opens of one commit give the same generation.
    pub fn generation(&self) -> String {
        let file = self.vectors_file.trim_end_matches(VECTORS_SUFFIX);
        format!("{}/{file}", self.built_at)
    }

    /// Whether `ragmap index` has committed since this index was opened, so a
    /// long-lived reader (the server) should open it again. While a rebuild
    /// has removed the catalogue and not yet committed, the open one stays
    /// current: it is still whole.
    pub fn is_stale(&self) -> bool {
        let db = db_path(&self.dir);
        match file_identity(&db) {
            None => false,
            Some(id) if Some(id) != self.catalogue => true,
            Some(_) => self
                .store
                .meta("vectors_file")
                .ok()
                .flatten()
                .is_some_and(|name| name != self.vectors_file),
        }
    }

    /// Starts a read of one committed state: until the returned snapshot is
    /// dropped, every catalogue read sees the commit this index's HNSW file
    /// belongs to, whatever `ragmap index` commits meanwhile. `None` when a
    /// newer commit already landed (reopen and try again).
    pub fn snapshot(&self) -> Result<Option<store::Snapshot<'_>>, IndexError> {
        let db = db_path(&self.dir);
        let snapshot = self.store.snapshot().map_err(|e| corrupt(&db, e))?;
        let name = self
            .store
            .meta("vectors_file")
            .map_err(|e| corrupt(&db, e))?;
        Ok((name.as_deref() == Some(self.vectors_file.as_str())).then_some(snapshot))
    }
}

#[cfg(unix)]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|_| (0, 0))
}

/// What `ragmap status` shows about the index.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub documents: i64,
    pub chunks: i64,
    pub tokens: i64,
    pub bytes_on_disk: u64,
    pub model: Option<String>,
    pub settings: Option<String>,
    pub built_at: Option<String>,
    /// Corpus documents added, changed or deleted since the last build.
    pub changed_since: Vec<String>,
}

pub fn status(config: &Config) -> Result<Status, IndexError> {
    let index = Index::open(config)?;
    let db = db_path(&index.dir);
    let (documents, chunks, tokens) = index.store.counts().map_err(|e| corrupt(&db, e))?;
    let meta = |k: &str| index.store.meta(k).ok().flatten();
    let bytes_on_disk = std::fs::read_dir(&index.dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let known = index.store.documents().map_err(|e| corrupt(&db, e))?;
    let corpus_dir = config.corpus_dir();
    let mut changed_since = Vec::new();
    let mut seen = HashSet::new();
    for path in corpus::list_markdown(&corpus_dir).unwrap_or_default() {
        let rel = corpus::rel_path(&corpus_dir, &path);
        let hash = std::fs::read(&path)
            .map(|b| corpus::content_hash(&b))
            .unwrap_or_default();
        match known.get(&rel) {
            Some(row) if row.hash == hash => {}
            Some(_) => changed_since.push(format!("changed: {rel}")),
            None => changed_since.push(format!("new: {rel}")),
        }
        seen.insert(rel);
    }
    for path in known.keys().filter(|p| !seen.contains(*p)) {
        changed_since.push(format!("deleted: {path}"));
    }
    changed_since.sort();
    Ok(Status {
        documents,
        chunks,
        tokens,
        bytes_on_disk,
        model: meta("model"),
        settings: meta("settings"),
        built_at: meta("built_at"),
        changed_since,
    })
}
