-- ragmap's index in PostgreSQL + pgvector: schema version 1 (DRAFT for issue 20; see
-- docs/postgres.md for the measurements behind each choice). Only the `vector` extension is
-- required: no zhparser, pg_jieba, pg_bigm or BM25 extension. Text is segmented by ragmap
-- (jieba + lower-cased words, exactly as for the embedded index) and BM25 is computed here
-- from stored statistics, giving FTS5's bm25() ranking (measured: same top 10, same order).
--
-- ragmap applies this under a transaction-level advisory lock, so two processes migrating at
-- once serialise; `vector` must already exist or the role must be allowed to create it.
--   BEGIN;
--   SELECT pg_advisory_xact_lock(7250845342977720320);  -- 'ragmap:migrate' (a fixed key)
--   SELECT schema_version FROM ragmap.meta;             -- newer than ragmap knows: refuse
--   ... statements below (or the migration from the stored version) ...
--   COMMIT;

CREATE EXTENSION IF NOT EXISTS vector;  -- not trusted: needs a superuser (or the cloud's admin role) once

CREATE SCHEMA IF NOT EXISTS ragmap;

-- One row: the committed generation, the statistics BM25 needs, and the identity of what
-- the vectors mean. Readers take all of it in one snapshot with their search.
CREATE TABLE ragmap.meta (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    schema_version   integer NOT NULL,
    generation       bigint  NOT NULL DEFAULT 0,      -- +1 by every committed index run
    committed_at     timestamptz,
    embed_model      text    NOT NULL,                -- e.g. multilingual-e5-small:<sha256>; a mismatch is refused
    dimensions       integer NOT NULL,                -- the vector(N) below
    settings         text    NOT NULL,                -- chunker identity (a change rebuilds)
    chunks           bigint  NOT NULL DEFAULT 0,      -- BM25 N
    chunk_tokens     bigint  NOT NULL DEFAULT 0,      -- sum(chunks.dl): avgdl = chunk_tokens / chunks
    documents        bigint  NOT NULL DEFAULT 0,      -- title search: N
    document_tokens  bigint  NOT NULL DEFAULT 0       -- sum(documents.dl)
);

CREATE TABLE ragmap.documents (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    path        text        NOT NULL UNIQUE,
    hash        text        NOT NULL,
    title       text        NOT NULL,
    source      text        NOT NULL,
    sections    jsonb       NOT NULL,
    modified    bigint,
    indexed_at  timestamptz NOT NULL,
    dl          integer     NOT NULL,  -- title + URL index tokens
    terms       text[]      NOT NULL   -- its distinct title/URL terms: what to take out of doc_postings
);

CREATE TABLE ragmap.chunks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc_id      bigint  NOT NULL REFERENCES ragmap.documents (id) ON DELETE CASCADE,
    ordinal     integer NOT NULL,
    start_byte  integer NOT NULL,
    end_byte    integer NOT NULL,
    heading     text    NOT NULL,
    text        text    NOT NULL,
    tokens      integer NOT NULL,
    dl          integer NOT NULL,  -- index tokens over title, URL, heading and body (BM25's D)
    terms       text[]  NOT NULL,  -- its distinct terms: what to take out of postings on delete
    UNIQUE (doc_id, ordinal)       -- neighbours, first chunk of a document
);

-- Vectors in a table of their own: a 1.5 kB row stays inline (with the chunk text in the same
-- row it went over the 2 kB TOAST threshold and every exact scan paid a detoast per row).
CREATE TABLE ragmap.embeddings (
    chunk_id   bigint PRIMARY KEY REFERENCES ragmap.chunks (id) ON DELETE CASCADE,
    embedding  vector(384) NOT NULL  -- N = meta.dimensions, fixed when the schema is created
);
-- The graph holds half-precision copies (half the size, recall within 0.003 of float32 as
-- measured); the table keeps float32, so copying the index back to the embedded one is lossless.
-- m/ef_construction above the defaults: e5 query vectors needed ef_search 200-400 with m = 16.
CREATE INDEX embeddings_hnsw ON ragmap.embeddings
    USING hnsw ((embedding::halfvec(384)) halfvec_cosine_ops) WITH (m = 32, ef_construction = 128);

-- BM25 statistics: one row per (term, chunk) with the term's count in each field and its
-- positions (field * 8192 + offset) for phrases ("大 语言 模型", "max tokens"). Scoring reads
-- the primary key alone (index-only scan: INCLUDE holds what the formula needs).
CREATE TABLE ragmap.postings (
    term        text     NOT NULL,
    chunk_id    bigint   NOT NULL,  -- no foreign key: deletes go through chunks.terms (an FK would need a second index)
    dl          integer  NOT NULL,  -- chunks.dl, copied so scoring needs no join
    tf_title    smallint NOT NULL,
    tf_url      smallint NOT NULL,
    tf_heading  smallint NOT NULL,
    tf_body     smallint NOT NULL,
    pos         smallint[] NOT NULL,
    PRIMARY KEY (term, chunk_id) INCLUDE (dl, tf_title, tf_url, tf_heading, tf_body)
);

CREATE TABLE ragmap.terms (      -- document frequency per term (rows holding it)
    term  text    PRIMARY KEY,
    df    integer NOT NULL
);

-- The title search (documents whose title or URL holds a name the question uses): the same
-- scheme over documents, two fields.
CREATE TABLE ragmap.doc_postings (
    term      text     NOT NULL,
    doc_id    bigint   NOT NULL,
    dl        integer  NOT NULL,
    tf_title  smallint NOT NULL,
    tf_url    smallint NOT NULL,
    PRIMARY KEY (term, doc_id) INCLUDE (dl, tf_title, tf_url)
);

CREATE TABLE ragmap.doc_terms (
    term  text    PRIMARY KEY,
    df    integer NOT NULL
);

-- INSERT INTO ragmap.meta (schema_version, embed_model, dimensions, settings) VALUES (1, $1, $2, $3);
