"""`ragmap serve --watch` under measurement: how long a saved edit takes to
become searchable, and the one index run a 500-file checkout triggers, while
a client keeps searching.

The workspace is the web mirror as `ragmap crawl --depth 1` fetches it from
../shared/webcorpus/serve.py (crawled once, cached in $RAGMAP_CACHE/bench),
plus 500 short generated notes under notes/ for the checkout.

- 20 saves, each a one-page edit (about 2,000 characters of another page's
  text, with a unique word, inserted mid-document) of a different crawled
  page, written in place and by rename (temporary file over the page) in
  turn; latency = the write until `POST /api/search` (lexical) finds the word.
- The checkout: every note rewritten as git does (unlink, create), one
  sentence changed each; the time until its run reports, and the runs counted.
- A client searches (hybrid) in a loop throughout; its errors are counted and
  its latency split by whether an index run was in progress.
- Beside it, `bench scoped` (examples/bench.rs) alternates runs that read only
  the edited file with the models kept loaded (what the watcher does) with full
  scans that load them (what `ragmap index` does), in one process.

Used by run.py as `scripts/bench --watch`.
"""

import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time

import remote_embed_bench
from serve_bench import percentiles

SAVES = 20
NOTES = 500
PAGE_CHARS = 2000
LOOP_QUERY = "如何用 LoRA 微调大模型"
RUN_LINE = re.compile(r"^watch: run (\d+) \((.*?)\): (.*); (\d+) documents in ([0-9.]+) s$")


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def note_text(i, version):
    return (f"# Note {i}\n\nA short note kept in a git repository, number {i} of {NOTES}. "
            f"It says what was read on day {i % 31 + 1} and what to try next.\n\n"
            f"Version {version}: checkout{version}x{i}.\n")


def check_out(notes_dir, version):
    """What `git checkout` does to each file it changes: unlink, create, write."""
    for i in range(NOTES):
        path = os.path.join(notes_dir, f"note-{i:03}.md")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        with open(path, "w", encoding="utf-8") as f:
            f.write(note_text(i, version))


def make_workspace(ws, corpus, model_dir, threads, sessions):
    if os.path.exists(ws):
        shutil.rmtree(ws)
    os.makedirs(ws)
    shutil.copytree(corpus, os.path.join(ws, "corpus"))
    notes = os.path.join(ws, "corpus", "notes")
    os.makedirs(notes)
    check_out(notes, "one")
    with open(os.path.join(ws, "config.toml"), "w") as f:
        f.write(f"[embed]\nthreads = {threads}\nsessions = {sessions}\nmodel_dir = \"{model_dir}\"\n")
    return notes


class WatchServer:
    """`ragmap serve --watch --port 0`, its stderr lines kept with their arrival times."""

    def __init__(self, ragmap, ws):
        self.proc = subprocess.Popen([ragmap, "-C", ws, "serve", "--port", "0", "--watch"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        url = next((w for w in line.split() if w.startswith("http://")), None)
        if url is None:
            self.proc.kill()
            raise SystemExit(f"ragmap serve --watch did not start: {line!r} {self.proc.stderr.read()[-2000:]}")
        host, port = url[len("http://"):].rstrip("/").split(":")
        self.host, self.port = host, int(port)
        self.lines = []  # (arrival, text)
        self.lock = threading.Lock()
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self):
        for line in self.proc.stderr:
            with self.lock:
                self.lines.append((time.perf_counter(), line.rstrip("\n")))

    def runs(self):
        """(arrival, number, scope, what, seconds) of every `watch: run` line so far."""
        with self.lock:
            lines = list(self.lines)
        out = []
        for at, text in lines:
            m = RUN_LINE.match(text)
            if m:
                out.append((at, int(m.group(1)), m.group(2), m.group(3), float(m.group(5))))
        return out

    def wait_for_run(self, after, timeout=600):
        deadline = time.time() + timeout
        while time.time() < deadline:
            runs = [r for r in self.runs() if r[1] > after]
            if runs:
                return runs[0]
            time.sleep(0.02)
        raise SystemExit(f"no watch run after {after}: {self.lines[-20:]}")

    def stop(self):
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


def search(conn, query, mode, k=5):
    body = json.dumps({"query": query, "mode": mode, "k": k})
    conn.request("POST", "/api/search", body=body, headers={"content-type": "application/json"})
    resp = conn.getresponse()
    payload = resp.read()
    return resp.status, (json.loads(payload) if resp.status == 200 else payload)


class Searcher(threading.Thread):
    """A client searching in a loop; every search's start, end and outcome kept."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
        self.stop_flag = threading.Event()
        self.searches = []  # (start, end, ok)
        self.errors = []

    def run(self):
        while not self.stop_flag.is_set():
            start = time.perf_counter()
            try:
                status, body = search(self.conn, LOOP_QUERY, "hybrid")
                ok = status == 200 and isinstance(body.get("results"), list)
                if not ok:
                    self.errors.append(f"{status}: {body!r}"[:300])
            except Exception as e:  # noqa: BLE001 - counted, then retried on a new connection
                ok = False
                self.errors.append(repr(e)[:300])
                self.conn.close()
            self.searches.append((start, time.perf_counter(), ok))

    def finish(self):
        self.stop_flag.set()
        self.join(timeout=120)


def edit_targets(corpus_dir, n):
    """`n` crawled pages long enough for a mid-document edit, spread over the corpus."""
    pages = []
    for root, _, files in os.walk(corpus_dir):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(".md") and "/notes/" not in path and os.path.getsize(path) > 6000:
                pages.append(path)
    pages.sort()
    step = max(1, len(pages) // n)
    return pages[::step][:n], pages


def one_page(pages, rng):
    """About PAGE_CHARS characters of another page's text, cut at line ends."""
    with open(rng.choice(pages), encoding="utf-8") as f:
        text = f.read()
    start = rng.randrange(0, max(1, len(text) - PAGE_CHARS))
    piece = text[start:start + PAGE_CHARS]
    return piece[piece.find("\n") + 1:piece.rfind("\n")].strip()


def save(path, marker, page, atomic):
    """Inserts a page with `marker` at a paragraph break mid-document."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    middle = text.find("\n\n", len(text) // 2)
    middle = len(text) if middle < 0 else middle
    edited = f"{text[:middle]}\n\nEdited: {marker}.\n\n{page}\n{text[middle:]}"
    if atomic:
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(edited)
        t0 = time.perf_counter()
        os.rename(tmp, path)
    else:
        t0 = time.perf_counter()
        with open(path, "w", encoding="utf-8") as f:
            f.write(edited)
    return t0


def wait_searchable(conn, word, rel_path, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, body = search(conn, word, "lexical", 3)
        if status == 200 and any(h.get("path") == rel_path for h in body["results"]):
            return time.perf_counter()
        time.sleep(0.02)
    raise SystemExit(f"{word} never became searchable in {rel_path}")


def saves(server, corpus_dir, quick):
    rng = random.Random(7)
    targets, pages = edit_targets(corpus_dir, SAVES)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    rows = []
    for i, path in enumerate(targets[: 5 if quick else SAVES]):
        time.sleep(1.5)  # quiet: nothing pending, the previous run reported
        last = max((r[1] for r in server.runs()), default=0)
        marker = f"watchsave{i}q{rng.randrange(10**6)}"
        rel = os.path.relpath(path, corpus_dir).replace(os.sep, "/")
        t0 = save(path, marker, one_page(pages, rng), atomic=i % 2 == 1)
        found = wait_searchable(conn, marker, rel)
        run = server.wait_for_run(last)
        rows.append({"path": rel, "atomic": i % 2 == 1, "latency_ms": (found - t0) * 1000,
                     "run_s": run[4], "run": f"{run[2]}: {run[3]}"})
        log(f"save {i}: {rows[-1]['latency_ms']:.0f} ms ({rows[-1]['run']}, run {run[4]:.2f} s)")
    return rows


def checkout(server, notes_dir, conn):
    time.sleep(2)
    before = max((r[1] for r in server.runs()), default=0)
    t0 = time.perf_counter()
    check_out(notes_dir, "two")
    written = time.perf_counter()
    run = server.wait_for_run(before, timeout=1800)
    wait_searchable(conn, f"checkouttwox{NOTES - 1}", f"notes/note-{NOTES - 1:03}.md")
    time.sleep(5)  # any second run would show by now
    after = [r for r in server.runs() if r[1] > before]
    return {"files": NOTES, "write_s": written - t0, "runs": len(after),
            "reported_after_s": run[0] - t0, "run_s": run[4], "run": f"{run[2]}: {run[3]}"}


def loop_latency(searcher, server):
    """The loop client's latency, split by whether an index run was in progress."""
    spans = [(at - seconds, at) for at, _, _, _, seconds in server.runs()]
    during, idle = [], []
    for start, end, ok in searcher.searches:
        if ok:
            busy = any(s < end and start < e for s, e in spans)
            (during if busy else idle).append((end - start) * 1000)
    return {"during_runs": percentiles(during), "idle": percentiles(idle),
            "searches": len(searcher.searches), "errors": len(searcher.errors),
            "first_errors": searcher.errors[:5]}


def run(ragmap, tool, work, model_dir, threads, sessions, quick=False):
    corpus = remote_embed_bench.mirror_corpus(ragmap)
    ws = os.path.join(work, "workspace-watch")
    notes = make_workspace(ws, corpus, model_dir, threads, sessions)
    log("ragmap index (watch bench workspace)")
    subprocess.run([ragmap, "-C", ws, "index"], check=True, stdout=subprocess.DEVNULL)
    status = json.loads(subprocess.run([ragmap, "-C", ws, "status", "--json"], check=True,
                                       capture_output=True, text=True).stdout)
    server = WatchServer(ragmap, ws)
    try:
        server.wait_for_run(0)  # the start-up scan
        searcher = Searcher(server)
        searcher.start()
        rows = saves(server, os.path.join(ws, "corpus"), quick)
        conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
        touched = checkout(server, notes, conn)
        searcher.finish()
        loop = loop_latency(searcher, server)
    finally:
        code = server.stop()
    with open(os.path.join(work, "bench-watch-serve.json"), "w") as f:  # kept if what follows fails
        json.dump({"saves": rows, "checkout": touched, "loop": loop, "exit_code": code}, f, indent=2)
    log(f"checkout: {touched}; searching client: {loop['searches']} searches, {loop['errors']} errors")
    log("bench scoped (watch-scoped runs against full scans)")
    p = subprocess.run([tool, "scoped", "--workspace", ws, "--rounds", "3" if quick else "8"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit("bench scoped failed")
    latencies = [r["latency_ms"] for r in rows]
    return {"documents": status["documents"], "chunks": status["chunks"], "saves": rows,
            "latency": percentiles(latencies),
            "run_s": percentiles([r["run_s"] * 1000 for r in rows]),
            "checkout": touched, "loop": loop, "exit_code": code, "scoped": json.loads(p.stdout)}


def report_lines(r, machine, command):
    lines = []
    w = lines.append
    lat, runs, co, loop, sc = r["latency"], r["run_s"], r["checkout"], r["loop"], r["scoped"]
    w("## Watch")
    w("")
    w(f"`ragmap serve --watch` (default `[watch]`: debounce 300 ms, events) on {machine['cpu']} "
      f"({machine['nproc_available']} cores; load average at the start {machine['load_at_start'][0]:.2f}, "
      f"other sessions share these cores), measured by `{command}`: the web mirror crawled with "
      f"`--depth 1` plus {NOTES} short notes ({r['documents']} documents, {r['chunks']} chunks), "
      f"a client searching in a loop throughout.")
    w("")
    w(f"| | n | p50 | p90 | max |")
    w("|---|---|---|---|---|")
    w(f"| save → searchable (one-page edit, in place and by rename in turn) | {lat['n']} | "
      f"{lat['p50_ms'] / 1000:.2f} s | {lat['p90_ms'] / 1000:.2f} s | {lat['max_ms'] / 1000:.2f} s |")
    w(f"| of which the index run | {runs['n']} | {runs['p50_ms'] / 1000:.2f} s | "
      f"{runs['p90_ms'] / 1000:.2f} s | {runs['max_ms'] / 1000:.2f} s |")
    w("")
    met = "met" if lat["p50_ms"] <= 2000 else "missed"
    w(f"Goal: p50 ≤ 2 s: {lat['p50_ms'] / 1000:.2f} s ({met}). The rest of each latency is the "
      "debounce (the corpus quiet for 300 ms) and the search that finds the word.")
    w("")
    w(f"Checkout: {co['files']} notes rewritten as git does it (unlink, create) in {co['write_s']:.2f} s → "
      f"{co['runs']} index run ({co['run']}) taking {co['run_s']:.1f} s, reported "
      f"{co['reported_after_s']:.1f} s after the first write.")
    w("")
    d, i = loop["during_runs"], loop["idle"]
    w(f"The searching client: {loop['searches']} searches, {loop['errors']} errors; hybrid search p50 "
      f"{i.get('p50_ms', float('nan')):.0f} ms when no run was in progress ({i['n']}), "
      f"{d.get('p50_ms', float('nan')):.0f} ms during runs ({d['n']}; runs index at normal priority on a thread pool of their own).")
    w("")
    w("One index run after a one-page edit, alternating in one process (`bench scoped`): the watcher's "
      "run reads the edited file only, with the tokenizer and model its first run loaded; a full scan "
      "(`ragmap index`) reads and hashes every file and loads them:")
    w("")
    w("| run | n | files read | chunks embedded | chunks kept | total p50 |")
    w("|---|---|---|---|---|---|")
    for kind, label in (("scoped", "watch (changed paths)"), ("full", "full scan")):
        x = sc[kind]
        w(f"| {label} | {x['n']} | {x['scanned']} | {x['embedded_p50']} | {x['kept_p50']} | "
          f"{x['total_p50_s'] * 1000:.0f} ms |")
    w("")
    return lines
