//! The index under `index/`: a SQLite catalogue (documents, chunks, vectors,
//! BM25 terms) plus a usearch HNSW file derived from it.
//!
//! `build` is incremental and all-or-nothing: every change of one run lands in
//! a single SQLite transaction, and the HNSW file it refers to is written under
//! a new name before that commit, so a crash leaves the old index or the new one.

pub mod store;
pub mod terms;
pub mod vectors;

use std::collections::HashSet;
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
    #[serde(skip)]
    pub skipped: Vec<Skipped>,
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

/// Brings the index in line with the corpus, re-embedding only what changed.
pub fn build(config: &Config, options: &BuildOptions) -> Result<BuildReport, IndexError> {
    let started = Instant::now();
    let corpus_dir = config.corpus_dir();
    let index_dir = config.index_dir();
    if !corpus_dir.is_dir() {
        return Err(IndexError::NoCorpus(corpus_dir));
    }
    std::fs::create_dir_all(&index_dir).map_err(|source| IndexError::Io {
        what: "cannot create index folder",
        path: index_dir.clone(),
        source,
    })?;
    let _lock = crate::lock::Lock::acquire(&index_dir, LOCK_FILE, "index")?;

    let mut report = BuildReport::default();
    let paths = corpus::list_markdown(&corpus_dir).map_err(|source| IndexError::Io {
        what: "cannot list",
        path: corpus_dir.clone(),
        source,
    })?;
    let mut docs = Vec::with_capacity(paths.len());
    for path in &paths {
        match corpus::read_document(&corpus_dir, path) {
            Ok(doc) => docs.push(doc),
            Err(skipped) => report.skipped.push(skipped),
        }
    }
    if docs.is_empty() {
        return Err(IndexError::EmptyCorpus(corpus_dir));
    }
    report.documents = docs.len();

    // Checked before anything is written, so a missing install changes nothing.
    let model_stamp = embed::model_files_stamp(config)?;
    let db = db_path(&index_dir);
    if options.rebuild {
        remove_index_files(&index_dir);
    }
    let store = match Store::open_rw(&db) {
        Ok(s) => s,
        Err(e) => return Err(corrupt(&db, e)),
    };
    let cached_identity = match store.meta("model_stamp").map_err(|e| corrupt(&db, e))? {
        Some(stamp) if stamp == model_stamp => store.meta("model").map_err(|e| corrupt(&db, e))?,
        _ => None,
    };
    let model_identity = match cached_identity {
        Some(identity) => identity,
        None => embed::model_identity(config)?,
    };

    let identity = format!("{model_identity};{}", settings_identity(config));
    let stored_identity = store.meta("identity").map_err(|e| corrupt(&db, e))?;
    let mut full_rebuild = options.rebuild;
    if options.rebuild {
        report.rebuilt = Some("--rebuild".into());
    } else if let Some(old) = stored_identity.as_deref().filter(|old| *old != identity) {
        let reason = if old.split(';').next() != identity.split(';').next() {
            "the embedding model changed"
        } else {
            "the [chunk] settings changed"
        };
        report.rebuilt = Some(reason.into());
        full_rebuild = true;
    }

    let known = if full_rebuild {
        Default::default()
    } else {
        store.documents().map_err(|e| corrupt(&db, e))?
    };
    let present: HashSet<&str> = docs.iter().map(|d| d.rel_path.as_str()).collect();
    let deleted: Vec<&store::DocRow> = known
        .values()
        .filter(|d| !present.contains(d.path.as_str()))
        .collect();
    report.deleted = deleted.len();

    let mut pending = Vec::new();
    for doc in docs {
        match known.get(&doc.rel_path) {
            Some(row) if row.hash == doc.hash => report.unchanged += 1,
            Some(_) => {
                report.changed += 1;
                pending.push(Pending {
                    doc,
                    chunks: Vec::new(),
                });
            }
            None => {
                report.added += 1;
                pending.push(Pending {
                    doc,
                    chunks: Vec::new(),
                });
            }
        }
    }

    let current_vectors = store.meta("vectors_file").map_err(|e| corrupt(&db, e))?;
    let nothing_to_do = pending.is_empty() && deleted.is_empty() && !full_rebuild;
    if nothing_to_do
        && current_vectors.is_some()
        && stored_identity.is_some()
        && vectors_usable(&index_dir, &store)
    {
        report.total_seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    // The first embedding session loads while the documents are split (on
    // every core: counting tokens for the splitter is the largest cost after
    // the model); both take seconds, and an incremental run needs both.
    let chunk_started = Instant::now();
    let (chunked, first_session) = std::thread::scope(|scope| {
        let loader = (!pending.is_empty()).then(|| scope.spawn(|| Embedder::load(config)));
        let chunked = Chunker::new(&embed::tokenizer_path(config), &config.chunk).map(|chunker| {
            pending
                .par_iter_mut()
                .for_each(|p| p.chunks = chunker.chunk(&p.doc.body));
        });
        let session = loader.map(|handle| {
            handle
                .join()
                .unwrap_or_else(|_| Err(EmbedError::Run("loading the model panicked".into())))
        });
        (chunked, session)
    });
    chunked?;
    report.chunk_seconds = chunk_started.elapsed().as_secs_f64();
    let texts: Vec<String> = pending
        .iter()
        .flat_map(|p| {
            let title = p.doc.display_title();
            p.chunks
                .iter()
                .map(move |c| chunk::embedding_text(&title, &c.heading_path, &c.text))
        })
        .collect();
    report.chunks_embedded = texts.len();
    report.tokens_embedded = pending
        .iter()
        .flat_map(|p| &p.chunks)
        .map(|c| c.tokens)
        .sum();

    let mut embed_started = Instant::now();
    let embedded = match first_session {
        Some(embedder) if !texts.is_empty() => {
            let mut embedder = embedder?;
            embedder.add_sessions(config, Embedder::sessions_for(config, texts.len()))?;
            report.model_load_seconds = embed_started.elapsed().as_secs_f64();
            embed_started = Instant::now();
            let bar = progress_bar(options.progress, texts.len() as u64, "embedding");
            let vectors = embedder.embed_passages(&texts, |n| bar.inc(n as u64))?;
            bar.finish_and_clear();
            vectors
        }
        _ => Vec::new(),
    };
    report.embed_seconds = embed_started.elapsed().as_secs_f64();
    drop(texts);

    let write_err = |e: &dyn std::fmt::Display| IndexError::Write {
        path: index_dir.clone(),
        detail: e.to_string(),
    };

    store.begin().map_err(|e| write_err(&e))?;
    let result = (|| -> Result<String, IndexError> {
        let mut removed_ids = Vec::new();
        if full_rebuild {
            store.clear().map_err(|e| write_err(&e))?;
        } else {
            for row in deleted
                .iter()
                .copied()
                .chain(pending.iter().filter_map(|p| known.get(&p.doc.rel_path)))
            {
                removed_ids.extend(store.chunk_ids_of(row.id).map_err(|e| write_err(&e))?);
                store.delete_document(row.id).map_err(|e| write_err(&e))?;
            }
        }
        let now = corpus::now_rfc3339();
        let mut added_vectors: Vec<(i64, &[f32])> = Vec::with_capacity(embedded.len());
        let mut next_vector = embedded.iter();
        for p in &pending {
            let doc = &p.doc;
            let modified = doc
                .modified
                .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64);
            let doc_id = store
                .insert_document(&NewDocument {
                    path: &doc.rel_path,
                    hash: &doc.hash,
                    title: &doc.display_title(),
                    source: &doc.source(),
                    sections: &doc.front.sections,
                    modified,
                    indexed_at: &now,
                })
                .map_err(|e| write_err(&e))?;
            for c in &p.chunks {
                let vector = next_vector
                    .next()
                    .ok_or_else(|| write_err(&"fewer vectors than chunks"))?;
                let terms = terms::index_text(&format!(
                    "{}\n{}\n{}",
                    doc.display_title(),
                    c.heading_path,
                    c.text
                ));
                let id = store
                    .insert_chunk(
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
                    )
                    .map_err(|e| write_err(&e))?;
                added_vectors.push((id, vector));
            }
        }

        // Reuse the current HNSW graph when it is intact; otherwise rebuild it
        // from the catalogue's vectors (no re-embedding needed).
        let (_, total_chunks, _) = store.counts().map_err(|e| write_err(&e))?;
        let previous = (!full_rebuild)
            .then_some(current_vectors.as_deref())
            .flatten()
            .and_then(|name| {
                let expected: usize = store.meta("vectors_count").ok()??.parse().ok()?;
                Vectors::load(&index_dir.join(name), expected).ok()
            });
        let vectors = match previous {
            Some(mut v) => {
                for id in &removed_ids {
                    v.remove(*id).map_err(|e| write_err(&e))?;
                }
                for (id, vector) in &added_vectors {
                    v.add(*id, vector).map_err(|e| write_err(&e))?;
                }
                v
            }
            None => {
                let mut v = Vectors::new(total_chunks as usize).map_err(|e| write_err(&e))?;
                let mut failure = None;
                store
                    .for_each_vector(|id, vector| {
                        if failure.is_none() {
                            if let Err(e) = v.add(id, vector) {
                                failure = Some(e);
                            }
                        }
                    })
                    .map_err(|e| write_err(&e))?;
                if let Some(e) = failure {
                    return Err(write_err(&e));
                }
                v
            }
        };
        if vectors.len() != total_chunks as usize {
            return Err(write_err(&format!(
                "vector index holds {} vectors for {total_chunks} chunks",
                vectors.len()
            )));
        }
        let generation: u64 = store
            .meta("vectors_generation")
            .ok()
            .flatten()
            .and_then(|g| g.parse().ok())
            .unwrap_or(0)
            + 1;
        let name = format!("{VECTORS_PREFIX}{generation}{VECTORS_SUFFIX}");
        let path = index_dir.join(&name);
        vectors.save(&path).map_err(|e| write_err(&e))?;
        sync_file(&path);
        store
            .set_meta("vectors_file", &name)
            .map_err(|e| write_err(&e))?;
        store
            .set_meta("vectors_count", &vectors.len().to_string())
            .map_err(|e| write_err(&e))?;
        store
            .set_meta("vectors_generation", &generation.to_string())
            .map_err(|e| write_err(&e))?;
        store
            .set_meta("identity", &identity)
            .map_err(|e| write_err(&e))?;
        store
            .set_meta("model", &model_identity)
            .map_err(|e| write_err(&e))?;
        store
            .set_meta("model_stamp", &model_stamp)
            .map_err(|e| write_err(&e))?;
        store
            .set_meta("settings", &settings_identity(config))
            .map_err(|e| write_err(&e))?;
        store
            .set_meta("built_at", &now)
            .map_err(|e| write_err(&e))?;
        Ok(name)
    })();
    match result {
        Ok(name) => {
            store.commit().map_err(|e| write_err(&e))?;
            remove_stale_vector_files(&index_dir, &name);
        }
        Err(e) => {
            store.rollback();
            return Err(e);
        }
    }
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok(report)
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
}

impl Index {
    /// Opens the index read-only: the catalogue and a memory-mapped HNSW file.
    pub fn open(config: &Config) -> Result<Index, IndexError> {
        let dir = config.index_dir();
        let db = db_path(&dir);
        if !db.is_file() {
            return Err(IndexError::Missing(dir));
        }
        let store = Store::open_ro(&db).map_err(|e| corrupt(&db, e))?;
        let name = store
            .meta("vectors_file")
            .map_err(|e| corrupt(&db, e))?
            .ok_or_else(|| IndexError::Missing(dir.clone()))?;
        let count: usize = store
            .meta("vectors_count")
            .map_err(|e| corrupt(&db, e))?
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| corrupt(&db, "no vector count recorded"))?;
        let path = dir.join(&name);
        if !path.is_file() {
            return Err(corrupt(&path, "missing"));
        }
        let vectors = Vectors::view(&path, count).map_err(|e| corrupt(&path, e))?;
        Ok(Index {
            store,
            vectors,
            dir,
        })
    }
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
