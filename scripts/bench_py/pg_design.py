"""Measurements behind docs/postgres.md: ragmap's embedded index (SQLite FTS5 +
vectors) loaded into PostgreSQL + pgvector, and each candidate SQL design compared
with what the embedded index does, in one process, side by side.

  pg_design.py load    --catalog INDEX/catalog.sqlite --url URL --schema S
  pg_design.py lexical --catalog ... --url ... --schema S --terms TERMS.jsonl [--budget]
  pg_design.py vectors --url ... --schema S [--queries Q.npy] [--m 32 --ef-construction 128]
  pg_design.py synth-vectors --url ... --schema S --rows 100000 [--around S2 [--mix]]
  pg_design.py hybrid  --url ... --schema S [--vector-schema S2] --terms ... --queries Q.npy
  pg_design.py check   --catalog ... --url ... --schema S

`load` exports chunks, their field terms and vectors from the catalogue (FTS5's own
tokens and positions, read through fts5vocab, so both engines see the same tokens)
and COPYs them into schema S. `lexical` runs each question's lexical searches (the
terms ragmap searches for: own terms, bridges, title names; one JSON line per
question, see docs/postgres.md) against FTS5's bm25() with ragmap's field weights
and against (a) tsvector + ts_rank / ts_rank_cd, (b) BM25 computed in SQL from
stored statistics; prints top-10 agreement with FTS5 and latency. `vectors` builds
HNSW indexes on vector(384) and halfvec(384) and reports recall@10 against exact
search at several hnsw.ef_search, with p50 latency and build times; `synth-vectors`
makes 100k-row vector sets. `hybrid` times one search's statements in one snapshot.
`check` applies docs/postgres-schema.sql to a fresh database and runs every statement
of docs/postgres-queries.sql (searches against FTS5, an index run that deletes and
re-adds a document).

Needs numpy and psycopg 3 (pip install "psycopg[binary]==3.2.13" numpy).
"""

import argparse
import json
import sqlite3
import statistics
import sys
import time
from collections import defaultdict

import numpy as np
import psycopg
import psycopg.types.json

WEIGHTS = {"title": 3.0, "url": 3.0, "heading": 2.0, "body": 1.0}  # ragmap's defaults
FIELDS = ["title", "url", "heading", "body"]
LETTER = {"title": "A", "url": "B", "heading": "C", "body": "D"}
K1, B = 1.2, 0.75  # FTS5's bm25() constants
OWN_BUDGET, BRIDGE_BUDGET = 8000, 500  # src/index/store.rs, src/retrieve.rs
DIM = 384
DF = {}  # term -> document frequency, filled by `lexical` (the client knows it: it prunes with it)
FIELD_SPAN = 8192  # postings.pos = field * FIELD_SPAN + token offset (int2)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- load


def tsv_lexeme(t):
    return "'" + t.replace("\\", "\\\\").replace("'", "''") + "'"


def copy_text(v):
    return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def export(catalog):
    """Per chunk: field lengths, per-term per-field counts, tsvector text; per doc: title/url terms."""
    db = sqlite3.connect(catalog)
    db.execute("CREATE VIRTUAL TABLE temp.ci USING fts5vocab(main, chunk_terms, 'instance')")
    db.execute("CREATE VIRTUAL TABLE temp.di USING fts5vocab(main, doc_terms, 'instance')")
    chunks = defaultdict(lambda: {"len": [0, 0, 0, 0], "tok": defaultdict(list)})
    for term, doc, col, off in db.execute("SELECT term, doc, col, offset FROM temp.ci"):
        c = chunks[doc]
        f = FIELDS.index(col)
        c["len"][f] += 1
        c["tok"][term].append((f, off))
    docs = defaultdict(lambda: {"len": [0, 0], "tok": defaultdict(list)})
    for term, doc, col, off in db.execute("SELECT term, doc, col, offset FROM temp.di"):
        d = docs[doc]
        f = ["title", "url"].index(col)
        d["len"][f] += 1
        d["tok"][term].append((f, off))
    meta = {r[0]: r[1:] for r in db.execute("SELECT id, doc_id, ordinal FROM chunks")}
    return db, chunks, docs, meta


def tsvector_text(entry, nfields):
    """Positions: each field after the previous one plus a gap (no phrase spans two fields)."""
    starts, at = [], 1
    for f in range(nfields):
        starts.append(at)
        at += entry["len"][f] + 1
    parts = []
    for term, occ in entry["tok"].items():
        pos = sorted(min(starts[f] + off, 16383) for f, off in occ)
        letters = {starts[f] + off: "ABCD"[f] for f, off in occ}
        parts.append(tsv_lexeme(term) + ":" + ",".join(f"{p}{letters.get(p, 'D')}" for p in pos[:256]))
    return " ".join(parts)


def load(args):
    t0 = time.time()
    db, chunks, docs, meta = export(args.catalog)
    log(f"exported {len(chunks)} chunks, {len(docs)} docs in {time.time()-t0:.1f} s")
    s = args.schema
    with psycopg.connect(args.url, autocommit=True) as pg:
        pg.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
        pg.execute(f"CREATE SCHEMA {s}")
        pg.execute(f"""
            CREATE TABLE {s}.chunks (id bigint PRIMARY KEY, doc_id bigint NOT NULL, ordinal int NOT NULL,
                len_title int, len_url int, len_heading int, len_body int, dl int NOT NULL, tsv tsvector NOT NULL);
            CREATE TABLE {s}.postings (term text NOT NULL, chunk_id bigint NOT NULL, dl int NOT NULL,
                tf_title int2 NOT NULL, tf_url int2 NOT NULL, tf_heading int2 NOT NULL, tf_body int2 NOT NULL,
                pos int2[] NOT NULL);
            CREATE TABLE {s}.terms (term text PRIMARY KEY, df int NOT NULL);
            -- (postings' key is created after the load)
            CREATE TABLE {s}.docs (id bigint PRIMARY KEY, len_title int, len_url int, tsv tsvector NOT NULL);
            CREATE TABLE {s}.doc_postings (term text NOT NULL, doc_id bigint NOT NULL, dl int NOT NULL,
                tf_title int2 NOT NULL, tf_url int2 NOT NULL);
            CREATE TABLE {s}.doc_terms (term text PRIMARY KEY, df int NOT NULL);
            CREATE TABLE {s}.stats (what text PRIMARY KEY, n bigint NOT NULL, avgdl float8 NOT NULL);
            CREATE TABLE {s}.vectors (id bigint PRIMARY KEY, v vector({DIM}) NOT NULL, h halfvec({DIM}) NOT NULL);
        """)
        t1 = time.time()
        df, ddf = defaultdict(int), defaultdict(int)
        with pg.cursor() as cur:
            with cur.copy(f"COPY {s}.chunks FROM STDIN") as cp:
                for cid, c in chunks.items():
                    doc_id, ordinal = meta[cid]
                    cp.write(f"{cid}\t{doc_id}\t{ordinal}\t" + "\t".join(map(str, c["len"]))
                             + f"\t{sum(c['len'])}\t{copy_text(tsvector_text(c, 4))}\n")
            with cur.copy(f"COPY {s}.postings FROM STDIN") as cp:
                for cid, c in chunks.items():
                    dl = sum(c["len"])
                    for term, occ in c["tok"].items():
                        tf = [0, 0, 0, 0]
                        for f, _ in occ:
                            tf[f] += 1
                        df[term] += 1
                        # field * 8192 + offset: adjacency within a field, field = pos / 8192
                        pos = "{" + ",".join(str(f * FIELD_SPAN + min(o, FIELD_SPAN - 1)) for f, o in sorted(occ)) + "}"
                        cp.write(f"{copy_text(term)}\t{cid}\t{dl}\t" + "\t".join(map(str, tf)) + f"\t{pos}\n")
            with cur.copy(f"COPY {s}.terms FROM STDIN") as cp:
                for term, n in df.items():
                    cp.write(f"{copy_text(term)}\t{n}\n")
            with cur.copy(f"COPY {s}.docs FROM STDIN") as cp:
                for did, d in docs.items():
                    cp.write(f"{did}\t{d['len'][0]}\t{d['len'][1]}\t{copy_text(tsvector_text(d, 2))}\n")
            with cur.copy(f"COPY {s}.doc_postings FROM STDIN") as cp:
                for did, d in docs.items():
                    for term, occ in d["tok"].items():
                        tf = [0, 0]
                        for f, _ in occ:
                            tf[f] += 1
                        ddf[term] += 1
                        cp.write(f"{copy_text(term)}\t{did}\t{sum(d['len'])}\t{tf[0]}\t{tf[1]}\n")
            with cur.copy(f"COPY {s}.doc_terms FROM STDIN") as cp:
                for term, n in ddf.items():
                    cp.write(f"{copy_text(term)}\t{n}\n")
            with cur.copy(f"COPY {s}.vectors (id, v, h) FROM STDIN") as cp:
                for cid, blob in db.execute("SELECT id, vector FROM chunks"):
                    v = np.frombuffer(blob, dtype="<f4")
                    text = "[" + ",".join(f"{x:.7g}" for x in v) + "]"
                    cp.write(f"{cid}\t{text}\t{text}\n")
        n = len(chunks)
        avgdl = sum(sum(c["len"]) for c in chunks.values()) / max(n, 1)
        davg = sum(sum(d["len"]) for d in docs.values()) / max(len(docs), 1)
        pg.execute(f"INSERT INTO {s}.stats VALUES ('chunks', %s, %s), ('docs', %s, %s)", (n, avgdl, len(docs), davg))
        log(f"COPY {time.time()-t1:.1f} s")
        t2 = time.time()
        pg.execute(f"CREATE INDEX ON {s}.chunks USING gin (tsv)")
        t3 = time.time()
        pg.execute(f"ALTER TABLE {s}.postings ADD PRIMARY KEY (term, chunk_id) INCLUDE (dl, tf_title, tf_url, tf_heading, tf_body)")
        t4 = time.time()
        pg.execute(f"CREATE INDEX ON {s}.docs USING gin (tsv)")
        pg.execute(f"CREATE INDEX ON {s}.doc_postings (term) INCLUDE (doc_id, dl, tf_title, tf_url)")
        pg.execute(f"CREATE INDEX ON {s}.chunks (doc_id, ordinal)")
        pg.execute(f"VACUUM (ANALYZE) {s}.chunks, {s}.postings, {s}.terms, {s}.docs, {s}.doc_postings, {s}.doc_terms, {s}.vectors")
        log(f"GIN {t3-t2:.1f} s, postings btree {t4-t3:.1f} s")
        sizes = pg.execute("""SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r','i') ORDER BY 2 DESC""", (s,)).fetchall()
        print(json.dumps({"schema": s, "chunks": n, "docs": len(docs), "avgdl": avgdl,
                          "postings_rows": sum(len(c["tok"]) for c in chunks.values()),
                          "load_seconds": {"copy": round(t2 - t1, 1), "gin": round(t3 - t2, 1), "postings_btree": round(t4 - t3, 1)},
                          "sizes_mb": {k: round(v / 1e6, 1) for k, v in sizes}}))


# ---------------------------------------------------------------- lexical


class Tokens:
    """A ragmap term as FTS5's tokenizer splits it (a phrase when several tokens)."""

    def __init__(self):
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize = 'unicode61 remove_diacritics 2')")
        self.db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")

    def __call__(self, term):
        self.db.execute("DELETE FROM t")
        self.db.execute("INSERT INTO t(rowid, x) VALUES (1, ?)", (term,))
        return tuple(r[0] for r in self.db.execute("SELECT term FROM v ORDER BY offset"))


def fts_quote(term):
    return '"' + term.replace('"', '""') + '"'


def prune(phrases, df_of, budget, drop_common, n_rows):
    """ragmap's Store::prune_counted on document frequencies (the same counts)."""
    if n_rows <= OWN_BUDGET or (len(phrases) <= 1 and not drop_common):
        return phrases
    cap = budget + 1
    counted = sorted((min(min(df_of(w) for w in p), cap), i) for i, p in enumerate(phrases))
    if sum(n for n, _ in counted) <= budget:
        return phrases
    kept, total = [], 0
    for n, i in counted:
        if n == 0:
            continue
        if total + n > budget and (drop_common or kept):
            break
        total += n
        kept.append(i)
    return [phrases[i] for i in sorted(kept)]


def tsquery(phrases):
    return " | ".join("(" + " <-> ".join(tsv_lexeme(w) for w in p) + ")" if len(p) > 1 else tsv_lexeme(p[0])
                      for p in phrases)


# BM25 as FTS5 computes it (fts5_aux.c, fts5Bm25Function): per phrase, its frequency in a
# row is the sum of the weights of the columns of each hit; D is the row's token count over
# all columns; IDF = ln((N - n + 0.5) / (n + 0.5)), at least 1e-6. Single words read their
# per-field counts and df from the index; a phrase joins its words' postings on the chunk and
# counts the positions where each next word follows (pos = field * 8192 + offset).
def bm25_sql(s, phrases, limit_param="limit"):
    """One statement: the weighted frequency f of each term in each row that has it, then
    sum(idf * f * (k1 + 1) / (f + k1 * (1 - b + b * dl / avgdl))), float8 throughout (numeric
    arithmetic made the aggregate 5x slower)."""
    wf = "%(wt)s * {t}[1] + %(wu)s * {t}[2] + %(wh)s * {t}[3] + %(wb)s * {t}[4]"
    ctes = [f"""st AS (SELECT n::float8 AS n, {K1}::float8 * (1 - {B}) AS c1, {K1}::float8 * {B} / avgdl AS c2
           FROM {s}.stats WHERE what = 'chunks')""",
            f"""single AS (
    SELECT p.chunk_id, p.dl, q.idf,
           %(wt)s * p.tf_title + %(wu)s * p.tf_url + %(wh)s * p.tf_heading + %(wb)s * p.tf_body AS f
    FROM (SELECT t.term, greatest(ln((st.n - t.df + 0.5::float8) / (t.df + 0.5::float8)), 1e-6::float8) AS idf
          FROM st, {s}.terms t WHERE t.term = ANY(%(words)s)) q
    JOIN {s}.postings p ON p.term = q.term)"""]
    parts = ["SELECT chunk_id, dl, idf, f FROM single"]
    for k, p in enumerate(phrases):
        # Driven by the phrase's rarest word (`lead`: the client knows document frequencies);
        # each other word is one primary-key probe per row (LIMIT 1 keeps the probe a nested
        # loop whatever the plan: a generic plan once chose hash joins over whole posting lists).
        lead = p.index(min(p, key=lambda w: (DF.get(w, 0), w)))
        probes = " ".join(
            f"CROSS JOIN LATERAL (SELECT pos FROM {s}.postings WHERE term = %(ph{k}_{j})s AND chunk_id = pl.chunk_id LIMIT 1) p{j}"
            for j in range(len(p)) if j != lead)
        follows = " AND ".join(f"(x + {j - lead})::int2 = ANY(p{j}.pos)" for j in range(len(p)) if j != lead)
        ctes.append(f"""ph{k} AS (
    SELECT pl.chunk_id, pl.dl, h.tf, count(*) OVER () AS nhit
    FROM {s}.postings pl {probes}
    CROSS JOIN LATERAL (
        SELECT ARRAY[count(*) FILTER (WHERE x < 8192), count(*) FILTER (WHERE x >= 8192 AND x < 16384),
                     count(*) FILTER (WHERE x >= 16384 AND x < 24576), count(*) FILTER (WHERE x >= 24576)]::float8[] AS tf
        FROM unnest(pl.pos) AS x WHERE {follows}) h
    WHERE pl.term = %(ph{k}_{lead})s AND h.tf <> '{{0,0,0,0}}')""")
        parts.append("SELECT chunk_id, dl, greatest(ln((st.n - nhit + 0.5::float8) / (nhit + 0.5::float8)), 1e-6::float8), "
                     + wf.format(t="tf") + f" FROM ph{k}, st")
    return ("WITH " + ",\n".join(ctes) + ",\nhits AS (" + "\n    UNION ALL ".join(parts) + ")\n" +
            f"""SELECT chunk_id, sum(idf * f * {K1 + 1}::float8 / (f + st.c1 + st.c2 * dl)) AS score
FROM hits, st
GROUP BY chunk_id ORDER BY score DESC, chunk_id LIMIT %({limit_param})s""")


def bm25_params(phrases, limit, weights):
    params = {"words": [p[0] for p in phrases if len(p) == 1], "limit": limit, "wt": weights["title"],
              "wu": weights["url"], "wh": weights["heading"], "wb": weights["body"]}
    for k, p in enumerate(x for x in phrases if len(x) > 1):
        for j, word in enumerate(p):
            params[f"ph{k}_{j}"] = word
    return params


TITLE_BM25_SQL = """
WITH q AS (
    SELECT t.term, greatest(ln((st.n - t.df + 0.5::float8) / (t.df + 0.5::float8)), 1e-6::float8) AS idf
    FROM {s}.doc_terms t, {s}.stats st WHERE st.what = 'docs' AND t.term = ANY(%(words)s)
)
SELECT p.doc_id, sum(q.idf * f * ({k1}::float8 + 1) / (f + {k1}::float8 * (1 - {b}::float8 + {b}::float8 * p.dl / st.avgdl))) AS score
FROM q JOIN {s}.doc_postings p ON p.term = q.term
CROSS JOIN LATERAL (SELECT %(wt)s * p.tf_title + %(wu)s * p.tf_url AS f) w, {s}.stats st
WHERE st.what = 'docs'
GROUP BY p.doc_id ORDER BY score DESC, p.doc_id LIMIT %(limit)s
"""


def ranked(rows):
    return [r[0] for r in rows]


def agreement(ref, got, k=10):
    """|top-k ∩ top-k| / min(k, |ref|), whether the first hit is the same, whether the top k are in the same order."""
    a, b = ref[:k], got[:k]
    if not a:
        return None
    return len(set(a) & set(b)) / len(a), (a[0] == b[0]) if b else False, a == b


def timed(f, runs):
    ms = []
    for _ in range(runs):
        t = time.perf_counter()
        out = f()
        ms.append((time.perf_counter() - t) * 1000)
    return out, ms


def lexical(args):
    s = args.schema
    tok = Tokens()
    lite = sqlite3.connect(args.catalog)
    questions = [json.loads(l) for l in open(args.terms) if l.strip()]
    pg = psycopg.connect(args.url, autocommit=True)
    # Generic plans (after five runs of a prepared statement) ignore which terms are rare and
    # picked nested loops 20x slower for phrase joins: plan each search for its terms.
    pg.execute(f"SET plan_cache_mode = {args.plan_cache_mode}")
    n_rows = pg.execute(f"SELECT n FROM {s}.stats WHERE what = 'chunks'").fetchone()[0]
    df_cache = {}

    def df_of(w):
        if w not in df_cache:
            r = pg.execute(f"SELECT df FROM {s}.terms WHERE term = %s", (w,)).fetchone()
            df_cache[w] = r[0] if r else 0
            DF[w] = df_cache[w]
        return df_cache[w]

    w = WEIGHTS
    tw = [w["body"] / 3, w["heading"] / 3, w["url"] / 3, w["title"] / 3]  # ts_rank weights {D,C,B,A}, ≤ 1
    engines = {
        "fts5_bm25": None,
        "pg_bm25": "dynamic",
        "ts_rank": f"SELECT id, ts_rank('{{{','.join(map(str, tw))}}}', tsv, q) r FROM {s}.chunks, CAST(%(q)s AS tsquery) q WHERE tsv @@ q ORDER BY r DESC, id LIMIT %(limit)s",
        "ts_rank_norm1": f"SELECT id, ts_rank('{{{','.join(map(str, tw))}}}', tsv, q, 1) r FROM {s}.chunks, CAST(%(q)s AS tsquery) q WHERE tsv @@ q ORDER BY r DESC, id LIMIT %(limit)s",
        "ts_rank_cd": f"SELECT id, ts_rank_cd('{{{','.join(map(str, tw))}}}', tsv, q) r FROM {s}.chunks, CAST(%(q)s AS tsquery) q WHERE tsv @@ q ORDER BY r DESC, id LIMIT %(limit)s",
        "ts_rank_cd_norm1": f"SELECT id, ts_rank_cd('{{{','.join(map(str, tw))}}}', tsv, q, 1) r FROM {s}.chunks, CAST(%(q)s AS tsquery) q WHERE tsv @@ q ORDER BY r DESC, id LIMIT %(limit)s",
    }
    if args.engines:
        engines = {k: v for k, v in engines.items() if k in args.engines or v is None}
    fts_sql = ("SELECT rowid, bm25(chunk_terms, ?, ?, ?, ?) AS s FROM chunk_terms WHERE chunk_terms MATCH ? "
               "ORDER BY s LIMIT ?")
    title_sql = "SELECT rowid, bm25(doc_terms, ?, ?) AS s FROM doc_terms WHERE doc_terms MATCH ? ORDER BY s LIMIT ?"
    results = defaultdict(lambda: defaultdict(list))  # list kind -> engine -> [(overlap, top1)]
    lat = defaultdict(lambda: defaultdict(list))
    cases = []
    for qn in questions:
        own = [tok(t) for t in qn["own"]]
        own = [p for p in own if p]
        for p in own + [tok(t) for t in qn["bridges"]]:
            for word in p:
                df_of(word)
        bridges = [p for p in (tok(t) for t in qn["bridges"]) if p]
        names = [p for p in (tok(t) for t in qn["names"]) if p]
        if args.budget:
            own = prune(own, df_of, OWN_BUDGET, False, n_rows)
            bridges = prune(bridges, df_of, BRIDGE_BUDGET, True, n_rows)
        cases.append(("own", own, 40))
        cases.append(("bridges", bridges, 20))
        cases.append(("names", [p for p in names if len(p) == 1], 10))
    # warm-up: every statement once
    for kind, phrases, limit in cases:
        if phrases:
            run_case(kind, phrases, limit, engines, lite, pg, s, fts_sql, title_sql, 1)
    for kind, phrases, limit in cases:
        if not phrases:
            continue
        out = run_case(kind, phrases, limit, engines, lite, pg, s, fts_sql, title_sql, args.runs)
        ref = out["fts5_bm25"][0]
        for eng, (ids, ms) in out.items():
            lat[kind][eng].append(statistics.median(ms))
            if eng != "fts5_bm25":
                a = agreement(ref, ids)
                if a:
                    results[kind][eng].append(a)
    report = {"schema": s, "chunks": n_rows, "budget": bool(args.budget), "questions": len(questions), "lists": {}}
    for kind in results:
        report["lists"][kind] = {
            eng: {"top10_overlap": round(statistics.mean(x[0] for x in v), 3),
                  "top1_same": round(statistics.mean(1.0 if x[1] else 0.0 for x in v), 3),
                  "identical_top10": round(statistics.mean(1.0 if x[0] == 1.0 else 0.0 for x in v), 3),
                  "same_order_top10": round(statistics.mean(1.0 if x[2] else 0.0 for x in v), 3),
                  "n": len(v)}
            for eng, v in results[kind].items()}
        report["lists"][kind]["latency_p50_ms"] = {eng: round(statistics.median(v), 2) for eng, v in lat[kind].items()}
        report["lists"][kind]["latency_p95_ms"] = {eng: round(sorted(v)[int(0.95 * (len(v) - 1))], 2) for eng, v in lat[kind].items()}
    print(json.dumps(report, ensure_ascii=False))


def run_case(kind, phrases, limit, engines, lite, pg, s, fts_sql, title_sql, runs):
    w = WEIGHTS
    expr = " OR ".join(fts_quote(" ".join(p)) for p in phrases)
    out = {}
    if kind == "names":
        out["fts5_bm25"] = timed(lambda: ranked(lite.execute(title_sql, (w["title"], w["url"], expr, limit)).fetchall()), runs)
        params = bm25_params(phrases, limit, w)
        sql = TITLE_BM25_SQL.format(s=s, k1=K1, b=B)
        out["pg_bm25"] = timed(lambda: ranked(pg.execute(sql, params, prepare=True).fetchall()), runs)
        tw = [w["url"] / 3, w["title"] / 3]
        q = tsquery(phrases)
        sql2 = f"SELECT id, ts_rank('{{0,0,{tw[0]},{tw[1]}}}', tsv, q) r FROM {s}.docs, CAST(%(q)s AS tsquery) q WHERE tsv @@ q ORDER BY r DESC, id LIMIT %(limit)s"
        out["ts_rank"] = timed(lambda: ranked(pg.execute(sql2, {"q": q, "limit": limit}, prepare=True).fetchall()), runs)
        return out
    out["fts5_bm25"] = timed(lambda: ranked(lite.execute(fts_sql, (w["title"], w["url"], w["heading"], w["body"], expr, limit)).fetchall()), runs)
    q = tsquery(phrases)
    for eng, sql in engines.items():
        if sql is None:
            continue
        if eng == "pg_bm25":
            sql = bm25_sql(s, [p for p in phrases if len(p) > 1])
            params = bm25_params(phrases, limit, w)
        else:
            params = {"q": q, "limit": limit}
        out[eng] = timed(lambda: ranked(pg.execute(sql, params, prepare=True).fetchall()), runs)
    return out


# ---------------------------------------------------------------- vectors


def vectors(args):
    s = args.schema
    pg = psycopg.connect(args.url, autocommit=True)
    ids, mat = [], []
    for cid, text in pg.execute(f"SELECT id, v::text FROM {s}.vectors ORDER BY id"):
        ids.append(cid)
        mat.append(np.array(json.loads(text), dtype=np.float32))
    ids = np.array(ids)
    mat = np.stack(mat)
    if args.queries:
        queries = np.load(args.queries).astype(np.float32)
    else:
        rng = np.random.default_rng(7)
        queries = rng.uniform(-1, 1, size=(args.random_queries, DIM)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = [ids[np.argsort(-(mat @ q), kind="stable")[:10]] for q in queries]
    # Duplicate chunks (the same text on several pages) have equal vectors: a returned row whose
    # similarity ties the 10th best is as right as the one exact search happened to list.
    sims = {i: j for j, i in enumerate(ids.tolist())}
    tenth = [np.sort(mat @ q)[-10] - 1e-6 for q in queries]
    report = {"schema": s, "rows": len(ids), "queries": len(queries), "m": args.m,
              "ef_construction": args.ef_construction, "builds": {}, "search": {}}
    pg.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem}'")
    pg.execute("SET max_parallel_maintenance_workers = %s" % args.parallel_workers)
    # One table per type: a row holding both (2.3 kB) went over the 2 kB TOAST threshold, and
    # every exact scan then paid a detoast per row while the planner costed it as inline.
    for col, typ, ops in (("v", "vector", "vector_cosine_ops"), ("h", "halfvec", "halfvec_cosine_ops")):
        pg.execute(f"DROP TABLE IF EXISTS {s}.vectors_{col}")
        pg.execute(f"CREATE TABLE {s}.vectors_{col} (id bigint PRIMARY KEY, {col} {typ}({DIM}) NOT NULL)")
        pg.execute(f"INSERT INTO {s}.vectors_{col} SELECT id, {col} FROM {s}.vectors")
        t = time.time()
        pg.execute(f"CREATE INDEX ON {s}.vectors_{col} USING hnsw ({col} {ops}) "
                   f"WITH (m = {args.m}, ef_construction = {args.ef_construction})")
        took = time.time() - t
        size = pg.execute(f"SELECT pg_indexes_size('{s}.vectors_{col}'), pg_table_size('{s}.vectors_{col}')").fetchone()
        report["builds"][ops] = {"seconds": round(took, 1), "index_mb": round(size[0] / 1e6, 1),
                                 "table_mb": round(size[1] / 1e6, 1)}
        pg.execute(f"VACUUM ANALYZE {s}.vectors_{col}")
    cast = {"v": "vector", "h": "halfvec"}
    qtext = ["[" + ",".join(f"{x:.7g}" for x in q) + "]" for q in queries]
    for col in ("v", "h"):
        sql = f"SELECT id FROM {s}.vectors_{col} ORDER BY {col} <=> %s::{cast[col]} LIMIT 10"
        # On small tables the planner rightly prefers an exact scan; force the index to measure it.
        pg.execute("SET enable_seqscan = off")
        for ef in args.ef:
            pg.execute(f"SET hnsw.ef_search = {ef}")
            for q in qtext[:5]:
                pg.execute(sql, (q,), prepare=True).fetchall()
            rec, ms = [], []
            for qi, (q, ex) in enumerate(zip(qtext, exact)):
                t = time.perf_counter()
                got = [r[0] for r in pg.execute(sql, (q,), prepare=True).fetchall()]
                ms.append((time.perf_counter() - t) * 1000)
                hit = sum(1 for g in got if float(mat[sims[g]] @ queries[qi]) >= tenth[qi])
                rec.append(min(hit, 10) / 10)
            report["search"][f"{cast[col]} ef_search={ef}"] = {
                "recall_at_10": round(statistics.mean(rec), 4), "p50_ms": round(statistics.median(ms), 2),
                "p95_ms": round(sorted(ms)[int(0.95 * (len(ms) - 1))], 2)}
            log(cast[col], ef, report["search"][f"{cast[col]} ef_search={ef}"])
        # exact search in SQL (sequential scan), for scale
        pg.execute("RESET enable_seqscan")
        pg.execute("SET enable_indexscan = off")
        _, ms = timed(lambda: pg.execute(sql, (qtext[0],), prepare=True).fetchall(), 5)
        pg.execute("RESET enable_indexscan")
        report["search"][f"{cast[col]} exact (seq scan)"] = {"p50_ms": round(statistics.median(ms), 2)}
    print(json.dumps(report))


def synth_vectors(args):
    """A vectors table of --rows unit vectors: uniform random (as examples/bench.rs makes them), or
    with --around SCHEMA, each a real vector of that schema plus Gaussian noise (real clusters)."""
    s = args.schema
    rng = np.random.default_rng(42)
    pg = psycopg.connect(args.url, autocommit=True)
    if args.around:
        base = np.stack([np.array(json.loads(t), dtype=np.float32)
                         for (t,) in pg.execute(f"SELECT v::text FROM {args.around}.vectors ORDER BY id")])
        picks = base[rng.integers(0, len(base), args.rows)]
        if args.mix:  # a point between two real vectors: a continuum of topics, not copies
            a = rng.uniform(0, 1, size=(args.rows, 1)).astype(np.float32)
            picks = a * picks + (1 - a) * base[rng.integers(0, len(base), args.rows)]
        mat = picks + rng.normal(0, args.noise, size=picks.shape).astype(np.float32)
    else:
        mat = rng.uniform(-1, 1, size=(args.rows, DIM)).astype(np.float32)
    mat /= np.linalg.norm(mat, axis=1, keepdims=True)
    pg.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
    pg.execute(f"DROP TABLE IF EXISTS {s}.vectors")
    pg.execute(f"CREATE TABLE {s}.vectors (id bigint PRIMARY KEY, v vector({DIM}) NOT NULL, h halfvec({DIM}) NOT NULL)")
    t = time.time()
    with pg.cursor() as cur, cur.copy(f"COPY {s}.vectors (id, v, h) FROM STDIN") as cp:
        for i, v in enumerate(mat, 1):
            text = "[" + ",".join(f"{x:.7g}" for x in v) + "]"
            cp.write(f"{i}\t{text}\t{text}\n")
    log(f"{args.rows} vectors COPY in {time.time() - t:.1f} s")
    if args.save_queries:
        q = mat[rng.integers(0, len(mat), args.random_queries)] + rng.normal(0, args.noise, size=(args.random_queries, DIM))
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        np.save(args.save_queries, q.astype(np.float32))


def hybrid(args):
    """One hybrid search's statements as the backend would send them, in one REPEATABLE READ
    READ ONLY transaction: generation row, document frequencies (pruning), vector search,
    BM25 over the question's terms and over its bridges, title search, rows of the fused ids."""
    s, vs = args.schema, args.vector_schema or args.schema
    tok = Tokens()
    questions = [json.loads(l) for l in open(args.terms) if l.strip()]
    queries = np.load(args.queries).astype(np.float32)
    pg = psycopg.connect(args.url, autocommit=True)
    pg.execute(f"SET hnsw.ef_search = {args.ef[0]}")
    n_rows = pg.execute(f"SELECT n FROM {s}.stats WHERE what = 'chunks'").fetchone()[0]
    w = WEIGHTS

    def one(qn, qv):
        with pg.transaction():
            pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            pg.execute(f"SELECT n, avgdl FROM {s}.stats WHERE what = 'chunks'").fetchone()
            own = [p for p in (tok(t) for t in qn["own"]) if p]
            bridges = [p for p in (tok(t) for t in qn["bridges"]) if p]
            words = sorted({x for p in own + bridges for x in p})
            dfs = dict(pg.execute(f"SELECT term, df FROM {s}.terms WHERE term = ANY(%s)", (words,)).fetchall())
            DF.clear()
            DF.update(dfs)
            own = prune(own, lambda x: dfs.get(x, 0), OWN_BUDGET, False, n_rows)
            bridges = prune(bridges, lambda x: dfs.get(x, 0), BRIDGE_BUDGET, True, n_rows)
            text = "[" + ",".join(f"{x:.7g}" for x in qv) + "]"
            ids = [r[0] for r in pg.execute(f"SELECT id FROM {vs}.vectors_v ORDER BY v <=> %s::vector LIMIT 40",
                                            (text,), prepare=True)]
            for phrases, limit in ((own, 40), (bridges, 20)):
                if phrases:
                    sql = bm25_sql(s, [p for p in phrases if len(p) > 1])
                    ids += [r[0] for r in pg.execute(sql, bm25_params(phrases, limit, w), prepare=True)]
            names = [p for p in (tok(t) for t in qn["names"]) if len(p) == 1]
            if names:
                pg.execute(TITLE_BM25_SQL.format(s=s, k1=K1, b=B), bm25_params(names, 10, w), prepare=True).fetchall()
            rows = pg.execute(f"SELECT c.id, c.doc_id, c.ordinal FROM {s}.chunks c WHERE c.id = ANY(%s)",
                              (ids[:60],), prepare=True).fetchall()
            return rows

    for qn, qv in zip(questions, queries):
        one(qn, qv)
    ms = []
    for _ in range(args.runs):
        for qn, qv in zip(questions, queries):
            t = time.perf_counter()
            one(qn, qv)
            ms.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"schema": s, "vector_schema": vs, "ef_search": args.ef[0], "searches": len(ms),
                      "p50_ms": round(statistics.median(ms), 2), "p95_ms": round(sorted(ms)[int(0.95 * (len(ms) - 1))], 2),
                      "mean_ms": round(statistics.mean(ms), 2)}))


def named_statements(path):
    out, name, buf = {}, None, []
    for line in open(path, encoding="utf-8"):
        if line.startswith("-- name:"):
            if name:
                out[name] = "".join(buf).strip()
            name, buf = line.split(":", 1)[1].strip(), []
        elif name and not line.startswith("--"):
            buf.append(line)
    if name:
        out[name] = "".join(buf).strip()
    return out


def check(args):
    """docs/postgres-schema.sql applied to a fresh database, filled from the catalogue and the
    measurement schema, then every statement of docs/postgres-queries.sql run: searches agree
    with FTS5, and an index run that deletes and re-adds a document restores the same state."""
    import pathlib
    docs = pathlib.Path(__file__).resolve().parents[2] / "docs"
    q = named_statements(docs / "postgres-queries.sql")
    s = args.schema
    admin = psycopg.connect(args.url, autocommit=True)
    admin.execute("DROP DATABASE IF EXISTS ragmap_check")
    admin.execute("CREATE DATABASE ragmap_check")
    url = args.url.rsplit("/", 1)[0] + "/ragmap_check"
    pg = psycopg.connect(url, autocommit=True, cursor_factory=psycopg.RawCursor)
    pg.execute((docs / "postgres-schema.sql").read_text())
    lite = sqlite3.connect(args.catalog)
    src = psycopg.connect(args.url, autocommit=True)
    with pg.transaction():
        with pg.cursor() as cur, cur.copy("COPY ragmap.documents (id, path, hash, title, source, sections, modified, indexed_at, dl, terms) FROM STDIN") as cp:
            dterms = defaultdict(list)
            for term, did in src.execute(f"SELECT term, doc_id FROM {s}.doc_postings"):
                dterms[did].append(term)
            dls = dict(src.execute(f"SELECT id, len_title + len_url FROM {s}.docs").fetchall())
            for r in lite.execute("SELECT id, path, hash, title, source, sections, modified, indexed_at FROM documents"):
                cp.write_row(list(r) + [dls.get(r[0], 0), dterms.get(r[0], [])])
        cterms = defaultdict(list)
        for term, cid in src.execute(f"SELECT term, chunk_id FROM {s}.postings"):
            cterms[cid].append(term)
        dl = dict(src.execute(f"SELECT id, dl FROM {s}.chunks").fetchall())
        with pg.cursor() as cur, cur.copy("COPY ragmap.chunks (id, doc_id, ordinal, start_byte, end_byte, heading, text, tokens, dl, terms) FROM STDIN") as cp:
            for r in lite.execute('SELECT id, doc_id, ordinal, start, "end", heading, text, tokens FROM chunks'):
                cp.write_row(list(r) + [dl[r[0]], cterms.get(r[0], [])])
        with pg.cursor() as cur, cur.copy("COPY ragmap.embeddings (chunk_id, embedding) FROM STDIN") as cp:
            for cid, text in src.execute(f"SELECT id, v::text FROM {s}.vectors"):
                cp.write_row((cid, text))
        for table, cols in (("postings", "term, chunk_id, dl, tf_title, tf_url, tf_heading, tf_body, pos"),
                            ("terms", "term, df"), ("doc_postings", "term, doc_id, dl, tf_title, tf_url"),
                            ("doc_terms", "term, df")):
            with src.cursor() as out, out.copy(f"COPY {s}.{table} ({cols}) TO STDOUT") as rd, \
                    pg.cursor() as cur, cur.copy(f"COPY ragmap.{table} ({cols}) FROM STDIN") as wr:
                for block in rd:
                    wr.write(block)
        pg.execute("SELECT setval('ragmap.documents_id_seq', (SELECT max(id) FROM ragmap.documents))")
        pg.execute("SELECT setval('ragmap.chunks_id_seq', (SELECT max(id) FROM ragmap.chunks))")
        pg.execute("INSERT INTO ragmap.meta (schema_version, embed_model, dimensions, settings) VALUES (1, 'check', 384, 'check')")
        pg.execute(q["commit_generation"])
    pg.execute("VACUUM ANALYZE")
    ok = []

    def search_state():
        out = {}
        words = ["rag", "检索", "模型", "向量", "graphrag", "lora", "微调"]
        out["lexical"] = pg.execute(q["lexical_search"], (words, 3.0, 3.0, 2.0, 1.0, 20)).fetchall()
        out["phrase"] = pg.execute(q["lexical_phrase"], (["rag"], 3.0, 3.0, 2.0, 1.0, 20, "语言", "模型")).fetchall()
        out["title"] = pg.execute(q["title_search"], (["vllm", "graphrag"], 3.0, 3.0, 10)).fetchall()
        out["meta"] = pg.execute(q["generation"]).fetchone()[1:]
        out["df"] = sorted(pg.execute(q["document_frequencies"], (words,)).fetchall())
        # the same rows and order; scores equal but for the last bits of a sum in another order
        return {k: [tuple(round(x, 9) if isinstance(x, float) else x for x in r) for r in v]
                if isinstance(v, list) else v for k, v in out.items()}

    before = search_state()
    # FTS5 on the same words: the same ids in the same order
    fts = [r[0] for r in lite.execute(
        "SELECT rowid, bm25(chunk_terms, 3, 3, 2, 1) s FROM chunk_terms WHERE chunk_terms MATCH ? ORDER BY s LIMIT 20",
        (" OR ".join(fts_quote(w) for w in ["rag", "检索", "模型", "向量", "graphrag", "lora", "微调"]),))]
    ok.append(("lexical_search = FTS5 bm25 order", [r[0] for r in before["lexical"]] == fts))
    fts = [r[0] for r in lite.execute(
        "SELECT rowid, bm25(chunk_terms, 3, 3, 2, 1) s FROM chunk_terms WHERE chunk_terms MATCH ? ORDER BY s LIMIT 20",
        ('"rag" OR "语言 模型"',))]
    ok.append(("lexical_phrase = FTS5 bm25 order", [r[0] for r in before["phrase"]] == fts))
    fts = [r[0] for r in lite.execute(
        "SELECT rowid, bm25(doc_terms, 3, 3) s FROM doc_terms WHERE doc_terms MATCH ? ORDER BY s LIMIT 10",
        ('"vllm" OR "graphrag"',))]
    ok.append(("title_search = FTS5 bm25 order", [r[0] for r in before["title"]] == fts))
    vec = pg.execute("SELECT embedding::text FROM ragmap.embeddings LIMIT 1").fetchone()[0]
    pg.execute("SET hnsw.ef_search = 100")
    pg.execute("SET hnsw.iterative_scan = relaxed_order")
    pg.execute("SET enable_seqscan = off")  # 2,490 rows: the planner would rightly scan them all
    hits = pg.execute(q["vector_search"], (vec, 40)).fetchall()
    plan = " ".join(r[0] for r in pg.execute("EXPLAIN " + q["vector_search"].replace("$1", "'" + vec + "'").replace("$2", "40")).fetchall())
    pg.execute("RESET enable_seqscan")
    ok.append(("vector_search: 40 rows through embeddings_hnsw, nearest first",
               len(hits) == 40 and hits[0][1] < 1e-6 and "embeddings_hnsw" in plan))
    cid, did, ordinal = pg.execute("SELECT id, doc_id, ordinal FROM ragmap.chunks WHERE ordinal = 3 LIMIT 1").fetchone()
    ok.append(("chunks_by_ids", len(pg.execute(q["chunks_by_ids"], ([cid, cid + 1],)).fetchall()) == 2))
    ok.append(("neighbours", [r[2] for r in pg.execute(q["neighbours"], (did, ordinal, 1)).fetchall()] == [2, 3, 4]))
    ok.append(("first_chunk_of", pg.execute(q["first_chunk_of"], (did,)).fetchone() is not None))
    ok.append(("replica_lag on a primary", pg.execute(q["replica_lag"]).fetchone()[0] is False))
    # an index run: the document with the most chunks deleted, then written back as new rows
    doc = pg.execute("SELECT doc_id FROM ragmap.chunks GROUP BY doc_id ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
    saved = {t: pg.execute(f"SELECT * FROM ragmap.{t} WHERE {k}").fetchall() for t, k in (
        ("documents", f"id = {doc}"), ("chunks", f"doc_id = {doc}"),
        ("embeddings", f"chunk_id IN (SELECT id FROM ragmap.chunks WHERE doc_id = {doc})"),
        ("postings", f"chunk_id IN (SELECT id FROM ragmap.chunks WHERE doc_id = {doc})"),
        ("doc_postings", f"doc_id = {doc}"))}
    t0 = time.time()
    with pg.transaction():
        pg.execute(q["lock_indexer"])
        pg.execute(q["check_identity"])
        pg.execute(q["forget_postings"], ([doc],))
        pg.execute(q["forget_doc_postings"], ([doc],))
        pg.execute(q["delete_documents"], ([doc],))
        pg.execute(q["drop_unused_terms"])
        gen = pg.execute(q["commit_generation"]).fetchone()[0]
        pg.execute(q["notify"], (str(gen),))
    mid = search_state()
    ok.append(("document gone: statistics changed", mid["meta"] != before["meta"]))
    with pg.transaction():
        pg.execute(q["lock_indexer"])
        for t in ("documents", "chunks", "embeddings", "postings", "doc_postings"):
            rows = saved[t]
            if rows:
                marks = ",".join(["$%d" % (i + 1) for i in range(len(rows[0]))])
                over = " OVERRIDING SYSTEM VALUE" if t in ("documents", "chunks") else ""
                for r in rows:
                    if t == "documents":
                        r = r[:5] + (psycopg.types.json.Jsonb(r[5]),) + r[6:]
                    pg.execute(f"INSERT INTO ragmap.{t}{over} VALUES ({marks})", r)
        pg.execute(q["count_new_terms"], ([doc],))
        pg.execute(q["count_new_doc_terms"], ([doc],))
        pg.execute(q["commit_generation"])
    after = search_state()
    ok.append(("re-added: every search and statistic as before", after == before))
    for k in before:
        if before[k] != after[k]:
            log("differs:", k, before[k][:5] if isinstance(before[k], list) else before[k], after[k][:5] if isinstance(after[k], list) else after[k])
    ok.append(("a delete + re-add run (ms)", round((time.time() - t0) * 1000)))
    for name, res in ok:
        print(f"{name}: {res}")
    pg.close()
    admin.execute("DROP DATABASE ragmap_check")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["load", "lexical", "vectors", "synth-vectors", "hybrid", "check"])
    ap.add_argument("--vector-schema", help="hybrid: schema whose vectors_v table the vector search reads")
    ap.add_argument("--catalog", required=False)
    ap.add_argument("--url", required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--terms")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--budget", action="store_true", help="prune terms as ragmap does on large indexes")
    ap.add_argument("--queries", help=".npy of query vectors (default: random unit vectors)")
    ap.add_argument("--random-queries", type=int, default=200)
    ap.add_argument("--ef", type=int, nargs="+", default=[40, 64, 100, 200])
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=64)
    ap.add_argument("--maintenance-work-mem", default="1GB")
    ap.add_argument("--parallel-workers", type=int, default=1)
    ap.add_argument("--engines", nargs="+", help="PostgreSQL variants to run (default: all)")
    ap.add_argument("--plan-cache-mode", default="force_custom_plan")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--around", help="schema whose real vectors the synthetic ones scatter around")
    ap.add_argument("--noise", type=float, default=0.02, help="per-dimension Gaussian noise for --around")
    ap.add_argument("--mix", action="store_true", help="--around: between two real vectors, not near one")
    ap.add_argument("--save-queries", help="write query vectors near the synthetic ones to this .npy")
    args = ap.parse_args()
    {"load": load, "lexical": lexical, "vectors": vectors, "synth-vectors": synth_vectors, "hybrid": hybrid, "check": check}[args.command](args)


if __name__ == "__main__":
    main()
