"""`scripts/bench --postgres`: the PostgreSQL backend beside the embedded index, in one run.

A PostgreSQL 18 + pgvector started by scripts/postgres (its own data folder, default
settings but `shared_buffers`), and on the depth-1 crawl of ../shared/webcorpus (the same
cached corpus as `--remote-embed`):
- indexing: `ragmap index --rebuild --json` into each backend, alternating, ROUNDS rounds;
  tokens/s over the whole run (chunking, embedding, writing) and the time spent writing;
- `ragmap index --to URL`: the embedded index copied into the database (no re-embedding);
- retrieval quality: `ragmap eval --compare hybrid,vector,lexical` on eval/questions.jsonl and
  eval/heldout.jsonl over the embedded index and over its copy (`--index-url`): the same
  vectors, so any difference is the backend's;
- warm `/api/search` p50: a `ragmap serve` on each backend, requests alternating in blocks;
- in-process retrieval per mode and vector recall@10 against an exact scan
  (`examples/bench.rs backends`) on the web mirror and on a synthetic index of SIZE chunks
  (text windows of the corpus, vectors between pairs of the mirror's real ones: uniform random
  vectors have no neighbourhoods, so recall on them says nothing), copied by `index --to`.

HNSW search settings side by side (`backends --ef-search/--expansion`): recall@10 and latency
at each pgvector `hnsw.ef_search` of BENCH_PG_EF_SEARCH (default 100,200,300) and each usearch
`expansion_search` of BENCH_PG_EXPANSION (default 64,128,256).

BENCH_PG_SIZE (default 100000), BENCH_PORT_BASE (ports from there instead of free ones),
BENCH_PG_ONLY=large (only the synthetic index: its latency, recall and the sweeps; results in
bench-postgres-partial.json, no report), BENCH_PG_KEEP_SYNTHETIC=1 (keep the synthetic embedded
index for the next run, and reuse one a previous run kept).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import remote_embed_bench as reb
import serve_bench

ROOT = os.environ["BENCH_ROOT"]
WORK = os.environ["BENCH_WORK"]
TOOL = os.environ["BENCH_TOOL"]
QUICK = os.environ.get("BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("BENCH_PG_ROUNDS", "1" if QUICK else "2"))
SIZE = int(os.environ.get("BENCH_PG_SIZE", "10000" if QUICK else "100000"))
SEARCHES = 60 if QUICK else 300
API_SEARCHES = 100 if QUICK else 400
EF_SEARCH = os.environ.get("BENCH_PG_EF_SEARCH", "100,200,300")
EXPANSION = os.environ.get("BENCH_PG_EXPANSION", "64,128,256")
ONLY_LARGE = os.environ.get("BENCH_PG_ONLY") == "large"
KEEP_SYNTHETIC = os.environ.get("BENCH_PG_KEEP_SYNTHETIC") == "1"
SCRIPT = os.path.join(ROOT, "scripts", "postgres")
QUESTION_SETS = reb.QUESTION_SETS
log = reb.log
_next_port = [int(os.environ.get("BENCH_PORT_BASE", "0"))]


def port():
    if not _next_port[0]:
        return reb.free_port()
    _next_port[0] += 1
    return _next_port[0] - 1


# serve.py for the mirror's crawl gets its port here too.
reb.free_port = port if _next_port[0] else reb.free_port


class Postgres:
    def __init__(self):
        self.port = port()
        env = dict(os.environ, RAGMAP_PG_OPTIONS="-c shared_buffers=512MB -c max_connections=100")
        subprocess.run(["bash", SCRIPT, "install"], check=True, stdout=subprocess.DEVNULL)
        self.url = reb.run(["bash", SCRIPT, "start", str(self.port)], env=env).strip()

    def psql(self, sql, db="postgres"):
        return reb.run(["bash", SCRIPT, "psql", str(self.port), "-d", db, "-At", "-c", sql]).strip()

    def database(self, name):
        """A new, empty database `name` (with `vector`, from template1); its URL."""
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.psql(f"CREATE DATABASE {name} OWNER ragmap")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def size_mb(self, name):
        return int(self.psql(f"SELECT pg_database_size('{name}')")) / 1e6

    def stop(self, drop=()):
        for name in drop:
            self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        subprocess.run(["bash", SCRIPT, "stop", str(self.port)], stdout=subprocess.DEVNULL)


def index(ragmap, ws, url=None):
    env = dict(os.environ)
    env.pop("RAGMAP_INDEX_URL", None)
    if url:
        env["RAGMAP_INDEX_URL"] = url
    p = subprocess.run([ragmap, "-C", ws, "index", "--rebuild", "--json"], capture_output=True,
                       text=True, env=env)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit(f"failed ({p.returncode}): ragmap index in {ws}")
    r = json.loads(p.stdout)
    write_s = r["total_seconds"] - r["embed_seconds"] - r.get("chunk_seconds", 0) - r.get("model_load_seconds", 0)
    return {"chunks": r["chunks_embedded"], "tokens": r["tokens_embedded"], "embed_s": r["embed_seconds"],
            "total_s": r["total_seconds"], "write_s": write_s,
            "tokens_per_s": r["tokens_embedded"] / r["total_seconds"]}


def copy(ragmap, ws, url):
    started = time.time()
    out = json.loads(reb.run([ragmap, "-C", ws, "index", "--to", url, "--json"]))
    out["wall_s"] = time.time() - started
    return out


def evaluate(ragmap, ws, url=None):
    extra = ["--index-url", url] if url else []
    out = {}
    for rel in QUESTION_SETS:
        report = json.loads(reb.run([ragmap, "-C", ws, "eval", os.path.join(ROOT, rel), "--compare",
                                     "hybrid,vector,lexical", "--json", *extra]))
        out[rel] = {v["name"]: {k: v["overall"][k] for k in ("questions", "recall_at_5", "mrr_at_10")}
                    for v in report["variants"]}
    return out


class Served(serve_bench.Server):
    """`ragmap serve` on a chosen port (serve_bench.Server takes a free one)."""

    def __init__(self, ragmap, ws, env):
        p = port()
        if not _next_port[0]:
            return super().__init__(ragmap, ws, env)
        self.proc = subprocess.Popen([ragmap, "-C", ws, "serve", "--port", str(p)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        reb.wait_port(p, self.proc, "ragmap serve", seconds=120)
        self.url, self.host, self.port = f"http://127.0.0.1:{p}", "127.0.0.1", p


def api_search(ragmap, ws, url, queries):
    """Warm /api/search on a server per backend, in alternating blocks of 20."""
    env = dict(os.environ)
    env.pop("RAGMAP_INDEX_URL", None)
    servers = {"embedded": Served(ragmap, ws, env),
               "postgres": Served(ragmap, ws, dict(env, RAGMAP_INDEX_URL=url))}
    try:
        clients = {name: serve_bench.Client(s) for name, s in servers.items()}
        ms = {name: [] for name in servers}
        errors = {name: 0 for name in servers}
        for c in clients.values():
            for q in queries:
                c.request("POST", "/api/search", {"query": q, "k": 6})
        for block in range(API_SEARCHES // 20):
            order = list(clients) if block % 2 == 0 else list(reversed(list(clients)))
            for name in order:
                for i in range(20):
                    q = queries[(block * 20 + i) % len(queries)]
                    status, _, t = clients[name].request("POST", "/api/search", {"query": q, "k": 6})
                    errors[name] += status != 200
                    ms[name].append(t)
        return {name: {**serve_bench.percentiles(ms[name]), "errors": errors[name]} for name in ms}
    finally:
        for s in servers.values():
            s.stop()


def backends(ws, url, questions):
    out = subprocess.run([TOOL, "backends", "--workspace", ws, "--url", url, "--queries", questions,
                          "--searches", str(SEARCHES), "--ef-search", EF_SEARCH, "--expansion", EXPANSION],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-3000:])
        raise SystemExit("examples/bench.rs backends failed")
    return json.loads(out.stdout)


def embedded_workspace(ragmap, corpus):
    """The mirror's embedded workspace; built (a first local index, which also warms the
    tokenizer cache) unless a previous run left it whole."""
    ws = os.path.join(WORK, "pg-embedded")
    if subprocess.run([ragmap, "-C", ws, "status"], capture_output=True).returncode != 0:
        ws = reb.workspace("pg-embedded", corpus)
        log("a first local index (warms the tokenizer cache)")
        index(ragmap, ws)
    return ws


def mirror(ragmap, pg, emb, questions, keep):
    """The measurements on the web mirror's index and its copy."""
    web_url = pg.database("bench_web")
    log("ragmap index --to (the web mirror)")
    keep("web_copy", copy(ragmap, emb, web_url))
    log("eval on both backends")
    keep("quality", {"embedded": evaluate(ragmap, emb), "postgres": evaluate(ragmap, emb, web_url)})
    log("warm /api/search on both backends")
    with open(questions, encoding="utf-8") as f:
        texts = [json.loads(line)["question"] for line in f if line.strip()]
    keep("api", api_search(ragmap, emb, web_url, texts))
    log("in-process retrieval and recall@10 (web mirror)")
    keep("web", backends(emb, web_url, questions))
    keep("sizes", {"web_mb": pg.size_mb("bench_web")})


def large(ragmap, pg, emb, questions, keep):
    """A synthetic index of SIZE chunks, its copy, and both side by side."""
    big = os.path.join(WORK, "pg-synthetic")
    reuse = KEEP_SYNTHETIC and os.path.exists(os.path.join(big, "synthetic.json"))
    if reuse:
        with open(os.path.join(big, "synthetic.json")) as f:
            reuse = json.load(f).get("chunks") == SIZE
    if reuse:
        log(f"reusing the synthetic index of {SIZE:,} chunks in {big}")
        with open(os.path.join(big, "synthetic.json")) as f:
            keep("synthetic", json.load(f))
    else:
        shutil.rmtree(big, ignore_errors=True)
        os.makedirs(big)
        shutil.copy(os.path.join(emb, "config.toml"), big)
        log(f"a synthetic index of {SIZE:,} chunks (vectors between the mirror's)")
        synthetic = json.loads(reb.run([TOOL, "synthetic", "--corpus", os.path.join(emb, "corpus"),
                                        "--size", str(SIZE), "--dir", os.path.join(big, "index"),
                                        "--like", emb]))
        keep("synthetic", synthetic)
        with open(os.path.join(big, "synthetic.json"), "w") as f:
            json.dump(synthetic, f)
    big_url = pg.database("bench_big")
    log(f"ragmap index --to ({SIZE:,} chunks)")
    big_copy = copy(ragmap, big, big_url)
    big_copy["database_mb"] = pg.size_mb("bench_big")
    keep("big_copy", big_copy)
    log(f"in-process retrieval and recall@10 ({SIZE:,} chunks), HNSW settings side by side")
    keep("large", backends(big, big_url, questions))
    if not KEEP_SYNTHETIC:
        shutil.rmtree(big, ignore_errors=True)
    pg.psql("DROP DATABASE IF EXISTS bench_big WITH (FORCE)")


def run_all(ragmap):
    """Every measurement, the quick ones first; what is done so far is kept in
    bench-postgres-partial.json as it goes."""
    questions = os.path.join(ROOT, QUESTION_SETS[0])
    corpus = reb.mirror_corpus(ragmap)
    pg = Postgres()
    r = {"size": SIZE, "pg": "PostgreSQL 18.3 + pgvector 0.8.2 (scripts/postgres), shared_buffers=512MB"}

    def keep(key, value):
        r[key] = value
        with open(os.path.join(WORK, "bench-postgres-partial.json"), "w") as f:
            json.dump(r, f, indent=2)

    try:
        emb = embedded_workspace(ragmap, corpus)
        if not ONLY_LARGE:
            mirror(ragmap, pg, emb, questions, keep)
        large(ragmap, pg, emb, questions, keep)
        if ONLY_LARGE:
            return r
        pgws = reb.workspace("pg-postgres", corpus)
        indexed_url = pg.database("bench_indexed")
        rounds = {"embedded": [], "postgres": []}
        for n in range(ROUNDS):
            log(f"round {n + 1}/{ROUNDS}: index into the embedded index, then into PostgreSQL")
            rounds["embedded"].append(index(ragmap, emb))
            rounds["postgres"].append(index(ragmap, pgws, indexed_url))
            keep("rounds", rounds)
    finally:
        pg.stop(drop=("bench_big", "bench_web", "bench_indexed"))
    return r


def sweep_lines(d, size):
    """The HNSW search settings side by side at SIZE chunks (`backends --ef-search/--expansion`)."""
    if not d.get("ef_search_sweep") and not d.get("expansion_sweep"):
        return []
    lines = [
        "",
        f"HNSW search settings at {size:,} chunks, each value side by side with a baseline (alternating "
        "search by search, the same 116 questions and vectors; p50 in ms, query embedding excluded): "
        "pgvector's `hnsw.ef_search` (`[index] ef_search`) beside the embedded index, and usearch's "
        "`expansion_search` of the embedded index beside its default.",
        "",
        "| index | setting | recall@10 | vector p50 | hybrid p50 | baseline hybrid p50 | hybrid ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in d.get("ef_search_sweep", []):
        e, p = row["hybrid"]
        lines.append(f"| PostgreSQL | ef_search {row['ef_search']} | {row['recall_at_10']['postgres']:.3f} | "
                     f"{row['vector'][1]['p50_ms']:.2f} | {p['p50_ms']:.2f} | {e['p50_ms']:.2f} (embedded) | "
                     f"{p['p50_ms'] / e['p50_ms']:.2f} |")
    for row in d.get("expansion_sweep", []):
        base, tuned = row["hybrid"]
        lines.append(f"| embedded | expansion {row['expansion']} | {row['recall_at_10']['tuned']:.3f} | "
                     f"{row['vector'][1]['p50_ms']:.2f} | {tuned['p50_ms']:.2f} | {base['p50_ms']:.2f} "
                     f"(expansion {row['default']}) | {tuned['p50_ms'] / base['p50_ms']:.2f} |")
    return lines


def report_lines(r, machine, command):
    med = lambda side, key: statistics.median(x[key] for x in r["rounds"][side])
    e_tps, p_tps = med("embedded", "tokens_per_s"), med("postgres", "tokens_per_s")
    first = r["rounds"]["embedded"][0]  # the mirror: chunks and tokens
    goal = lambda ok: "met" if ok else "NOT met"
    w, l, a = r["web"], r["large"], r["api"]
    ratio = lambda d, mode: d[mode]["postgres"]["p50_ms"] / d[mode]["embedded"]["p50_ms"]
    lines = [
        "## PostgreSQL backend",
        "",
        f"`{command}`, {time.strftime('%Y-%m-%d')}, CPU: {machine['cpu']} "
        f"({machine['nproc_available']} cores available, load {machine['load_at_start'][0]:.1f} at the start), "
        f"{r['pg']} on loopback, on the depth-1 crawl of ../shared/webcorpus "
        f"({first['chunks']:,} chunks, {first['tokens']:,} tokens). Every pair below was measured "
        "side by side in this run.",
        "",
        "| measure | embedded | PostgreSQL | ratio | goal |",
        "|---|---|---|---|---|",
        f"| indexing the mirror, tokens/s over the whole `index --rebuild` ({len(r['rounds']['embedded'])} "
        f"alternating rounds, medians) | {e_tps:,.0f} | {p_tps:,.0f} | {p_tps / e_tps:.2f} | ≥ 0.85 {goal(p_tps / e_tps >= 0.85)} |",
        f"| … of which writing the index, s | {med('embedded', 'write_s'):.2f} | {med('postgres', 'write_s'):.2f} | | |",
        f"| warm `/api/search` p50 on the mirror, ms ({a['embedded']['n']} each, question embedding "
        f"included; errors {a['embedded']['errors']} / {a['postgres']['errors']}) | {a['embedded']['p50_ms']:.1f} | "
        f"{a['postgres']['p50_ms']:.1f} | {a['postgres']['p50_ms'] / a['embedded']['p50_ms']:.2f} | ≤ 1.5 "
        f"{goal(a['postgres']['p50_ms'] / a['embedded']['p50_ms'] <= 1.5)} |",
    ]
    for name, d in (("the mirror", w), (f"{r['size']:,} chunks", l)):
        for mode in ("hybrid", "lexical", "vector"):
            g = ""
            if mode == "hybrid" and d is l:
                g = f"≤ 3 {goal(ratio(d, mode) <= 3)}"
            lines.append(f"| {mode} retrieval p50 in process at {name}, ms ({d[mode]['embedded']['n']} each, "
                         f"query embedding excluded) | {d[mode]['embedded']['p50_ms']:.2f} | "
                         f"{d[mode]['postgres']['p50_ms']:.2f} | {ratio(d, mode):.2f} | {g} |")
    for name, d in (("the mirror (real vectors)", w), (f"{r['size']:,} chunks (between real vectors)", l)):
        rc = d["recall_at_10"]
        lines.append(f"| vector recall@10 against an exact scan at {name}, {d['questions']} real questions, "
                     f"ef_search {d['ef_search']} | {rc['embedded']:.3f} | {rc['postgres']:.3f} | | "
                     f"≥ 0.98 {goal(rc['postgres'] >= 0.98)} |")
    lines += sweep_lines(l, r["size"])
    bc, wc = r["big_copy"], r["web_copy"]
    lines += [
        "",
        f"`ragmap index --to` copied the mirror's index in {wc['wall_s']:.1f} s and the {r['size']:,}-chunk "
        f"one in {bc['wall_s']:.0f} s (no embedding; the HNSW graph built in the database). Database "
        f"sizes: {r['sizes']['web_mb']:.0f} MB (mirror), {bc['database_mb']:,.0f} MB ({r['size']:,} chunks).",
        "",
        "Retrieval quality (`ragmap eval --compare hybrid,vector,lexical`; the embedded index and its copy "
        "in PostgreSQL: the same vectors, so a difference is the backend's):",
        "",
        "| question set | mode | embedded R@5 | embedded MRR | PostgreSQL R@5 | PostgreSQL MRR | Δ MRR |",
        "|---|---|---|---|---|---|---|",
    ]
    q = r["quality"]
    for rel in QUESTION_SETS:
        for mode in ("hybrid", "vector", "lexical"):
            e, p = q["embedded"][rel][mode], q["postgres"][rel][mode]
            lines.append(f"| {rel} ({e['questions']}) | {mode} | {e['recall_at_5']:.3f} | {e['mrr_at_10']:.3f} | "
                         f"{p['recall_at_5']:.3f} | {p['mrr_at_10']:.3f} | {p['mrr_at_10'] - e['mrr_at_10']:+.3f} |")
    lines += ["", "Goal: R@5 not lower, MRR within 0.01. Raw numbers: "
              "`$RAGMAP_CACHE/bench/work/bench-postgres-results.json`.", ""]
    return lines
