-- ragmap's reads and writes against docs/postgres-schema.sql (DRAFT for issue 20), one
-- statement per `-- name:` block, parameters as the server takes them ($1, $2, ...).
-- scripts/bench_py/pg_design.py `check` runs every one of them against a real server.
--
-- A search is one transaction, so every statement sees the same committed generation:
--   BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;  ... ;  COMMIT;
-- Sessions set: application_name = 'ragmap serve' (or 'ragmap index', ...),
--   statement_timeout (searches: seconds; the indexer sets it to 0 locally for COPY and
--   index builds), hnsw.ef_search (>= the candidates asked for, see docs/postgres.md).

-- name: generation
-- The generation this snapshot sees and the statistics BM25 needs.
SELECT generation, chunks, chunk_tokens, documents, document_tokens, embed_model, dimensions
FROM ragmap.meta;

-- name: document_frequencies
-- For pruning the most common terms before scoring (LEXICAL_ROW_BUDGET), as the embedded
-- index counts them in FTS5: here they are stored, one index lookup per term.
SELECT term, df FROM ragmap.terms WHERE term = ANY($1::text[]);

-- name: vector_search
-- $1 query vector, $2 candidates. hnsw.ef_search must be >= $2 (it caps the rows an HNSW
-- scan returns); hnsw.iterative_scan = relaxed_order keeps scanning when rows of an
-- uncommitted or not yet vacuumed generation are skipped, so the list is never short.
-- The expression matches the index's (embedding::halfvec(N)).
SELECT chunk_id, distance FROM (
    SELECT chunk_id, embedding::halfvec(384) <=> $1::halfvec(384) AS distance
    FROM ragmap.embeddings ORDER BY embedding::halfvec(384) <=> $1::halfvec(384) LIMIT $2
) hits ORDER BY distance, chunk_id;

-- name: lexical_search
-- BM25 exactly as FTS5's bm25() with column weights: for each term, f = Σ weight(field) ×
-- count in field; score = Σ idf · f · (k1 + 1) / (f + k1 · (1 − b + b · dl / avgdl)), k1 = 1.2,
-- b = 0.75, idf = max(ln((N − n + 0.5) / (n + 0.5)), 1e-6). $1 single-word terms,
-- $2..$5 weights of title, URL, heading, body, $6 limit. A phrase term adds one CTE
-- (see `lexical_phrase`) and one UNION ALL branch; ragmap builds the statement for the
-- question's shape (a few shapes in practice: statements are cached by text).
WITH st AS (
    SELECT chunks::float8 AS n, 1.2::float8 * (1 - 0.75) AS c1,
           1.2::float8 * 0.75 / greatest(chunk_tokens::float8 / greatest(chunks, 1), 1) AS c2
    FROM ragmap.meta
), single AS (
    SELECT p.chunk_id, p.dl, q.idf,
           $2::float8 * p.tf_title + $3::float8 * p.tf_url + $4::float8 * p.tf_heading + $5::float8 * p.tf_body AS f
    FROM (SELECT t.term, greatest(ln((st.n - t.df + 0.5::float8) / (t.df + 0.5::float8)), 1e-6::float8) AS idf
          FROM st, ragmap.terms t WHERE t.term = ANY($1::text[])) q
    JOIN ragmap.postings p ON p.term = q.term
), hits AS (
    SELECT chunk_id, dl, idf, f FROM single
)
SELECT chunk_id, sum(idf * f * 2.2::float8 / (f + st.c1 + st.c2 * dl)) AS score
FROM hits, st
GROUP BY chunk_id ORDER BY score DESC, chunk_id LIMIT $6;

-- name: lexical_phrase
-- The same with one two-word phrase ($7 its rarest word, $8 the other, which follows it
-- at +1; for the other order or more words the offsets and probes change). Driven by the
-- rarest word's postings, each other word one primary-key probe per row: LIMIT 1 keeps the
-- probe a nested loop whatever the plan (a generic plan chose hash joins over whole posting
-- lists and took 150-200 ms instead of 5-10).
WITH st AS (
    SELECT chunks::float8 AS n, 1.2::float8 * (1 - 0.75) AS c1,
           1.2::float8 * 0.75 / greatest(chunk_tokens::float8 / greatest(chunks, 1), 1) AS c2
    FROM ragmap.meta
), single AS (
    SELECT p.chunk_id, p.dl, q.idf,
           $2::float8 * p.tf_title + $3::float8 * p.tf_url + $4::float8 * p.tf_heading + $5::float8 * p.tf_body AS f
    FROM (SELECT t.term, greatest(ln((st.n - t.df + 0.5::float8) / (t.df + 0.5::float8)), 1e-6::float8) AS idf
          FROM st, ragmap.terms t WHERE t.term = ANY($1::text[])) q
    JOIN ragmap.postings p ON p.term = q.term
), ph0 AS (
    SELECT pl.chunk_id, pl.dl, h.tf, count(*) OVER () AS nhit
    FROM ragmap.postings pl
    CROSS JOIN LATERAL (SELECT pos FROM ragmap.postings
                        WHERE term = $8 AND chunk_id = pl.chunk_id LIMIT 1) p1
    CROSS JOIN LATERAL (
        SELECT ARRAY[count(*) FILTER (WHERE x < 8192),
                     count(*) FILTER (WHERE x >= 8192 AND x < 16384),
                     count(*) FILTER (WHERE x >= 16384 AND x < 24576),
                     count(*) FILTER (WHERE x >= 24576)]::float8[] AS tf
        FROM unnest(pl.pos) AS x WHERE (x + 1)::int2 = ANY(p1.pos)) h
    WHERE pl.term = $7 AND h.tf <> '{0,0,0,0}'
), hits AS (
    SELECT chunk_id, dl, idf, f FROM single
    UNION ALL
    SELECT chunk_id, dl, greatest(ln((st.n - nhit + 0.5::float8) / (nhit + 0.5::float8)), 1e-6::float8),
           $2::float8 * tf[1] + $3::float8 * tf[2] + $4::float8 * tf[3] + $5::float8 * tf[4]
    FROM ph0, st
)
SELECT chunk_id, sum(idf * f * 2.2::float8 / (f + st.c1 + st.c2 * dl)) AS score
FROM hits, st
GROUP BY chunk_id ORDER BY score DESC, chunk_id LIMIT $6;

-- name: title_search
-- Documents whose title or URL holds the question's names, best BM25 first ($1 names,
-- $2 title weight, $3 URL weight, $4 limit).
WITH st AS (
    SELECT documents::float8 AS n, 1.2::float8 * (1 - 0.75) AS c1,
           1.2::float8 * 0.75 / greatest(document_tokens::float8 / greatest(documents, 1), 1) AS c2
    FROM ragmap.meta
), hits AS (
    SELECT p.doc_id, p.dl, q.idf, $2::float8 * p.tf_title + $3::float8 * p.tf_url AS f
    FROM (SELECT t.term, greatest(ln((st.n - t.df + 0.5::float8) / (t.df + 0.5::float8)), 1e-6::float8) AS idf
          FROM st, ragmap.doc_terms t WHERE t.term = ANY($1::text[])) q
    JOIN ragmap.doc_postings p ON p.term = q.term
)
SELECT doc_id, sum(idf * f * 2.2::float8 / (f + st.c1 + st.c2 * dl)) AS score
FROM hits, st
GROUP BY doc_id ORDER BY score DESC, doc_id LIMIT $4;

-- name: chunks_by_ids
SELECT c.id, c.doc_id, c.ordinal, c.start_byte, c.end_byte, c.heading, c.text, d.title, d.source, d.path
FROM ragmap.chunks c JOIN ragmap.documents d ON d.id = c.doc_id
WHERE c.id = ANY($1::bigint[]);

-- name: neighbours
-- $1 document, $2 ordinal, $3 radius.
SELECT c.id, c.doc_id, c.ordinal, c.start_byte, c.end_byte, c.heading, c.text, d.title, d.source, d.path
FROM ragmap.chunks c JOIN ragmap.documents d ON d.id = c.doc_id
WHERE c.doc_id = $1 AND c.ordinal BETWEEN $2 - $3 AND $2 + $3
ORDER BY c.ordinal;

-- name: first_chunk_of
SELECT id FROM ragmap.chunks WHERE doc_id = $1 ORDER BY ordinal LIMIT 1;

-- name: replica_lag
-- On a server in recovery (a replica): how far behind the primary it is. The replay
-- timestamp ages while the primary is idle, so nothing unreplayed means lag 0.
SELECT pg_is_in_recovery() AS replica,
       (CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
             ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END)::float8 AS lag_seconds,
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8 AS unreplayed_bytes;

-- ---------------------------------------------------------------- one index run
-- All of it in ONE transaction (READ COMMITTED is enough: the advisory lock serialises
-- writers); a killed run rolls back and leaves the previous generation.

-- name: lock_indexer
-- Concurrent `ragmap index` runs wait here (pg_try_advisory_xact_lock to fail fast instead).
SELECT pg_advisory_xact_lock(7250845342977720321);  -- 'ragmap:index'

-- name: check_identity
SELECT embed_model, dimensions, settings, generation FROM ragmap.meta FOR UPDATE;

-- name: known_documents
SELECT id, path, hash FROM ragmap.documents;

-- name: forget_postings
-- Before deleting changed/removed documents ($1 their ids): their chunks' postings and
-- document frequencies, found through chunks.terms (primary-key probes, no scan).
WITH gone AS (
    SELECT c.id, t.term FROM ragmap.chunks c CROSS JOIN LATERAL unnest(c.terms) AS t(term)
    WHERE c.doc_id = ANY($1::bigint[])
), del AS (
    DELETE FROM ragmap.postings p USING gone WHERE p.term = gone.term AND p.chunk_id = gone.id
)
UPDATE ragmap.terms t SET df = t.df - g.n
FROM (SELECT term, count(*) AS n FROM gone GROUP BY term) g WHERE t.term = g.term;

-- name: forget_doc_postings
WITH gone AS (
    SELECT d.id, t.term FROM ragmap.documents d CROSS JOIN LATERAL unnest(d.terms) AS t(term)
    WHERE d.id = ANY($1::bigint[])
), del AS (
    DELETE FROM ragmap.doc_postings p USING gone WHERE p.term = gone.term AND p.doc_id = gone.id
)
UPDATE ragmap.doc_terms t SET df = t.df - g.n
FROM (SELECT term, count(*) AS n FROM gone GROUP BY term) g WHERE t.term = g.term;

-- name: delete_documents
-- Chunks and embeddings go with them (ON DELETE CASCADE).
DELETE FROM ragmap.documents WHERE id = ANY($1::bigint[]);

-- (then: INSERT the new documents RETURNING id; COPY chunks, embeddings, postings and
--  doc_postings FROM STDIN (FORMAT binary), ids taken from the sequences first with
--  SELECT nextval(...) FROM generate_series(1, $n))

-- name: count_new_terms
-- $1 the new documents' ids: their chunks' terms counted into the document frequencies.
INSERT INTO ragmap.terms (term, df)
SELECT t.term, count(*) FROM ragmap.chunks c CROSS JOIN LATERAL unnest(c.terms) AS t(term)
WHERE c.doc_id = ANY($1::bigint[]) GROUP BY t.term
ON CONFLICT (term) DO UPDATE SET df = ragmap.terms.df + excluded.df;

-- name: count_new_doc_terms
INSERT INTO ragmap.doc_terms (term, df)
SELECT t.term, count(*) FROM ragmap.documents d CROSS JOIN LATERAL unnest(d.terms) AS t(term)
WHERE d.id = ANY($1::bigint[]) GROUP BY t.term
ON CONFLICT (term) DO UPDATE SET df = ragmap.doc_terms.df + excluded.df;

-- name: drop_unused_terms
WITH a AS (DELETE FROM ragmap.terms WHERE df <= 0)
DELETE FROM ragmap.doc_terms WHERE df <= 0;

-- name: commit_generation
-- Statistics from the rows themselves, the generation bumped; NOTIFY is delivered at COMMIT
-- (to the primary's listeners only: replicas poll the meta row).
UPDATE ragmap.meta SET
    generation = generation + 1, committed_at = now(),
    chunks = (SELECT count(*) FROM ragmap.chunks),
    chunk_tokens = (SELECT coalesce(sum(dl), 0) FROM ragmap.chunks),
    documents = (SELECT count(*) FROM ragmap.documents),
    document_tokens = (SELECT coalesce(sum(dl), 0) FROM ragmap.documents)
RETURNING generation;

-- name: notify
SELECT pg_notify('ragmap_generation', $1::text);
