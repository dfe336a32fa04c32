-- ragmap's index in PostgreSQL + pgvector, schema version 1 (docs/postgres.md has the
-- measurements behind each choice). Only the `vector` extension is needed: text is segmented
-- by ragmap (jieba, then FTS5's unicode61 split, exactly as the embedded index stores it) and
-- BM25 is computed from the statistics below, giving FTS5's bm25() ranking.
--
-- A full build (the first run, --rebuild, a model change, `ragmap index --to`) creates all
-- of it as schema {schema} inside the run's one transaction, loads it with binary COPY, adds
-- the keys and indexes, and swaps it in for the old `ragmap` schema just before COMMIT, so
-- searches read the old generation until then. Incremental runs change `ragmap` in place.

-- name: tables
CREATE SCHEMA {schema};

-- What the last build recorded, as the embedded index's meta table: identity, model, model_stamp,
-- dimensions, settings, built_at, schema_version.
CREATE TABLE {schema}.meta (
    key    text PRIMARY KEY,
    value  text NOT NULL
);

-- One row: what every search reads first, in its snapshot.
CREATE TABLE {schema}.state (
    id                boolean PRIMARY KEY DEFAULT true CHECK (id),
    schema_version    integer     NOT NULL,
    generation        bigint      NOT NULL,   -- +1 by every committed index run
    committed_at      timestamptz NOT NULL DEFAULT now(),
    dimensions        integer     NOT NULL,   -- of embeddings.embedding
    documents         bigint      NOT NULL,   -- title search: N
    document_tokens   bigint      NOT NULL,   -- its sum(dl)
    chunks            bigint      NOT NULL,   -- BM25: N
    chunk_tokens      bigint      NOT NULL,   -- sum(chunks.dl): avgdl = chunk_tokens / chunks
    tokens            bigint      NOT NULL,   -- model tokens embedded (ragmap status)
    next_document_id  bigint      NOT NULL,   -- ids are never reused (as SQLite's AUTOINCREMENT)
    next_chunk_id     bigint      NOT NULL
);

CREATE TABLE {schema}.documents (
    id          bigint  NOT NULL,
    path        text    NOT NULL,
    hash        text    NOT NULL,
    title       text    NOT NULL,
    source      text    NOT NULL,
    sections    text[]  NOT NULL,
    modified    bigint,
    indexed_at  text    NOT NULL,
    dl          integer NOT NULL,   -- title + URL tokens
    terms       text[]  NOT NULL    -- its distinct title/URL tokens: what to take out of doc_postings
);

CREATE TABLE {schema}.chunks (
    id          bigint  NOT NULL,
    doc_id      bigint  NOT NULL,
    ordinal     integer NOT NULL,
    start_byte  bigint  NOT NULL,
    end_byte    bigint  NOT NULL,
    heading     text    NOT NULL,
    text        text    NOT NULL,
    tokens      integer NOT NULL,
    dl          integer NOT NULL,   -- tokens over title, URL, heading and body: BM25's D
    terms       text[]  NOT NULL    -- its distinct tokens: what to take out of postings
);

-- Vectors in a table of their own: beside the chunk text a row went over the 2 kB TOAST
-- threshold and every exact scan paid a detoast per row.
CREATE TABLE {schema}.embeddings (
    chunk_id   bigint NOT NULL,
    embedding  vector({dimensions}) NOT NULL
);

-- BM25: one row per (token, chunk), its count in each field and its positions
-- (field * 8192 + offset) for phrases. Scoring reads the primary key alone (INCLUDE).
CREATE TABLE {schema}.postings (
    term        text COLLATE "C" NOT NULL,
    chunk_id    bigint     NOT NULL,   -- no foreign key: deletes go through chunks.terms
    dl          integer    NOT NULL,
    tf_title    smallint   NOT NULL,
    tf_url      smallint   NOT NULL,
    tf_heading  smallint   NOT NULL,
    tf_body     smallint   NOT NULL,
    pos         smallint[] NOT NULL
);

CREATE TABLE {schema}.terms (          -- chunks holding each token
    term  text COLLATE "C" NOT NULL,
    df    integer NOT NULL
);

-- The title search: the same over documents' titles and URLs.
CREATE TABLE {schema}.doc_postings (
    term      text COLLATE "C" NOT NULL,
    doc_id    bigint     NOT NULL,
    dl        integer    NOT NULL,
    tf_title  smallint   NOT NULL,
    tf_url    smallint   NOT NULL,
    pos       smallint[] NOT NULL
);

CREATE TABLE {schema}.doc_terms (
    term  text COLLATE "C" NOT NULL,
    df    integer NOT NULL
);

-- name: keys
-- Added once the rows are in (a bulk load into indexed tables is several times slower).
ALTER TABLE {schema}.documents ADD PRIMARY KEY (id), ADD UNIQUE (path);
ALTER TABLE {schema}.chunks ADD PRIMARY KEY (id), ADD UNIQUE (doc_id, ordinal),
    ADD FOREIGN KEY (doc_id) REFERENCES {schema}.documents (id) ON DELETE CASCADE;
ALTER TABLE {schema}.embeddings ADD PRIMARY KEY (chunk_id),
    ADD FOREIGN KEY (chunk_id) REFERENCES {schema}.chunks (id) ON DELETE CASCADE;
ALTER TABLE {schema}.postings
    ADD PRIMARY KEY (term, chunk_id) INCLUDE (dl, tf_title, tf_url, tf_heading, tf_body);
ALTER TABLE {schema}.terms ADD PRIMARY KEY (term);
ALTER TABLE {schema}.doc_postings ADD PRIMARY KEY (term, doc_id) INCLUDE (dl, tf_title, tf_url);
ALTER TABLE {schema}.doc_terms ADD PRIMARY KEY (term);

-- name: hnsw
-- The graph holds half-precision copies (half the size; recall within 0.003 of float32 as
-- measured) while the table keeps float32, so a copy back to the embedded index is lossless.
-- m and ef_construction above pgvector's defaults: e5's query vectors needed ef_search 200-400
-- for recall@10 0.98 with m = 16, 100 with m = 32.
CREATE INDEX embeddings_hnsw ON {schema}.embeddings
    USING hnsw ((embedding::halfvec({dimensions})) halfvec_cosine_ops) WITH (m = 32, ef_construction = 128);
