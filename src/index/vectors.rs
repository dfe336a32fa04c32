//! The HNSW vector index (usearch, cosine, f16). It is derived data: the
//! catalogue holds every vector, so a lost or stale file is rebuilt, never fatal.

use std::path::Path;

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VectorError(String);

fn native(e: impl std::fmt::Display) -> VectorError {
    VectorError(e.to_string())
}

pub struct Vectors {
    index: Index,
    /// The length of every vector (the embedding model's, as the index records it).
    dimensions: usize,
}

/// Candidates an HNSW search keeps (usearch's `expansion_search`; the number
/// of results asked for when that is larger). More finds more of the exact
/// nearest: recall@10 against an exact scan at 100,000 chunks 0.900 at 64,
/// 0.959 at 128, 0.977 at 200, 0.981 at 256, for a vector search p50 of
/// 1.1 → 2.1 ms (BENCHMARKS.md, *PostgreSQL backend*). Kept at 64: at 256
/// the eval's hybrid MRR fell from 0.907 to 0.903 (held-out 0.846 → 0.840,
/// R@5 equal; vector-only MRR rose 0.553 → 0.590), the same as PostgreSQL's
/// exact-recall graph gives.
pub const EXPANSION_SEARCH: usize = 64;

fn options(dimensions: usize) -> IndexOptions {
    IndexOptions {
        dimensions,
        metric: MetricKind::Cos,
        quantization: ScalarKind::F16,
        connectivity: 16,
        expansion_add: 128,
        expansion_search: EXPANSION_SEARCH,
        multi: false,
    }
}

impl Vectors {
    pub fn new(capacity: usize, dimensions: usize) -> Result<Vectors, VectorError> {
        if dimensions == 0 {
            return Err(VectorError("vectors of 0 dimensions".into()));
        }
        let index = Index::new(&options(dimensions)).map_err(native)?;
        index.reserve(capacity.max(16)).map_err(native)?;
        Ok(Vectors { index, dimensions })
    }

    /// Loads a saved index into memory for modification. `expected` is the
    /// vector count and `dimensions` the vectors' length the catalogue
    /// recorded; any mismatch means the file is stale or damaged.
    pub fn load(path: &Path, expected: usize, dimensions: usize) -> Result<Vectors, VectorError> {
        Self::checked(path, expected, dimensions, |index, p| index.load(p))
    }

    /// Memory-maps a saved index read-only: opening is nearly free.
    pub fn view(path: &Path, expected: usize, dimensions: usize) -> Result<Vectors, VectorError> {
        Self::checked(path, expected, dimensions, |index, p| index.view(p))
    }

    fn checked<E: std::fmt::Display>(
        path: &Path,
        expected: usize,
        dimensions: usize,
        open: impl FnOnce(&Index, &str) -> Result<(), E>,
    ) -> Result<Vectors, VectorError> {
        let p = path
            .to_str()
            .ok_or_else(|| VectorError(format!("{} is not a UTF-8 path", path.display())))?;
        // Read the header first: usearch trusts the file it maps, so a damaged
        // one must be caught before it is opened.
        let meta = Index::metadata(p).map_err(native)?;
        if meta.dimensions as usize != dimensions || meta.count_present as usize != expected {
            return Err(VectorError(format!(
                "holds {} vectors of {} dimensions, expected {expected} of {dimensions}",
                meta.count_present, meta.dimensions
            )));
        }
        let file_len = std::fs::metadata(path)
            .map_err(|e| VectorError(e.to_string()))?
            .len() as usize;
        let index = Index::new(&options(dimensions)).map_err(native)?;
        let min_len = expected * dimensions * 2;
        if file_len < min_len {
            return Err(VectorError(format!("is truncated ({file_len} bytes)")));
        }
        open(&index, p).map_err(native)?;
        if index.size() != expected || index.dimensions() != dimensions {
            return Err(VectorError(format!(
                "holds {} vectors, expected {expected}",
                index.size()
            )));
        }
        Ok(Vectors { index, dimensions })
    }

    /// Sets the candidates a search keeps (see [`EXPANSION_SEARCH`]): recall
    /// against speed.
    pub fn set_expansion_search(&self, candidates: usize) {
        self.index.change_expansion_search(candidates.max(1));
    }

    /// The length of every vector.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    pub fn len(&self) -> usize {
        self.index.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn add(&mut self, key: i64, vector: &[f32]) -> Result<(), VectorError> {
        self.fits(vector)?;
        if self.index.size() + 1 > self.index.capacity() {
            self.index
                .reserve((self.index.capacity() * 2).max(1024))
                .map_err(native)?;
        }
        self.index.add(key as u64, vector).map_err(native)?;
        Ok(())
    }

    pub fn remove(&mut self, key: i64) -> Result<(), VectorError> {
        self.index.remove(key as u64).map_err(native)?;
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<(), VectorError> {
        let p = path
            .to_str()
            .ok_or_else(|| VectorError(format!("{} is not a UTF-8 path", path.display())))?;
        self.index.save(p).map_err(native)?;
        Ok(())
    }

    /// Nearest chunks to `query`, as (chunk id, cosine similarity), best first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(i64, f32)>, VectorError> {
        self.fits(query)?;
        if self.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let found = self.index.search(query, k).map_err(native)?;
        Ok(found
            .keys
            .into_iter()
            .zip(found.distances)
            .map(|(key, distance)| (key as i64, 1.0 - distance))
            .collect())
    }

    /// usearch reads `dimensions` floats from whatever slice it is given:
    /// another length must never reach it.
    fn fits(&self, vector: &[f32]) -> Result<(), VectorError> {
        match vector.len() == self.dimensions {
            true => Ok(()),
            false => Err(VectorError(format!(
                "a vector of {} dimensions for an index of {}",
                vector.len(),
                self.dimensions
            ))),
        }
    }
}
