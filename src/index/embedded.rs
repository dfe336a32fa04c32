//! The embedded index under `paths.index`: a SQLite catalogue ([`Store`]:
//! documents, chunks with their vectors, the BM25 full-text tables) plus a
//! usearch HNSW file ([`Vectors`]) derived from it. Nothing to install.
//!
//! A build writes every change in one SQLite transaction; the HNSW file the
//! new catalogue refers to is written under a new generation's name before
//! that commit, so a crash leaves the old index or the new one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::build::{Changes, Identity, StoredChunk, Target};
use super::store::{self, Snapshot as ReadTransaction, Store};
use super::vectors::{self, Vectors};
use super::{
    ChunkRow, Counts, Description, DocRow, FieldWeights, Index, IndexError, Pruning, SearchError,
    Snapshot, TermCounts, VectorSearch,
};

const LOCK_FILE: &str = ".lock";
const VECTORS_PREFIX: &str = "vectors-";
const VECTORS_SUFFIX: &str = ".usearch";

fn db_path(dir: &Path) -> PathBuf {
    dir.join(store::DB_FILE)
}

fn corrupt(path: &Path, detail: impl ToString) -> IndexError {
    IndexError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// An embedded index opened for searching.
pub struct Embedded {
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

impl Embedded {
    /// Opens the index in `dir` read-only: the catalogue and a memory-mapped HNSW file.
    pub fn open_dir(dir: &Path) -> Result<Embedded, IndexError> {
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
        let dimensions = stored_dimensions(&store).map_err(|e| corrupt(&db, e))?;
        let vectors = Vectors::view(&path, count, dimensions).map_err(|e| corrupt(&path, e))?;
        Ok(Embedded {
            store,
            vectors,
            dir,
            vectors_file: name,
            catalogue,
            built_at,
        })
    }

    /// Whether `ragmap index` has committed since this index was opened.
    /// While a rebuild has removed the catalogue and not yet committed, the
    /// open one stays current: it is still whole.
    fn is_stale(&self) -> bool {
        match file_identity(&db_path(&self.dir)) {
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

    /// Where a build writes: the index folder locked for this run. A
    /// `--rebuild` replaces everything in its one commit, so a run that fails
    /// before it (a remote embedding server gone) leaves the old index; only
    /// a catalogue that cannot be opened is removed first.
    pub(crate) fn target(
        config: &crate::config::Config,
        rebuild: bool,
    ) -> Result<Box<dyn Target>, IndexError> {
        let dir = config.index_dir();
        std::fs::create_dir_all(&dir).map_err(|source| IndexError::Io {
            what: "cannot create index folder",
            path: dir.clone(),
            source,
        })?;
        let lock = crate::lock::Lock::acquire(&dir, LOCK_FILE, "index")?;
        let db = db_path(&dir);
        let store = match Store::open_rw(&db) {
            Ok(store) => store,
            Err(_) if rebuild => {
                remove_index_files(&dir);
                Store::open_rw(&db).map_err(|e| corrupt(&db, e))?
            }
            Err(e) => return Err(corrupt(&db, e)),
        };
        Ok(Box::new(Writer {
            store,
            dir,
            _lock: lock,
        }))
    }
}

impl Index for Embedded {
    fn generation(&self) -> String {
        let file = self.vectors_file.trim_end_matches(VECTORS_SUFFIX);
        format!("{}/{file}", self.built_at)
    }

    fn refresh(&mut self) -> bool {
        if !self.is_stale() {
            return false;
        }
        match Embedded::open_dir(&self.dir) {
            Ok(fresh) => {
                *self = fresh;
                true
            }
            Err(_) => false,
        }
    }

    fn snapshot(&self) -> Result<Option<Box<dyn Snapshot + '_>>, IndexError> {
        let db = db_path(&self.dir);
        let transaction = self.store.snapshot().map_err(|e| corrupt(&db, e))?;
        let name = self
            .store
            .meta("vectors_file")
            .map_err(|e| corrupt(&db, e))?;
        if name.as_deref() != Some(self.vectors_file.as_str()) {
            return Ok(None);
        }
        Ok(Some(Box::new(Reading {
            index: self,
            _transaction: transaction,
        })))
    }

    fn counts(&self) -> Result<Counts, IndexError> {
        let (documents, chunks, tokens) = self
            .store
            .counts()
            .map_err(|e| corrupt(&db_path(&self.dir), e))?;
        Ok(Counts {
            documents,
            chunks,
            tokens,
        })
    }

    fn describe(&self) -> Result<Description, IndexError> {
        let meta = |k: &str| self.store.meta(k).ok().flatten();
        let bytes_on_disk = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        Ok(Description {
            location: self.dir.display().to_string(),
            bytes_on_disk,
            model: meta("model").map(|m| match super::legacy_model(&m) {
                Some((name, _)) => name.to_string(),
                None => m,
            }),
            dimensions: meta("dimensions").and_then(|d| d.parse().ok()),
            settings: meta("settings"),
            built_at: meta("built_at"),
        })
    }

    fn documents(&self) -> Result<HashMap<String, DocRow>, IndexError> {
        self.store
            .documents()
            .map_err(|e| corrupt(&db_path(&self.dir), e))
    }
}

/// One committed state of an embedded index: a read transaction on the
/// catalogue, and the HNSW file that commit names.
struct Reading<'i> {
    index: &'i Embedded,
    _transaction: ReadTransaction<'i>,
}

fn search_error(e: impl std::fmt::Display) -> SearchError {
    SearchError::new(format!(
        "searching the index failed: {e}; run `ragmap index --rebuild` if this persists"
    ))
}

impl Snapshot for Reading<'_> {
    fn vectors(&self) -> &dyn VectorSearch {
        &self.index.vectors
    }

    fn lexical_search(
        &self,
        terms: &[String],
        limit: usize,
        weights: &FieldWeights,
        pruning: Pruning,
        counts: &mut TermCounts,
    ) -> Result<Vec<(i64, f64)>, SearchError> {
        self.index
            .store
            .lexical_search_pruned(terms, limit, weights, pruning, counts)
            .map_err(search_error)
    }

    fn title_search(
        &self,
        names: &[String],
        limit: usize,
        weights: &FieldWeights,
    ) -> Result<Vec<(i64, f64)>, SearchError> {
        self.index
            .store
            .title_search(names, limit, weights)
            .map_err(search_error)
    }

    fn chunks_by_ids(&self, ids: &[i64]) -> Result<HashMap<i64, ChunkRow>, SearchError> {
        self.index.store.chunks_by_ids(ids).map_err(search_error)
    }

    fn first_chunk_of(&self, doc_id: i64) -> Result<Option<i64>, SearchError> {
        self.index
            .store
            .first_chunk_of(doc_id)
            .map_err(search_error)
    }

    fn neighbours(
        &self,
        doc_id: i64,
        ordinal: i64,
        radius: i64,
    ) -> Result<Vec<ChunkRow>, SearchError> {
        self.index
            .store
            .neighbours(doc_id, ordinal, radius)
            .map_err(search_error)
    }
}

impl VectorSearch for Vectors {
    fn nearest(&self, query: &[f32], k: usize) -> Result<Vec<(i64, f32)>, SearchError> {
        self.search(query, k).map_err(search_error)
    }
}

/// Everything the embedded index in `dir` holds, read in one transaction,
/// for a copy ([`super::copy`]).
pub(crate) fn export(dir: &Path) -> Result<super::build::Export, IndexError> {
    let index = Embedded::open_dir(dir)?;
    let db = db_path(dir);
    let _transaction = index.store.snapshot().map_err(|e| corrupt(&db, e))?;
    let mut meta = HashMap::new();
    for key in [
        "model",
        "model_files",
        "model_stamp",
        "dimensions",
        "settings",
    ] {
        if let Some(value) = index.store.meta(key).map_err(|e| corrupt(&db, e))? {
            meta.insert(key.to_string(), value);
        }
    }
    let mut export = super::build::Export::new(&meta, &dir.display().to_string())?;
    let mut chunks = Vec::new();
    index
        .store
        .export(
            |id, path, hash, title, source, sections, modified| {
                export.document(id, path, hash, title, source, sections, modified)
            },
            |doc_id, chunk, vector| chunks.push((doc_id, chunk, vector)),
        )
        .map_err(|e| corrupt(&db, e))?;
    for (doc_id, chunk, vector) in chunks {
        export.chunk(doc_id, chunk, vector);
    }
    Ok(export)
}

/// The length of the vectors the catalogue's build recorded.
fn stored_dimensions(store: &Store) -> Result<usize, store::StoreError> {
    Ok(super::build::recorded_dimensions(store.meta("dimensions")?))
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

/// A build's side of the embedded index: the catalogue open for writing,
/// the folder locked until it drops.
struct Writer {
    store: Store,
    dir: PathBuf,
    _lock: crate::lock::Lock,
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

impl Target for Writer {
    fn meta(&self, key: &str) -> Result<Option<String>, IndexError> {
        self.store
            .meta(key)
            .map_err(|e| corrupt(&db_path(&self.dir), e))
    }

    fn documents(&self) -> Result<HashMap<String, DocRow>, IndexError> {
        self.store
            .documents()
            .map_err(|e| corrupt(&db_path(&self.dir), e))
    }

    fn is_whole(&self) -> bool {
        let (Ok(Some(name)), Ok(Some(count))) = (
            self.store.meta("vectors_file"),
            self.store.meta("vectors_count"),
        ) else {
            return false;
        };
        let (Ok(count), Ok(dimensions)) = (count.parse(), stored_dimensions(&self.store)) else {
            return false;
        };
        Vectors::view(&self.dir.join(name), count, dimensions).is_ok()
    }

    fn migrated(&self) -> Option<String> {
        self.store.migrated().map(str::to_string)
    }

    fn stored_chunks(&self, doc_ids: &[i64]) -> Result<Vec<StoredChunk>, IndexError> {
        let mut chunks = Vec::new();
        for &doc_id in doc_ids {
            self.store
                .for_each_chunk_of(doc_id, |title, heading, text, vector| {
                    chunks.push(StoredChunk {
                        title: title.to_string(),
                        heading: heading.to_string(),
                        text: text.to_string(),
                        vector: vector.to_vec(),
                    })
                })
                .map_err(|e| corrupt(&db_path(&self.dir), e))?;
        }
        Ok(chunks)
    }

    fn commit(&mut self, changes: &Changes) -> Result<(), IndexError> {
        let current = self.meta("vectors_file")?;
        let failed = |e: WriteFailure| e.at(&self.dir);
        self.store
            .begin()
            .map_err(|e| failed(WriteFailure::from(e)))?;
        let vectors_file = match self.apply(changes, current.as_deref()) {
            Ok(name) => name,
            Err(failure) => {
                self.store.rollback();
                return Err(failed(failure));
            }
        };
        self.store
            .commit()
            .map_err(|e| failed(WriteFailure::from(e)))?;
        remove_stale_vector_files(&self.dir, &vectors_file);
        Ok(())
    }
}

impl Writer {
    /// The body of [`Writer::commit`]'s transaction; returns the name of the
    /// HNSW file the new catalogue refers to.
    fn apply(&self, changes: &Changes, current: Option<&str>) -> Result<String, WriteFailure> {
        let removed = self.remove_documents(changes.full_rebuild, changes.stale)?;
        // The new chunk ids, in the order of `changes.vectors`.
        let mut ids: Vec<i64> = Vec::with_capacity(changes.vectors.len());
        changes.for_each_document(
            |doc, chunks| {
                let doc_id = self.store.insert_document(doc)?;
                for chunk in chunks {
                    ids.push(self.store.insert_chunk(doc_id, chunk)?);
                }
                Ok::<_, WriteFailure>(())
            },
            || WriteFailure("fewer vectors than chunks".into()),
        )?;
        let added: Vec<(i64, &[f32])> = ids
            .into_iter()
            .zip(changes.vectors.iter().map(Vec::as_slice))
            .collect();
        let previous = (!changes.full_rebuild).then_some(current).flatten();
        let vectors =
            self.updated_vectors(previous, &removed, &added, changes.identity.dimensions)?;
        let (vectors_file, generation) = self.save_vectors(&vectors)?;
        let identity: &Identity = changes.identity;
        self.store.set_meta(&[
            ("vectors_file", &vectors_file),
            ("vectors_count", &vectors.len().to_string()),
            ("vectors_generation", &generation.to_string()),
            ("identity", &identity.full()),
            ("model", &identity.model),
            ("dimensions", &identity.dimensions.to_string()),
            ("model_files", &identity.model_files),
            ("model_stamp", &identity.model_stamp),
            ("settings", &identity.settings),
            ("built_at", &changes.now),
        ])?;
        Ok(vectors_file)
    }

    /// Deletes the stale documents (everything, on a full rebuild); returns
    /// the ids of their chunks.
    fn remove_documents(
        &self,
        full_rebuild: bool,
        stale: &[i64],
    ) -> Result<Vec<i64>, WriteFailure> {
        let mut removed_ids = Vec::new();
        if full_rebuild {
            self.store.clear()?;
            return Ok(removed_ids);
        }
        for &doc_id in stale {
            removed_ids.extend(self.store.chunk_ids_of(doc_id)?);
            self.store.delete_document(doc_id)?;
        }
        Ok(removed_ids)
    }

    /// The HNSW graph of the new catalogue: the `previous` file updated when
    /// it is intact, otherwise rebuilt from the catalogue's vectors (no
    /// re-embedding).
    fn updated_vectors(
        &self,
        previous: Option<&str>,
        removed: &[i64],
        added: &[(i64, &[f32])],
        dimensions: usize,
    ) -> Result<Vectors, WriteFailure> {
        let (_, total_chunks, _) = self.store.counts()?;
        let previous = previous.and_then(|name| {
            let expected: usize = self.store.meta("vectors_count").ok()??.parse().ok()?;
            Vectors::load(&self.dir.join(name), expected, dimensions).ok()
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
            None => self.vectors_of_catalogue(total_chunks as usize, dimensions)?,
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
    fn vectors_of_catalogue(
        &self,
        capacity: usize,
        dimensions: usize,
    ) -> Result<Vectors, WriteFailure> {
        let mut v = Vectors::new(capacity, dimensions)?;
        let mut failure = None;
        self.store.for_each_vector(|id, vector| {
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

    /// Saves `vectors` under the next generation's name, synced to disk;
    /// returns the file name and the generation.
    fn save_vectors(&self, vectors: &Vectors) -> Result<(String, u64), WriteFailure> {
        let generation: u64 = self
            .store
            .meta("vectors_generation")
            .ok()
            .flatten()
            .and_then(|g| g.parse().ok())
            .unwrap_or(0)
            + 1;
        let name = format!("{VECTORS_PREFIX}{generation}{VECTORS_SUFFIX}");
        let path = self.dir.join(&name);
        vectors.save(&path)?;
        if let Ok(f) = std::fs::File::open(&path) {
            let _ = f.sync_all();
        }
        Ok((name, generation))
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
