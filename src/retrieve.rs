//! Retrieval: vector (HNSW), lexical (BM25 over segmented text) or both fused
//! by reciprocal rank fusion, then near-duplicates removed and each document
//! capped so one long page cannot fill every slot.
//!
//! A [`Retriever`] holds what every search needs (the index, the embedding
//! model unless the mode is lexical, the `[retrieve]` settings) and searches
//! with every form of a [`Query`]; it knows nothing of chat models.

use std::collections::{HashMap, HashSet};

use crate::config::{Config, Retrieve, RetrieveMode};
use crate::embed::{EmbedError, Embedder};
use crate::glossary::{Glossary, GlossaryError};
use crate::index::{
    describe_model, terms, ChunkRow, Index, IndexError, Pruning, SearchError, Snapshot, TermCounts,
    VectorSearch, LEXICAL_ROW_BUDGET,
};
use crate::query::Query;

#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    #[error(transparent)]
    Open(#[from] IndexError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Glossary(#[from] GlossaryError),
    #[error(transparent)]
    Read(#[from] SearchError),
    #[error("searching the index failed: {0}; run `ragmap index --rebuild` if this persists")]
    Search(String),
}

impl RetrieveError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RetrieveError::Open(e) => e.exit_code(),
            RetrieveError::Embed(e) => e.exit_code(),
            RetrieveError::Read(e) => e.exit_code,
            RetrieveError::Glossary(_) | RetrieveError::Search(_) => crate::exit::FAILURE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hit {
    #[serde(flatten)]
    pub chunk: ChunkRow,
    /// Fused score (RRF in hybrid mode, cosine in vector mode, BM25 in lexical mode).
    pub score: f32,
    /// Cosine similarity to the (best) query, when the vector side found it.
    pub similarity: Option<f32>,
    pub vector_rank: Option<usize>,
    pub lexical_rank: Option<usize>,
}

/// An open index, the embedding model unless only lexical search is wanted,
/// and the settings searches use: loaded once per process (or per worker).
pub struct Retriever {
    index: Box<dyn Index>,
    embedder: Option<Embedder>,
    settings: Retrieve,
    glossary: Glossary,
    /// The embedding model the index was built with (name, dimension), read
    /// once per generation: questions must be embedded by the same.
    index_model: Option<IndexModel>,
}

struct IndexModel {
    generation: String,
    name: Option<String>,
    dimensions: Option<usize>,
}

impl Retriever {
    /// Opens the index of `config`, reads the glossary (the built-in one and
    /// `[retrieve] glossary`) and, unless `[retrieve] mode` is lexical, loads
    /// the embedding model.
    ///
    /// What the mode needs loads side by side: the model (tokenizer and ONNX
    /// session, on threads of their own) while this thread opens the index,
    /// reads the glossary and, unless the mode is vector-only, loads jieba's
    /// dictionary.
    pub fn open(config: &Config) -> Result<Retriever, RetrieveError> {
        let mode = config.retrieve.mode;
        let (index, glossary, embedder) = std::thread::scope(|scope| {
            let embedder =
                (mode != RetrieveMode::Lexical).then(|| scope.spawn(|| Embedder::load(config)));
            let index = crate::embed::timed("index open", || crate::index::open(config));
            if index.is_ok() && embedder.is_some() && mode != RetrieveMode::Vector {
                crate::embed::timed("jieba", terms::warm_up);
            }
            // After jieba: the glossary segments its Chinese names.
            let glossary = crate::embed::timed("glossary", || {
                Glossary::load(config.glossary_path().as_deref())
            });
            let embedder = embedder.map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(EmbedError::Run("loading the model panicked".into())))
            });
            (index, glossary, embedder)
        });
        let glossary = glossary?;
        let index = index?;
        let embedder = embedder.transpose()?;
        Ok(Retriever::new(index, embedder, config.retrieve.clone()).with_glossary(glossary))
    }

    /// A retriever with the built-in glossary.
    pub fn new(index: Box<dyn Index>, embedder: Option<Embedder>, settings: Retrieve) -> Retriever {
        Retriever {
            index,
            embedder,
            settings,
            glossary: Glossary::builtin().clone(),
            index_model: None,
        }
    }

    pub fn with_glossary(mut self, glossary: Glossary) -> Retriever {
        self.glossary = glossary;
        self
    }

    pub fn index(&self) -> &dyn Index {
        self.index.as_ref()
    }

    /// The embedding model, when one was loaded.
    pub fn embedder(&mut self) -> Option<&mut Embedder> {
        self.embedder.as_mut()
    }

    pub fn settings(&self) -> &Retrieve {
        &self.settings
    }

    /// Searches with other settings from now on (evaluation varies them). A
    /// mode needing vectors fails at search time when no model was loaded.
    pub fn set_settings(&mut self, settings: Retrieve) {
        self.settings = settings;
    }

    /// The best `top_k` passages for every form of the query, fused.
    pub fn search(&mut self, query: &Query) -> Result<Vec<Hit>, RetrieveError> {
        let settings = self.settings.clone();
        self.read(query, &settings, false)
    }

    /// [`Retriever::search`], each hit widened with its neighbouring chunks
    /// (`[retrieve] neighbours`) so a prompt's context is not cut mid-paragraph.
    pub fn passages(&mut self, query: &Query) -> Result<Vec<Hit>, RetrieveError> {
        let settings = self.settings.clone();
        self.read(query, &settings, true)
    }

    /// One search with `settings` instead of the retriever's own (a server
    /// request's k and mode), widened as [`Retriever::passages`] when `widen`.
    pub fn search_with(
        &mut self,
        query: &Query,
        settings: &Retrieve,
        widen: bool,
    ) -> Result<Vec<Hit>, RetrieveError> {
        self.read(query, settings, widen)
    }

    /// The chunk `id` from the newest committed index, its text widened with
    /// `radius` neighbouring chunks either side; `None` when no chunk has that
    /// id (a document changed since the search that named it).
    pub fn chunk(&mut self, id: i64, radius: usize) -> Result<Option<ChunkRow>, RetrieveError> {
        for _ in 0..3 {
            self.index.refresh();
            let Some(snapshot) = self.index.snapshot()? else {
                continue;
            };
            let found = snapshot.chunks_by_ids(&[id])?;
            return Ok(found.into_values().next().map(|mut row| {
                widen(&*snapshot, radius, &mut row);
                row
            }));
        }
        Err(RetrieveError::Search(
            "the index changed three times during one read".into(),
        ))
    }

    /// The committed index state searches read (see [`Index::generation`]).
    pub fn generation(&self) -> String {
        self.index.generation()
    }

    /// Searches one committed state of the index: the newest, opened again
    /// when `ragmap index` committed since, and read in one snapshot so a
    /// commit landing mid-search cannot mix two states.
    fn read(
        &mut self,
        query: &Query,
        settings: &Retrieve,
        widen: bool,
    ) -> Result<Vec<Hit>, RetrieveError> {
        let forms: Vec<String> = query.forms().into_iter().map(str::to_string).collect();
        let query_vectors = embed_queries(self.embedder.as_mut(), &forms, settings)?;
        for _ in 0..3 {
            self.index.refresh();
            self.check_model(&query_vectors)?;
            let Some(snapshot) = self.index.snapshot()? else {
                continue;
            };
            let hits = retrieve_embedded_with(
                &*snapshot,
                &query_vectors,
                &forms,
                settings,
                &self.glossary,
            )?;
            return Ok(if widen {
                with_neighbours(&*snapshot, settings.neighbours, hits)
            } else {
                hits
            });
        }
        Err(RetrieveError::Search(
            "the index changed three times during one search".into(),
        ))
    }
}

impl Retriever {
    /// The question vectors come from the model the index was built with:
    /// the same name (see `embed::same_model`) and dimension; otherwise one
    /// error naming both, before any vector reaches the index.
    fn check_model(&mut self, query_vectors: &[Vec<f32>]) -> Result<(), RetrieveError> {
        let (Some(embedder), Some(vector)) = (&self.embedder, query_vectors.first()) else {
            return Ok(());
        };
        let generation = self.index.generation();
        if self
            .index_model
            .as_ref()
            .is_none_or(|m| m.generation != generation)
        {
            let description = self.index.describe()?;
            self.index_model = Some(IndexModel {
                generation,
                name: description.model,
                dimensions: description.dimensions,
            });
        }
        let Some(index) = &self.index_model else {
            return Ok(());
        };
        let other_name = index
            .name
            .as_deref()
            .is_some_and(|name| !crate::embed::same_model(name, embedder.model()));
        let other_dimensions = index.dimensions.is_some_and(|d| d != vector.len());
        if !other_name && !other_dimensions {
            return Ok(());
        }
        let unnamed = "(unnamed)".to_string();
        Err(RetrieveError::Open(IndexError::ModelMismatch {
            index: describe_model(
                index.name.as_ref().unwrap_or(&unnamed),
                index.dimensions,
                None,
            ),
            now: "embeds questions with",
            configured: describe_model(embedder.model(), Some(vector.len()), embedder.server()),
        }))
    }
}

fn with_neighbours(snapshot: &dyn Snapshot, radius: usize, hits: Vec<Hit>) -> Vec<Hit> {
    if radius == 0 {
        return hits;
    }
    hits.into_iter()
        .map(|mut hit| {
            widen(snapshot, radius, &mut hit.chunk);
            hit
        })
        .collect()
}

/// `row`'s text with `radius` chunks of its document either side, joined.
fn widen(snapshot: &dyn Snapshot, radius: usize, row: &mut ChunkRow) {
    if let Ok(rows) = snapshot.neighbours(row.doc_id, row.ordinal, radius as i64) {
        if rows.len() > 1 {
            row.text = merge_overlapping(rows.iter().map(|r| (r.start, r.end, r.text.as_str())));
        }
    }
}

/// Joins neighbouring chunks whose byte ranges overlap without repeating the overlap.
fn merge_overlapping<'a>(rows: impl Iterator<Item = (i64, i64, &'a str)>) -> String {
    let mut out = String::new();
    let mut covered_to: i64 = -1;
    for (start, end, text) in rows {
        if covered_to < 0 || start >= covered_to {
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(text);
        } else if end > covered_to {
            let skip = (covered_to - start) as usize;
            let mut cut = skip.min(text.len());
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            out.push_str(&text[cut..]);
        }
        covered_to = covered_to.max(end);
    }
    out
}

/// One ranked list from one retriever for one query form.
pub struct RankedList {
    /// (chunk id, the retriever's own score), best first.
    pub ids: Vec<(i64, f32)>,
    pub weight: f32,
    /// From the vector retriever (else lexical).
    pub vector: bool,
}

/// Retrieves the best `settings.top_k` passages for one or more forms of a
/// question (e.g. the original and its translation), fusing every ranked list
/// into one, in `settings.mode`, with the built-in glossary.
pub fn retrieve(
    index: &dyn Index,
    embedder: Option<&mut Embedder>,
    queries: &[String],
    settings: &Retrieve,
) -> Result<Vec<Hit>, RetrieveError> {
    let query_vectors = embed_queries(embedder, queries, settings)?;
    retrieve_embedded(index, &query_vectors, queries, settings)
}

/// Each query's vector, unless the mode is lexical (then none).
fn embed_queries(
    embedder: Option<&mut Embedder>,
    queries: &[String],
    settings: &Retrieve,
) -> Result<Vec<Vec<f32>>, RetrieveError> {
    let mut query_vectors = Vec::new();
    if settings.mode != RetrieveMode::Lexical {
        let embedder = embedder.ok_or_else(|| {
            RetrieveError::Search("vector search needs the embedding model".into())
        })?;
        for q in queries {
            query_vectors.push(embedder.embed_query(q)?);
        }
    }
    Ok(query_vectors)
}

/// [`retrieve`] with the queries already embedded (`query_vectors[i]` is the
/// vector of `queries[i]`; unused in lexical mode), in the index's current
/// state. Everything after the embedding model happens here, which is what
/// the latency benchmarks time.
pub fn retrieve_embedded(
    index: &dyn Index,
    query_vectors: &[Vec<f32>],
    queries: &[String],
    settings: &Retrieve,
) -> Result<Vec<Hit>, RetrieveError> {
    let snapshot = index
        .snapshot()?
        .ok_or_else(|| RetrieveError::Search("the index changed while the search began".into()))?;
    retrieve_embedded_with(
        &*snapshot,
        query_vectors,
        queries,
        settings,
        Glossary::builtin(),
    )
}

/// [`retrieve_embedded`] in one snapshot, with a given glossary.
pub fn retrieve_embedded_with(
    snapshot: &dyn Snapshot,
    query_vectors: &[Vec<f32>],
    queries: &[String],
    settings: &Retrieve,
    glossary: &Glossary,
) -> Result<Vec<Hit>, RetrieveError> {
    let (mode, k) = (settings.mode, settings.top_k.max(1));
    let candidates = settings.candidates.max(k * 3);
    let lists = match mode {
        RetrieveMode::Vector => {
            vector_lists(snapshot.vectors(), query_vectors, candidates, settings)?
        }
        RetrieveMode::Lexical => lexical_lists(snapshot, queries, candidates, settings, glossary)?,
        // The HNSW search runs beside the SQLite one (its own thread; the
        // connection stays on this one): a hybrid search costs about the
        // slower of the two rather than their sum.
        RetrieveMode::Hybrid => std::thread::scope(|scope| {
            let vectors = snapshot.vectors();
            let vector = scope.spawn(|| vector_lists(vectors, query_vectors, candidates, settings));
            let lexical = lexical_lists(snapshot, queries, candidates, settings, glossary);
            let vector = vector
                .join()
                .map_err(|_| RetrieveError::Search("the vector search thread panicked".into()))?;
            let mut lists = vector?;
            lists.extend(lexical?);
            Ok::<_, RetrieveError>(lists)
        })?,
    };
    let mut hits = hits_of(snapshot, fuse(&lists, mode, settings.rrf_k))?;
    if mode == RetrieveMode::Hybrid {
        hits = with_named_pages(snapshot, hits, queries, settings, glossary)?;
    }
    Ok(select(
        hits,
        k,
        settings.max_chunks_per_doc,
        settings.dedup_threshold,
    ))
}

/// One HNSW list per query vector.
fn vector_lists(
    vectors: &dyn VectorSearch,
    query_vectors: &[Vec<f32>],
    candidates: usize,
    settings: &Retrieve,
) -> Result<Vec<RankedList>, RetrieveError> {
    query_vectors
        .iter()
        .map(|v| {
            Ok(RankedList {
                ids: vectors.nearest(v, candidates)?,
                weight: settings.vector_weight,
                vector: true,
            })
        })
        .collect()
}

/// Per query, up to two BM25 lists: its own terms, and its bridges to the
/// other language (the glossary's names of its terms, and the names it uses
/// without the words around them).
fn lexical_lists(
    snapshot: &dyn Snapshot,
    queries: &[String],
    candidates: usize,
    settings: &Retrieve,
    glossary: &Glossary,
) -> Result<Vec<RankedList>, RetrieveError> {
    let fields = field_weights(settings);
    // The bridges only add evidence: a smaller budget, and no term that
    // alone matches more than it.
    let bridge = Pruning {
        budget: BRIDGE_ROW_BUDGET,
        drop_common: true,
        unpruned_up_to: LEXICAL_ROW_BUDGET,
    };
    let mut lists = Vec::new();
    for q in queries {
        let terms = terms::query_terms(q);
        let bridges = if settings.expansion_weight > 0.0 {
            bridge_terms(glossary, q, &terms)
        } else {
            Vec::new()
        };
        let mut counts = TermCounts::default();
        // The bridges' list is a supplement: half as many candidates.
        for (terms, weight, pruning, limit) in [
            (
                terms,
                settings.lexical_weight,
                Pruning::OWN_TERMS,
                candidates,
            ),
            (
                bridges,
                settings.expansion_weight,
                bridge,
                candidates.div_ceil(2),
            ),
        ] {
            if terms.is_empty() {
                continue;
            }
            let ids = snapshot
                .lexical_search(&terms, limit, &fields, pruning, &mut counts)?
                .into_iter()
                .map(|(id, s)| (id, s as f32))
                .collect();
            lists.push(RankedList {
                ids,
                weight,
                vector: false,
            });
        }
    }
    Ok(lists)
}

/// The fused ids as hits, in order, with their chunk rows (fetched in one go).
fn hits_of(snapshot: &dyn Snapshot, fused: Vec<Fused>) -> Result<Vec<Hit>, RetrieveError> {
    let ids: Vec<i64> = fused.iter().map(|f| f.id).collect();
    let mut rows = snapshot.chunks_by_ids(&ids)?;
    Ok(fused
        .into_iter()
        .filter_map(|f| {
            rows.remove(&f.id).map(|chunk| Hit {
                chunk,
                score: f.score,
                similarity: f.similarity,
                vector_rank: f.vector_rank,
                lexical_rank: f.lexical_rank,
            })
        })
        .collect())
}

/// Rescores `hits` by the pages the question names; a named page whose text
/// none of the retrievers found still joins, by its first chunk.
fn with_named_pages(
    snapshot: &dyn Snapshot,
    mut hits: Vec<Hit>,
    queries: &[String],
    settings: &Retrieve,
    glossary: &Glossary,
) -> Result<Vec<Hit>, RetrieveError> {
    let named = if settings.name_weight > 0.0 {
        named_documents(snapshot, queries, settings, glossary)?
    } else {
        Vec::new()
    };
    let present: HashSet<i64> = hits.iter().map(|h| h.chunk.doc_id).collect();
    let mut missing = Vec::new();
    for &doc_id in named.iter().take(NAMED_PAGES_ADDED) {
        if !present.contains(&doc_id) {
            missing.extend(snapshot.first_chunk_of(doc_id)?);
        }
    }
    let unranked = missing.into_iter().map(|id| Fused {
        id,
        score: 0.0,
        similarity: None,
        vector_rank: None,
        lexical_rank: None,
    });
    hits.extend(hits_of(snapshot, unranked.collect())?);
    Ok(rescore(hits, &named, settings))
}

/// Names of one glossary concept searched for: the first ones its line
/// lists (the others are mostly other forms of the same word, each a
/// further phrase for FTS5 to match).
pub const EXPANSION_NAMES_PER_CONCEPT: usize = 3;

/// Rows BM25 may score for each of the glossary and name searches (the
/// question's own terms get [`LEXICAL_ROW_BUDGET`]). Indexes of at most
/// [`LEXICAL_ROW_BUDGET`] chunks are never pruned.
pub const BRIDGE_ROW_BUDGET: usize = 500;

/// Pages named by the question but found by no retriever that may still
/// join the candidates.
const NAMED_PAGES_ADDED: usize = 3;
/// Pages whose title or URL match counts, best first.
const NAMED_PAGES: usize = 10;

/// The documents whose title or URL holds the names the queries use
/// ([`terms::name_terms`]), best first. Words of the field the glossary
/// knows ("LLM", "RAG", "GPU") name no particular page and are left out.
fn named_documents(
    snapshot: &dyn Snapshot,
    queries: &[String],
    settings: &Retrieve,
    glossary: &Glossary,
) -> Result<Vec<i64>, SearchError> {
    let mut docs: Vec<i64> = Vec::new();
    for q in queries {
        let mut names = terms::name_terms(q);
        names.retain(|n| !glossary.is_term(n));
        for (doc_id, _) in snapshot.title_search(&names, NAMED_PAGES, &field_weights(settings))? {
            if !docs.contains(&doc_id) {
                docs.push(doc_id);
            }
        }
    }
    Ok(docs)
}

/// Adds to each fused score `name_weight / (rrf_k + rank)` when the question
/// names the chunk's page (`named`, best first): page-level evidence that a
/// page's own text may not give a question in the other language. Best first.
pub fn rescore(mut hits: Vec<Hit>, named: &[i64], settings: &Retrieve) -> Vec<Hit> {
    for h in &mut hits {
        if let Some(rank) = named.iter().position(|&d| d == h.chunk.doc_id) {
            h.score += settings.name_weight / (settings.rrf_k + rank as f32 + 1.0);
        }
    }
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.chunk.id.cmp(&b.chunk.id))
    });
    hits
}

/// The BM25 field weights of `settings`.
pub fn field_weights(settings: &Retrieve) -> terms::FieldWeights {
    terms::FieldWeights {
        title: settings.title_weight.into(),
        url: settings.url_weight.into(),
        heading: settings.heading_weight.into(),
        body: 1.0,
    }
}

/// The terms of a question's second lexical search, its bridges to pages in
/// the other language: the glossary's names of its terms in that language
/// ([`expansion_terms`]), and the names it uses ([`terms::name_terms`]:
/// "vLLM" in a Chinese question) searched without the words around them,
/// which would otherwise match pages in the question's own language far more
/// often. Field words the glossary knows ("LLM", "GPU") are no names.
pub fn bridge_terms(glossary: &Glossary, question: &str, own: &[String]) -> Vec<String> {
    let mut out = expansion_terms(glossary, question, own);
    for name in terms::name_terms(question) {
        if !glossary.is_term(&name) && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// The lexical terms the glossary adds to a question: its concepts' names in
/// the other language, each as the index's terms (a phrase when it has
/// several: "fine tuning", "向量 数据 数据库 向量数据库"), minus what the
/// question already searches for.
pub fn expansion_terms(glossary: &Glossary, question: &str, own: &[String]) -> Vec<String> {
    let mut seen: HashSet<String> = own.iter().cloned().collect();
    glossary
        .expand_terms(question, EXPANSION_NAMES_PER_CONCEPT)
        .into_iter()
        .filter(|t| !t.is_empty() && seen.insert(t.clone()))
        .collect()
}

/// A candidate after fusion, before its chunk row is read.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub id: i64,
    pub score: f32,
    pub similarity: Option<f32>,
    pub vector_rank: Option<usize>,
    pub lexical_rank: Option<usize>,
}

/// Reciprocal rank fusion: each list adds `weight / (rrf_k + rank)` (rank from 1).
/// With a single retriever the scores of that retriever are kept instead, so
/// they stay meaningful to a reader.
pub fn fuse(lists: &[RankedList], mode: RetrieveMode, rrf_k: f32) -> Vec<Fused> {
    let mut by_id: HashMap<i64, Fused> = HashMap::new();
    for list in lists {
        for (rank0, &(id, raw)) in list.ids.iter().enumerate() {
            let entry = by_id.entry(id).or_insert(Fused {
                id,
                score: 0.0,
                similarity: None,
                vector_rank: None,
                lexical_rank: None,
            });
            let rank = rank0 + 1;
            match mode {
                RetrieveMode::Hybrid => entry.score += list.weight / (rrf_k + rank as f32),
                _ => entry.score = entry.score.max(raw),
            }
            if list.vector {
                entry.similarity = Some(entry.similarity.map_or(raw, |s| s.max(raw)));
                entry.vector_rank = Some(entry.vector_rank.map_or(rank, |r| r.min(rank)));
            } else {
                entry.lexical_rank = Some(entry.lexical_rank.map_or(rank, |r| r.min(rank)));
            }
        }
    }
    let mut fused: Vec<Fused> = by_id.into_values().collect();
    fused.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    fused
}

/// Takes the best hits in order, skipping near-duplicates of a hit already
/// taken and hits from documents that already have `per_doc` slots.
pub fn select(candidates: Vec<Hit>, k: usize, per_doc: usize, dedup_threshold: f32) -> Vec<Hit> {
    let per_doc = per_doc.max(1);
    let mut taken: Vec<Hit> = Vec::with_capacity(k);
    let mut taken_terms: Vec<HashSet<String>> = Vec::with_capacity(k);
    let mut per_doc_count: HashMap<i64, usize> = HashMap::new();
    for hit in candidates {
        if taken.len() >= k {
            break;
        }
        if per_doc_count.get(&hit.chunk.doc_id).copied().unwrap_or(0) >= per_doc {
            continue;
        }
        let hit_terms: HashSet<String> = terms::terms(&hit.chunk.text).into_iter().collect();
        if taken_terms
            .iter()
            .any(|t| jaccard(t, &hit_terms) >= dedup_threshold)
        {
            continue;
        }
        *per_doc_count.entry(hit.chunk.doc_id).or_default() += 1;
        taken_terms.push(hit_terms);
        taken.push(hit);
    }
    taken
}

fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f32 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let inter = a.intersection(b).count();
    inter as f32 / (a.len() + b.len() - inter) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, doc_id: i64, text: &str) -> ChunkRow {
        ChunkRow {
            id,
            doc_id,
            ordinal: 0,
            start: 0,
            end: text.len() as i64,
            heading: String::new(),
            text: text.into(),
            title: String::new(),
            source: String::new(),
            path: String::new(),
        }
    }

    fn hit(id: i64, doc_id: i64, text: &str) -> Hit {
        Hit {
            chunk: row(id, doc_id, text),
            score: 0.0,
            similarity: None,
            vector_rank: None,
            lexical_rank: None,
        }
    }

    #[test]
    fn neighbours_merge_without_repeating_overlap() {
        let text = "aaaa bbbb cccc dddd";
        let rows = [
            (0i64, 9i64, &text[0..9]),
            (5, 14, &text[5..14]),
            (10, 19, &text[10..19]),
        ];
        assert_eq!(merge_overlapping(rows.into_iter()), text);
        let apart = [(0i64, 4i64, "aaaa"), (10, 14, "cccc")];
        assert_eq!(merge_overlapping(apart.into_iter()), "aaaa\n\ncccc");
    }

    #[test]
    fn rrf_rewards_agreement_between_lists() {
        let lists = [
            RankedList {
                ids: vec![(1, 0.9), (2, 0.8), (3, 0.7)],
                weight: 1.0,
                vector: true,
            },
            RankedList {
                ids: vec![(3, 5.0), (2, 4.0)],
                weight: 1.0,
                vector: false,
            },
        ];
        let fused = fuse(&lists, RetrieveMode::Hybrid, 60.0);
        let order: Vec<i64> = fused.iter().map(|f| f.id).collect();
        // 2: 1/62 + 1/62; 3: 1/63 + 1/61; 1: 1/61
        assert_eq!(order, vec![3, 2, 1]);
        assert_eq!(fused[0].vector_rank, Some(3));
        assert_eq!(fused[0].lexical_rank, Some(1));
        assert!((fused[2].score - 1.0 / 61.0).abs() < 1e-6);
    }

    #[test]
    fn weights_shift_the_fusion() {
        let lists = [
            RankedList {
                ids: vec![(1, 0.9), (2, 0.8)],
                weight: 0.1,
                vector: true,
            },
            RankedList {
                ids: vec![(2, 5.0), (1, 4.0)],
                weight: 1.0,
                vector: false,
            },
        ];
        assert_eq!(fuse(&lists, RetrieveMode::Hybrid, 60.0)[0].id, 2);
    }

    #[test]
    fn expansion_adds_the_other_language_below_nothing_it_repeats() {
        let g = Glossary::parse(
            "微调 | fine-tuning | finetune\n向量数据库 | vector database\n",
            "test",
        )
        .unwrap();
        let own = terms::query_terms("LoRA 微调和 finetune 的区别");
        // "finetune" is already searched for; the phrase "fine tuning" is new.
        assert_eq!(
            expansion_terms(&g, "LoRA 微调和 finetune 的区别", &own),
            ["fine tuning"]
        );
        // Chinese names become the index's terms of them.
        let t = expansion_terms(&g, "Which vector database?", &[]);
        assert_eq!(t.len(), 1);
        assert!(t[0].contains("向量"), "{t:?}");
        assert!(expansion_terms(&g, "nothing to expand", &[]).is_empty());
    }

    #[test]
    fn a_named_page_moves_up_by_its_rank_among_named_pages() {
        let settings = Retrieve {
            name_weight: 2.0,
            rrf_k: 10.0,
            ..Retrieve::default()
        };
        let mut hits = vec![hit(1, 10, "a"), hit(2, 20, "b"), hit(3, 30, "c")];
        for (h, s) in hits.iter_mut().zip([0.30, 0.25, 0.20]) {
            h.score = s;
        }
        let out = rescore(hits.clone(), &[30, 20], &settings);
        let order: Vec<i64> = out.iter().map(|h| h.chunk.id).collect();
        // 2: 0.25 + 2/12 = 0.42; 3: 0.20 + 2/11 = 0.38; 1: 0.30, named by nothing.
        assert_eq!(order, [2, 3, 1]);
        let unnamed = rescore(hits, &[], &settings);
        assert_eq!(
            unnamed.iter().map(|h| h.chunk.id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }

    #[test]
    fn select_caps_documents_and_drops_duplicates() {
        let candidates = vec![
            hit(1, 10, "retrieval augmented generation basics"),
            hit(2, 10, "retrieval augmented generation basics"),
            hit(3, 10, "chunking strategies for long documents"),
            hit(4, 10, "vector databases compared"),
            hit(5, 20, "retrieval augmented generation basics"),
            hit(6, 30, "prompt engineering tips"),
        ];
        let out = select(candidates, 4, 2, 0.9);
        let ids: Vec<i64> = out.iter().map(|h| h.chunk.id).collect();
        assert_eq!(ids, vec![1, 3, 6]);
    }
}
