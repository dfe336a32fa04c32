//! Searches: one `REPEATABLE READ READ ONLY` transaction per search, so
//! every statement of it reads the generation its first one saw; BM25 from
//! the stored postings exactly as FTS5 computes it; vectors through
//! pgvector's HNSW.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::types::{ToSql, Type};

use super::database::checkout;
use super::schema::LIVE;
use super::{classify, tokens, PgError, Postgres};
use crate::index::{
    ChunkRow, DocRow, FieldWeights, IndexError, Pruning, SearchError, Snapshot, TermCounts,
    VectorSearch,
};

/// FTS5's bm25() constants (fts5_aux.c), and the two it derives from them,
/// computed as its C code computes them.
const K1: f64 = 1.2;
const B: f64 = 0.75;
const K1_PLUS_1: f64 = K1 + 1.0;
const ONE_MINUS_B: f64 = 1.0 - B;

/// Positions are stored as `field * FIELD_SPAN + offset`, offsets below
/// [`MAX_OFFSET`] (a chunk holds a few hundred tokens; a phrase starting past
/// that is not found, its words still are).
pub const FIELD_SPAN: i32 = 8192;
pub const MAX_OFFSET: usize = 8000;

/// The statistics every search reads first, in its snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct State {
    pub generation: i64,
    pub dimensions: usize,
    pub documents: i64,
    pub document_tokens: i64,
    pub chunks: i64,
    pub chunk_tokens: i64,
}

const STATE_COLUMNS: &str =
    "schema_version, generation, dimensions, documents, document_tokens, chunks, chunk_tokens";

/// Owned statement parameters with their types (statements are sent with
/// their types in one round trip: `query_typed`).
#[derive(Default)]
pub struct Params {
    values: Vec<(Box<dyn ToSql + Sync + Send>, Type)>,
}

impl Params {
    /// Adds a parameter; returns its placeholder (`$n`).
    pub fn push(&mut self, value: impl ToSql + Sync + Send + 'static, ty: Type) -> String {
        self.values.push((Box::new(value), ty));
        format!("${}", self.values.len())
    }

    /// Runs `sql` on a pooled connection: as a statement the connection
    /// keeps prepared when `prepared` (one round trip, and its plan
    /// reused), else planned for these values.
    pub async fn query(
        &self,
        conn: &Object,
        sql: &str,
        prepared: bool,
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        if prepared {
            let types: Vec<Type> = self.values.iter().map(|(_, t)| t.clone()).collect();
            let statement = conn.prepare_typed_cached(sql, &types).await?;
            let refs: Vec<&(dyn ToSql + Sync)> = self
                .values
                .iter()
                .map(|(v, _)| v.as_ref() as &(dyn ToSql + Sync))
                .collect();
            return conn.query(&statement, &refs).await;
        }
        let refs: Vec<(&(dyn ToSql + Sync), Type)> = self
            .values
            .iter()
            .map(|(v, t)| (v.as_ref() as &(dyn ToSql + Sync), t.clone()))
            .collect();
        conn.query_typed(sql, &refs).await
    }
}

/// The columns of a [`DocRow`], before the table's name.
pub const DOCUMENT_ROWS: &str = "SELECT id, path, hash, title, source, sections FROM";

fn failed(at: &str) -> impl Fn(tokio_postgres::Error) -> PgError + '_ {
    move |e| classify(at, &e)
}

pub async fn counts(pool: &Pool, at: &str) -> Result<crate::index::Counts, PgError> {
    let conn = checkout(pool, at).await?;
    let row = conn
        .query_one(
            &format!("SELECT documents, chunks, tokens FROM {LIVE}.state"),
            &[],
        )
        .await
        .map_err(failed(at))?;
    Ok(crate::index::Counts {
        documents: row.get(0),
        chunks: row.get(1),
        tokens: row.get(2),
    })
}

/// The meta table, and the bytes the index's tables and indexes take.
pub async fn describe(pool: &Pool, at: &str) -> Result<(HashMap<String, String>, u64), PgError> {
    let conn = checkout(pool, at).await?;
    let meta = conn
        .query(&format!("SELECT key, value FROM {LIVE}.meta"), &[])
        .await
        .map_err(failed(at))?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let bytes: i64 = conn
        .query_one(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8 FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
            &[&LIVE],
        )
        .await
        .map_err(failed(at))?
        .get(0);
    Ok((meta, bytes.max(0) as u64))
}

pub async fn documents(pool: &Pool, at: &str) -> Result<HashMap<String, DocRow>, PgError> {
    let conn = checkout(pool, at).await?;
    let rows = conn
        .query(&format!("{DOCUMENT_ROWS} {LIVE}.documents"), &[])
        .await
        .map_err(failed(at))?;
    Ok(document_rows(rows))
}

/// Document rows (as [`DOCUMENT_ROWS`] selects them) by path.
pub fn document_rows(rows: Vec<tokio_postgres::Row>) -> HashMap<String, DocRow> {
    rows.into_iter()
        .map(|r| {
            let row = DocRow {
                id: r.get(0),
                path: r.get(1),
                hash: r.get(2),
                title: r.get(3),
                source: r.get(4),
                sections: r.get(5),
            };
            (row.path.clone(), row)
        })
        .collect()
}

/// How far the replica searches read is behind the primary, in seconds
/// (0 when it has replayed everything it received).
pub async fn replica_lag(pool: &Pool, at: &str) -> Result<f64, PgError> {
    let conn = checkout(pool, at).await?;
    let row = conn
        .query_one(
            "SELECT CASE WHEN NOT pg_is_in_recovery() \
                 OR pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 \
                 ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END::float8",
            &[],
        )
        .await
        .map_err(failed(at))?;
    Ok(row.get::<_, Option<f64>>(0).unwrap_or(0.0).max(0.0))
}

/// One search's transaction: the state it read first, and the connection
/// the rest of its statements use.
pub struct Reading<'i> {
    index: &'i Postgres,
    conn: Option<Arc<Object>>,
    state: State,
}

impl<'i> Reading<'i> {
    pub fn begin(index: &'i Postgres) -> Result<Reading<'i>, IndexError> {
        let db = &index.db;
        let (pool, at) = (db.read_pool(), db.read_at.clone());
        let (conn, found) = db.read(async move {
            let conn = checkout(&pool, &at).await?;
            let sql = format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT {STATE_COLUMNS} FROM {LIVE}.state"
            );
            match conn.simple_query(&sql).await {
                Ok(messages) => Ok((conn, parse_state(&messages))),
                Err(e) => {
                    let _ = conn.batch_execute("ROLLBACK").await;
                    Err(match super::schema::is_missing(&e) {
                        true => PgError::failed(&at, "the index's tables are gone (run `ragmap index`)"),
                        false => classify(&at, &e),
                    })
                }
            }
        })?;
        let reading = Reading {
            index,
            conn: Some(Arc::new(conn)),
            state: State::default(),
        };
        let (version, state) = found.ok_or_else(|| PgError::failed(&db.read_at, "no state row"))?;
        super::schema::check_readable(version, &db.read_at)?;
        index.saw(state.generation);
        let mut reading = reading;
        reading.state = state;
        Ok(reading)
    }

    fn conn(&self) -> Arc<Object> {
        self.conn
            .clone()
            .expect("a reading holds its connection until dropped")
    }

    fn at(&self) -> String {
        self.index.db.read_at.clone()
    }

    /// Runs `sql` with `params` in this search's transaction, prepared (a
    /// statement of a fixed shape).
    fn query(&self, sql: String, params: Params) -> Result<Vec<tokio_postgres::Row>, PgError> {
        self.run(sql, params, true)
    }

    /// Runs `sql`, prepared or planned for its values each time (phrases:
    /// which word drives the scan depends on their frequencies).
    fn run(
        &self,
        sql: String,
        params: Params,
        prepared: bool,
    ) -> Result<Vec<tokio_postgres::Row>, PgError> {
        let (conn, at) = (self.conn(), self.at());
        self.index.db.read(async move {
            params
                .query(&conn, &sql, prepared)
                .await
                .map_err(|e| classify(&at, &e))
        })
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        // Ended on the database runtime; the connection goes back to the
        // pool afterwards, or is closed when the transaction would not end.
        self.index.db.spawn(async move {
            if conn.batch_execute("ROLLBACK").await.is_err() {
                if let Ok(conn) = Arc::try_unwrap(conn) {
                    drop(Object::take(conn));
                }
            }
        });
    }
}

/// The state row of `BEGIN …; SELECT … FROM state`, with the schema version.
fn parse_state(messages: &[tokio_postgres::SimpleQueryMessage]) -> Option<(i32, State)> {
    let row = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    })?;
    let int = |i: usize| row.get(i).and_then(|v| v.parse::<i64>().ok());
    Some((
        int(0)? as i32,
        State {
            generation: int(1)?,
            dimensions: int(2)? as usize,
            documents: int(3)?,
            document_tokens: int(4)?,
            chunks: int(5)?,
            chunk_tokens: int(6)?,
        },
    ))
}

const CHUNK_COLUMNS: &str =
    "c.id, c.doc_id, c.ordinal, c.start_byte, c.end_byte, c.heading, c.text, d.title, d.source, d.path";

fn chunk_row(r: &tokio_postgres::Row) -> ChunkRow {
    ChunkRow {
        id: r.get(0),
        doc_id: r.get(1),
        ordinal: i64::from(r.get::<_, i32>(2)),
        start: r.get(3),
        end: r.get(4),
        heading: r.get(5),
        text: r.get(6),
        title: r.get(7),
        source: r.get(8),
        path: r.get(9),
    }
}

impl Snapshot for Reading<'_> {
    fn vectors(&self) -> &dyn VectorSearch {
        self
    }

    fn lexical_search(
        &self,
        terms: &[String],
        limit: usize,
        weights: &FieldWeights,
        pruning: Pruning,
        counts: &mut TermCounts,
    ) -> Result<Vec<(i64, f64)>, SearchError> {
        let query = Query::of(terms)?;
        self.learn_frequencies(&query, counts)?;
        let kept = self.prune(terms, &query, pruning, counts)?;
        let phrases: Vec<Phrase> = kept
            .into_iter()
            .filter_map(|i| Phrase::of(&query.phrases[i], &counts.rows))
            .collect();
        let fields = [weights.title, weights.url, weights.heading, weights.body];
        let stats = Corpus {
            rows: self.state.chunks,
            tokens: self.state.chunk_tokens,
        };
        Ok(self.bm25(&CHUNKS, &phrases, &fields, stats, limit)?)
    }

    fn title_search(
        &self,
        names: &[String],
        limit: usize,
        weights: &FieldWeights,
    ) -> Result<Vec<(i64, f64)>, SearchError> {
        let query = Query::of(names)?;
        let frequencies = self.frequencies(&DOCUMENTS, query.tokens())?;
        let rows: HashMap<String, (i64, i64)> = frequencies
            .into_iter()
            .map(|(t, df)| (t, (df, i64::MAX)))
            .collect();
        let phrases: Vec<Phrase> = query
            .phrases
            .iter()
            .filter_map(|p| Phrase::of(p, &rows))
            .collect();
        let stats = Corpus {
            rows: self.state.documents,
            tokens: self.state.document_tokens,
        };
        Ok(self.bm25(
            &DOCUMENTS,
            &phrases,
            &[weights.title, weights.url],
            stats,
            limit,
        )?)
    }

    fn chunks_by_ids(&self, ids: &[i64]) -> Result<HashMap<i64, ChunkRow>, SearchError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut p = Params::default();
        let list = p.push(ids.to_vec(), Type::INT8_ARRAY);
        let sql = format!(
            "SELECT {CHUNK_COLUMNS} FROM {LIVE}.chunks c JOIN {LIVE}.documents d ON d.id = c.doc_id WHERE c.id = ANY({list})"
        );
        let rows = self.query(sql, p)?;
        Ok(rows.iter().map(chunk_row).map(|r| (r.id, r)).collect())
    }

    fn first_chunk_of(&self, doc_id: i64) -> Result<Option<i64>, SearchError> {
        let mut p = Params::default();
        let doc = p.push(doc_id, Type::INT8);
        let sql =
            format!("SELECT id FROM {LIVE}.chunks WHERE doc_id = {doc} ORDER BY ordinal LIMIT 1");
        Ok(self.query(sql, p)?.first().map(|r| r.get(0)))
    }

    fn neighbours(
        &self,
        doc_id: i64,
        ordinal: i64,
        radius: i64,
    ) -> Result<Vec<ChunkRow>, SearchError> {
        let clamp = |v: i64| v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        let mut p = Params::default();
        let doc = p.push(doc_id, Type::INT8);
        let from = p.push(clamp(ordinal.saturating_sub(radius)), Type::INT4);
        let to = p.push(clamp(ordinal.saturating_add(radius)), Type::INT4);
        let sql = format!(
            "SELECT {CHUNK_COLUMNS} FROM {LIVE}.chunks c JOIN {LIVE}.documents d ON d.id = c.doc_id \
             WHERE c.doc_id = {doc} AND c.ordinal BETWEEN {from} AND {to} ORDER BY c.ordinal"
        );
        Ok(self.query(sql, p)?.iter().map(chunk_row).collect())
    }
}

impl VectorSearch for Reading<'_> {
    fn nearest(&self, query: &[f32], k: usize) -> Result<Vec<(i64, f32)>, SearchError> {
        let dims = self.state.dimensions;
        if query.len() != dims {
            return Err(SearchError::with_code(
                format!(
                    "the index in {} holds vectors of {dims} dimensions, and the question was embedded into {}: this ragmap embeds with another model than the index was built with; configure that model, or run `ragmap index --rebuild`",
                    self.at(),
                    query.len()
                ),
                crate::exit::INDEX,
            ));
        }
        if k == 0 {
            return Ok(Vec::new());
        }
        let vector = self
            .index
            .db
            .vector_type(&self.index.db.read_pool(), &self.at())?;
        let mut p = Params::default();
        let q = p.push(pgvector::Vector::from(query.to_vec()), vector);
        let limit = p.push(k as i64, Type::INT8);
        // The HNSW index orders by half-precision distance; its candidates
        // are then ranked by the exact float32 one, ties by id.
        let sql = format!(
            "SELECT chunk_id, (1 - (embedding <=> {q}))::float4 FROM ( \
                 SELECT chunk_id, embedding FROM {LIVE}.embeddings \
                 ORDER BY embedding::halfvec({dims}) <=> {q}::halfvec({dims}) LIMIT {limit}) hits \
             ORDER BY embedding <=> {q}, chunk_id"
        );
        Ok(self
            .query(sql, p)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }
}

/// A search's terms as FTS5 reads them: each a phrase of its tokens, and
/// each word of it (the parts between spaces) a phrase of its own for
/// pruning.
struct Query {
    phrases: Vec<Vec<String>>,
    words: HashMap<String, Vec<String>>,
}

impl Query {
    fn of(terms: &[String]) -> Result<Query, SearchError> {
        let mut texts: Vec<&str> = terms.iter().map(String::as_str).collect();
        let words: Vec<&str> = terms
            .iter()
            .flat_map(|t| t.split(' ').filter(|w| !w.is_empty()))
            .collect();
        texts.extend(&words);
        let mut split = tokens::tokenize(&texts).map_err(|e| {
            SearchError::new(format!("splitting the question into tokens failed: {e}"))
        })?;
        let word_tokens = split.split_off(terms.len());
        Ok(Query {
            phrases: split,
            words: words
                .into_iter()
                .map(str::to_string)
                .zip(word_tokens)
                .collect(),
        })
    }

    fn tokens(&self) -> Vec<String> {
        let mut all: Vec<String> = self.phrases.iter().flatten().cloned().collect();
        all.sort();
        all.dedup();
        all
    }
}

/// A phrase of the MATCH expression with the document frequency of each of
/// its tokens; `None` when some token occurs nowhere (it matches nothing).
struct Phrase {
    tokens: Vec<(String, i64)>,
}

impl Phrase {
    fn of(tokens: &[String], frequencies: &HashMap<String, (i64, i64)>) -> Option<Phrase> {
        let with_df: Vec<(String, i64)> = tokens
            .iter()
            .map(|t| (t.clone(), frequencies.get(t).map_or(0, |f| f.0)))
            .collect();
        (!with_df.is_empty() && with_df.iter().all(|(_, df)| *df > 0))
            .then_some(Phrase { tokens: with_df })
    }
}

/// N and the tokens of all rows, of chunks or of documents.
#[derive(Clone, Copy)]
struct Corpus {
    rows: i64,
    tokens: i64,
}

/// The postings of chunks or of documents, and their fields in weight order.
struct Scheme {
    postings: &'static str,
    frequencies: &'static str,
    id: &'static str,
    fields: &'static [&'static str],
}

const CHUNKS: Scheme = Scheme {
    postings: "ragmap.postings",
    frequencies: "ragmap.terms",
    id: "chunk_id",
    fields: &["tf_title", "tf_url", "tf_heading", "tf_body"],
};

const DOCUMENTS: Scheme = Scheme {
    postings: "ragmap.doc_postings",
    frequencies: "ragmap.doc_terms",
    id: "doc_id",
    fields: &["tf_title", "tf_url"],
};

impl Reading<'_> {
    /// Each token's document frequency (absent tokens left out).
    fn frequencies(
        &self,
        scheme: &Scheme,
        tokens: Vec<String>,
    ) -> Result<Vec<(String, i64)>, PgError> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = Params::default();
        let list = p.push(tokens, Type::TEXT_ARRAY);
        let sql = format!(
            "SELECT term, df::int8 FROM {} WHERE term = ANY({list})",
            scheme.frequencies
        );
        Ok(self
            .query(sql, p)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// Reads the frequencies of the query's tokens this question has not
    /// seen yet into `counts` (exact: stored, not counted).
    fn learn_frequencies(&self, query: &Query, counts: &mut TermCounts) -> Result<(), PgError> {
        let mut unknown: Vec<String> = query
            .phrases
            .iter()
            .chain(query.words.values())
            .flatten()
            .filter(|t| !counts.rows.contains_key(*t))
            .cloned()
            .collect();
        unknown.sort();
        unknown.dedup();
        let found: HashMap<String, i64> = self
            .frequencies(&CHUNKS, unknown.clone())?
            .into_iter()
            .collect();
        for token in unknown {
            let df = found.get(&token).copied().unwrap_or(0);
            counts.rows.insert(token, (df, i64::MAX));
        }
        Ok(())
    }

    /// The indexes of the terms worth scoring, as the embedded index prunes
    /// them (`Store::prune_counted`), its match counts read from the stored
    /// frequencies (a word FTS5 splits into several tokens is counted as the
    /// phrase it is).
    fn prune(
        &self,
        terms: &[String],
        query: &Query,
        pruning: Pruning,
        counts: &mut TermCounts,
    ) -> Result<Vec<usize>, PgError> {
        let all: Vec<usize> = (0..terms.len()).collect();
        if terms.len() <= 1 && !pruning.drop_common {
            return Ok(all);
        }
        let max_id = match counts.max_id {
            Some(id) => id,
            None => *counts.max_id.insert(self.max_chunk_id()?),
        };
        if max_id <= pruning.unpruned_up_to as i64 {
            return Ok(all);
        }
        let cap = pruning.cap();
        pruning.kept(terms, |word| self.count_word(word, query, cap, counts))
    }

    fn max_chunk_id(&self) -> Result<i64, PgError> {
        let sql = format!("SELECT coalesce(max(id), 0) FROM {LIVE}.chunks");
        Ok(self
            .query(sql, Params::default())?
            .first()
            .map_or(0, |r| r.get(0)))
    }

    /// Chunks matching `word` (counted up to `cap` for a phrase), cached in `counts`.
    fn count_word(
        &self,
        word: &str,
        query: &Query,
        cap: i64,
        counts: &mut TermCounts,
    ) -> Result<i64, PgError> {
        if let Some(&(n, counted_to)) = counts.rows.get(word) {
            if n < counted_to || counted_to >= cap {
                return Ok(n);
            }
        }
        let tokens = query.words.get(word).cloned().unwrap_or_default();
        let (n, counted_to) = match tokens.as_slice() {
            [] => (0, i64::MAX),
            [one] => (counts.rows.get(one).map_or(0, |c| c.0), i64::MAX),
            _ => match Phrase::of(&tokens, &counts.rows) {
                None => (0, i64::MAX),
                Some(phrase) => (self.count_phrase(&phrase, cap)?, cap),
            },
        };
        counts.rows.insert(word.to_string(), (n, counted_to));
        Ok(n)
    }

    /// Chunks holding `phrase`, counted up to `cap`.
    fn count_phrase(&self, phrase: &Phrase, cap: i64) -> Result<i64, PgError> {
        let mut p = Params::default();
        let rows = phrase_sql(&CHUNKS, phrase, &mut p);
        let cap = p.push(cap, Type::INT8);
        let sql = format!("SELECT count(*) FROM (SELECT 1 FROM ({rows}) r LIMIT {cap}) c");
        Ok(self.run(sql, p, false)?.first().map_or(0, |r| r.get(0)))
    }

    /// BM25 of `phrases` (an FTS5 OR query of them, in order) over `scheme`,
    /// best first: FTS5's bm25() with `weights` per field, term by term in
    /// its own order of operations, so scores equal the embedded index's to
    /// the last bit; ties by id, as there.
    fn bm25(
        &self,
        scheme: &Scheme,
        phrases: &[Phrase],
        weights: &[f64],
        corpus: Corpus,
        limit: usize,
    ) -> Result<Vec<(i64, f64)>, PgError> {
        if phrases.is_empty() || corpus.rows == 0 || limit == 0 {
            return Ok(Vec::new());
        }
        let mut p = Params::default();
        let sql = bm25_sql(scheme, phrases, weights, corpus, limit, &mut p);
        let prepared = phrases.iter().all(|ph| ph.tokens.len() == 1);
        Ok(self
            .run(sql, p, prepared)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }
}

/// `w_1 * tf_1 + … + w_n * tf_n` over the fields of `scheme` (FTS5 sums
/// the weight of each instance's column: the same, exactly, for weights
/// that are f32 values).
fn weighted(scheme: &Scheme, weights: &[f64], alias: &str, p: &mut Params) -> String {
    scheme
        .fields
        .iter()
        .zip(weights)
        .map(|(field, w)| format!("{}::float8 * {alias}.{field}", p.push(*w, Type::FLOAT8)))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// FTS5's IDF of a phrase in `n` rows matching `hits` of them.
fn idf(n: &str, hits: &str) -> String {
    format!(
        "(SELECT CASE WHEN v <= 0 THEN 1e-6::float8 ELSE v END FROM \
         (SELECT ln((({n} - {hits})::float8 + 0.5::float8) / ({hits}::float8 + 0.5::float8)) AS v) idf)"
    )
}

/// The statement scoring `phrases`: one row per posting of a one-token
/// phrase, one per row holding a longer one, then each row's sum in phrase
/// order.
fn bm25_sql(
    scheme: &Scheme,
    phrases: &[Phrase],
    weights: &[f64],
    corpus: Corpus,
    limit: usize,
    p: &mut Params,
) -> String {
    let n = p.push(corpus.rows, Type::INT8);
    let mut ctes = Vec::new();
    let mut branches = Vec::new();
    let singles: Vec<(i32, &(String, i64))> = phrases
        .iter()
        .enumerate()
        .filter(|(_, ph)| ph.tokens.len() == 1)
        .map(|(i, ph)| (i as i32, &ph.tokens[0]))
        .collect();
    if !singles.is_empty() {
        let ords = p.push(
            singles.iter().map(|s| s.0).collect::<Vec<i32>>(),
            Type::INT4_ARRAY,
        );
        let terms = p.push(
            singles
                .iter()
                .map(|s| s.1 .0.clone())
                .collect::<Vec<String>>(),
            Type::TEXT_ARRAY,
        );
        let dfs = p.push(
            singles.iter().map(|s| s.1 .1).collect::<Vec<i64>>(),
            Type::INT8_ARRAY,
        );
        let f = weighted(scheme, weights, "p", p);
        ctes.push(format!(
            "q AS (SELECT o, t, {idf} AS idf FROM unnest({ords}, {terms}, {dfs}) AS u(o, t, df))",
            idf = idf(&n, "u.df")
        ));
        branches.push(format!(
            "SELECT p.{id} AS id, q.o AS ord, q.idf, p.dl, {f} AS f FROM q JOIN {postings} p ON p.term = q.t",
            id = scheme.id,
            postings = scheme.postings
        ));
    }
    for (i, phrase) in phrases
        .iter()
        .enumerate()
        .filter(|(_, ph)| ph.tokens.len() > 1)
    {
        let rows = phrase_sql(scheme, phrase, p);
        let f = weighted(scheme, weights, "h", p);
        ctes.push(format!("ph{i} AS ({rows})"));
        branches.push(format!(
            "SELECT h.id, {i} AS ord, {idf} AS idf, h.dl, {f} AS f FROM ph{i} h",
            idf = idf(&n, &format!("(SELECT count(*) FROM ph{i})"))
        ));
    }
    let avgdl = p.push(corpus.tokens as f64 / corpus.rows as f64, Type::FLOAT8);
    let k1 = p.push(K1, Type::FLOAT8);
    let k1p1 = p.push(K1_PLUS_1, Type::FLOAT8);
    let b = p.push(B, Type::FLOAT8);
    let one_minus_b = p.push(ONE_MINUS_B, Type::FLOAT8);
    let limit = p.push(limit as i64, Type::INT8);
    format!(
        "WITH {ctes}, hits AS ({branches}) \
         SELECT id, sum(idf * ((f * {k1p1}) / (f + {k1} * ({one_minus_b} + {b} * dl::float8 / {avgdl}))) ORDER BY ord) AS score \
         FROM hits GROUP BY id ORDER BY score DESC, id LIMIT {limit}",
        ctes = ctes.join(", "),
        branches = branches.join(" UNION ALL ")
    )
}

/// The rows (id, dl, and the phrase's count in each field) holding
/// `phrase`: driven by its rarest token's postings, each other token one
/// primary-key probe per row (`LIMIT 1` keeps it a probe under any plan).
fn phrase_sql(scheme: &Scheme, phrase: &Phrase, p: &mut Params) -> String {
    let m = phrase.tokens.len() as i32;
    let r = phrase
        .tokens
        .iter()
        .enumerate()
        .min_by_key(|(_, (_, df))| *df)
        .map_or(0, |(i, _)| i as i32);
    let mut probes = String::new();
    let mut matches = Vec::new();
    for (i, (token, _)) in phrase.tokens.iter().enumerate() {
        let i = i as i32;
        if i == r {
            continue;
        }
        let t = p.push(token.clone(), Type::TEXT);
        probes.push_str(&format!(
            " CROSS JOIN LATERAL (SELECT pos FROM {postings} WHERE term = {t} AND {id} = d.{id} LIMIT 1) p{i}",
            postings = scheme.postings,
            id = scheme.id
        ));
        matches.push(format!("(x + {})::int2 = ANY(p{i}.pos)", i - r));
    }
    let tf: Vec<String> = scheme
        .fields
        .iter()
        .enumerate()
        .map(|(f, name)| {
            let (lo, hi) = (f as i32 * FIELD_SPAN, (f as i32 + 1) * FIELD_SPAN);
            format!("count(*) FILTER (WHERE x >= {lo} AND x < {hi}) AS {name}")
        })
        .collect();
    let driver = p.push(phrase.tokens[r as usize].0.clone(), Type::TEXT);
    format!(
        "SELECT d.{id} AS id, d.dl, {fields} FROM {postings} d{probes} \
         CROSS JOIN LATERAL (SELECT {tf} FROM unnest(d.pos) AS x \
             WHERE x % {span} >= {r} AND x % {span} - {r} + {last} < {span} AND {matches}) h \
         WHERE d.term = {driver} AND ({any})",
        id = scheme.id,
        fields = scheme
            .fields
            .iter()
            .map(|f| format!("h.{f}"))
            .collect::<Vec<_>>()
            .join(", "),
        postings = scheme.postings,
        tf = tf.join(", "),
        span = FIELD_SPAN,
        last = m - 1,
        matches = matches.join(" AND "),
        any = scheme
            .fields
            .iter()
            .map(|f| format!("h.{f}"))
            .collect::<Vec<_>>()
            .join(" + ")
            + " > 0",
    )
}

/// Everything an index holds, for copying it elsewhere without embedding
/// again: read in one snapshot.
pub fn export(config: &crate::config::Config) -> Result<crate::index::build::Export, IndexError> {
    let index = Postgres::open(config)?;
    let reading = Reading::begin(&index)?;
    let meta = reading.query(
        format!("SELECT key, value FROM {LIVE}.meta"),
        Params::default(),
    )?;
    let meta: HashMap<String, String> = meta.iter().map(|r| (r.get(0), r.get(1))).collect();
    let docs = reading.query(
        format!("SELECT id, path, hash, title, source, sections, modified FROM {LIVE}.documents ORDER BY id"),
        Params::default(),
    )?;
    let chunks = reading.query(
        format!(
            "SELECT c.doc_id, c.ordinal, c.start_byte, c.end_byte, c.heading, c.text, c.tokens, e.embedding::real[] \
             FROM {LIVE}.chunks c JOIN {LIVE}.embeddings e ON e.chunk_id = c.id ORDER BY c.doc_id, c.ordinal"
        ),
        Params::default(),
    )?;
    let mut export = crate::index::build::Export::new(&meta, &index.db.at)?;
    for d in &docs {
        export.document(
            d.get(0),
            d.get(1),
            d.get(2),
            d.get(3),
            d.get(4),
            d.get(5),
            d.get(6),
        );
    }
    for c in &chunks {
        // As real[]: a large result holding pgvector's own type hangs
        // tokio-postgres's query_typed (it looks the type up behind the rows:
        // rust-postgres/rust-postgres#1348).
        let vector: Vec<f32> = c.get(7);
        let chunk = crate::chunk::Chunk {
            ordinal: c.get::<_, i32>(1) as usize,
            start: c.get::<_, i64>(2) as usize,
            end: c.get::<_, i64>(3) as usize,
            heading_path: c.get(4),
            text: c.get(5),
            tokens: c.get::<_, i32>(6) as usize,
        };
        export.chunk(c.get(0), chunk, vector);
    }
    Ok(export)
}
