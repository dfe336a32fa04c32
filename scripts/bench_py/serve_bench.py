"""`ragmap serve` under measurement: warm /api/search latency, the whole
`ragmap search` process with and without a running server, and a mixed load
of 8 concurrent clients against a scripted upstream model.

Used by run.py (the full bench) and on its own by `scripts/bench --server`.
Python's http.client keeps one connection per client thread; the scripted
model streams a short answer so that what is timed is ragmap, not a model.
"""

import http.client
import http.server
import json
import os
import random
import statistics
import subprocess
import threading
import time

ANSWER_PIECES = ["LoRA trains ", "small low-rank ", "adapters [1]."]


def percentiles(ms):
    ms = sorted(ms)
    if not ms:
        return {"n": 0}

    def at(p):
        return ms[min(len(ms) - 1, int(round(p / 100 * (len(ms) - 1))))]

    return {"n": len(ms), "p50_ms": at(50), "p90_ms": at(90), "p99_ms": at(99),
            "max_ms": ms[-1], "mean_ms": statistics.fmean(ms)}


class ScriptedModel(http.server.ThreadingHTTPServer):
    """An OpenAI-compatible upstream that answers every chat with ANSWER_PIECES."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _ModelHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _ModelHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
        if not body.get("stream"):
            self._json(200, {"id": "x", "object": "chat.completion", "model": "scripted",
                             "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                 "role": "assistant", "content": "".join(ANSWER_PIECES)}}]})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        for piece in ANSWER_PIECES:
            chunk = {"id": "x", "object": "chat.completion.chunk", "model": "scripted",
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        stop = {"id": "x", "object": "chat.completion.chunk", "model": "scripted",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(stop)}\n\ndata: [DONE]\n\n".encode())
        self.close_connection = True

    def _json(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Server:
    """`ragmap -C ws serve --port 0`, with its URL read from the first line."""

    def __init__(self, ragmap, ws, env=None):
        self.proc = subprocess.Popen([ragmap, "-C", ws, "serve", "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        line = self.proc.stdout.readline()
        url = next((w for w in line.split() if w.startswith("http://")), None)
        if url is None:
            self.proc.kill()
            raise SystemExit(f"ragmap serve did not start: {line!r} {self.proc.stderr.read()[-2000:]}")
        self.url = url
        host, port = url[len("http://"):].rstrip("/").split(":")
        self.host, self.port = host, int(port)
        # Drain both pipes so the server never blocks on them.
        for pipe in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=pipe.read, daemon=True).start()

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Client:
    """One keep-alive connection, as a chat app holds one."""

    def __init__(self, server):
        self.server = server
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=120)

    def request(self, method, path, body=None):
        """(status, body bytes, milliseconds); reconnects once when the server closed."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        for attempt in (0, 1):
            start = time.perf_counter()
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
                ms = (time.perf_counter() - start) * 1000
                if resp.getheader("connection", "").lower() == "close":
                    self.conn.close()
                return resp.status, payload, ms
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.server.host, self.server.port,
                                                       timeout=120)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def write_config(ws, upstream_url, workers):
    path = os.path.join(ws, "config.toml")
    with open(path) as f:
        text = f.read()
    # Drop sections this bench sets, keep the rest (embed settings, model dir).
    kept, skip = [], False
    for line in text.splitlines():
        if line.strip().startswith("["):
            skip = line.strip() in ("[llm]", "[server]")
        if not skip:
            kept.append(line)
    kept += ["", "[llm]", f'base_url = "{upstream_url}"', 'model = "scripted"', "rewrite = false",
             "", "[server]", f"workers = {workers}", "queue = 256"]
    with open(path, "w") as f:
        f.write("\n".join(kept) + "\n")
    return text


def warm_search(server, queries, n):
    client = Client(server)
    for q in queries:  # warm-up: page cache, statement cache, session
        client.request("POST", "/api/search", {"query": q, "k": 6})
    ms, errors = [], 0
    for i in range(n):
        status, _, t = client.request("POST", "/api/search", {"query": queries[i % len(queries)], "k": 6})
        errors += status != 200
        ms.append(t)
    return {**percentiles(ms), "errors": errors}


def search_process(ragmap, ws, queries, runs, extra=()):
    walls = []
    for i in range(runs):
        start = time.perf_counter()
        p = subprocess.run([ragmap, "-C", ws, "search", queries[i % len(queries)], "-k", "6", *extra],
                           capture_output=True, text=True)
        walls.append((time.perf_counter() - start) * 1000)
        if p.returncode != 0:
            raise SystemExit(f"ragmap search failed: {p.stderr[-2000:]}")
    return percentiles(walls[1:] if runs > 2 else walls)


MIX = [("search", 40), ("chat_stream", 25), ("chat", 15), ("embeddings", 10), ("health", 10)]


def mixed_load(server, queries, total, clients):
    kinds = [k for k, w in MIX for _ in range(w)]
    rng = random.Random(7)
    plan = [(rng.choice(kinds), queries[i % len(queries)]) for i in range(total)]
    lock = threading.Lock()
    next_index = [0]
    results = [None] * total
    rss = {}

    def worker():
        client = Client(server)
        while True:
            with lock:
                i = next_index[0]
                if i >= total:
                    return
                next_index[0] += 1
                if i == 100:
                    rss["after_first_100"] = server.rss_mib()
                if i == total - 100:
                    rss["before_last_100"] = server.rss_mib()
            kind, q = plan[i]
            if kind == "search":
                req = ("POST", "/api/search", {"query": q, "k": 6})
            elif kind in ("chat", "chat_stream"):
                req = ("POST", "/v1/chat/completions",
                       {"model": "ragmap", "stream": kind == "chat_stream",
                        "messages": [{"role": "user", "content": q}]})
            elif kind == "embeddings":
                req = ("POST", "/v1/embeddings", {"model": "ragmap", "input": [q, q[::-1]]})
            else:
                req = ("GET", "/health", None)
            try:
                status, body, ms = client.request(*req)
                ok = status == 200 and (kind != "chat_stream" or body.rstrip().endswith(b"[DONE]"))
            except OSError as e:
                status, ms, ok = str(e), float("nan"), False
            results[i] = (kind, ok, status, ms)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    rss["end"] = server.rss_mib()
    by_kind = {}
    for kind, _ in MIX:
        ms = [r[3] for r in results if r[0] == kind and r[1]]
        by_kind[kind] = percentiles(ms)
    errors = [r for r in results if not r[1]]
    return {
        "requests": total, "clients": clients, "wall_s": wall,
        "errors": len(errors), "error_samples": [str(e[2]) for e in errors[:5]],
        "all": percentiles([r[3] for r in results if r[1]]), "by_kind": by_kind,
        "rss_mib": rss,
    }


def run(ragmap, ws, queries, quick=False, env=None):
    """Every server measurement on the indexed workspace `ws` (its config is restored after)."""
    model = ScriptedModel()
    workers = len(os.sched_getaffinity(0))
    original = write_config(ws, model.url, workers)
    try:
        result = {"workers": workers}
        # Without a server first: the same binary, the same queries.
        runs = 5 if quick else 12
        result["process_no_server"] = search_process(ragmap, ws, queries, runs)
        result["process_lexical"] = search_process(ragmap, ws, queries, runs, ("--mode", "lexical"))
        started = time.perf_counter()
        server = Server(ragmap, ws, env)
        result["serve_ready_s"] = time.perf_counter() - started
        try:
            result["rss_idle_mib"] = server.rss_mib()
            result["api_search"] = warm_search(server, queries, 100 if quick else 300)
            result["process_with_server"] = search_process(ragmap, ws, queries, runs)
            result["load"] = mixed_load(server, queries, 300 if quick else 1000, 8)
        finally:
            server.stop()
        return result
    finally:
        with open(os.path.join(ws, "config.toml"), "w") as f:
            f.write(original)
        model.shutdown()



def report_lines(s, machine, command):
    """The `## Server` section of BENCHMARKS.md."""
    lines = []
    w = lines.append
    w("## Server")
    w("")
    w(f"`ragmap serve` on {machine['cpu']} ({machine['nproc_available']} cores), {s['workers']} retrieval "
      f"workers, measured by `{command}` against a scripted upstream model (three streamed pieces, "
      "no delay), so what is timed is ragmap. Python's http.client holds one keep-alive connection "
      "per client. Load average at the start: "
      f"{machine['load_at_start'][0]:.2f} (other sessions' builds share these cores).")
    w("")
    ns, ws_, lex = s["process_no_server"], s["process_with_server"], s["process_lexical"]
    w("| what | p50 | p99 | goal |")
    w("|---|---|---|---|")
    a = s["api_search"]
    w(f"| warm `POST /api/search` (k=6, hybrid, query embedding included), real corpus, {a['n']} requests "
      f"| {a['p50_ms']:.1f} ms | {a['p99_ms']:.1f} ms | p50 < 30 ms |")
    big = s.get("api_search_100k")
    if big:
        w(f"| the same at {big['chunks']} synthetic chunks, {big['n']} requests | {big['p50_ms']:.1f} ms "
          f"| {big['p99_ms']:.1f} ms | p50 < 30 ms |")
    w(f"| whole `ragmap search` process, server running | {ws_['p50_ms']:.0f} ms | {ws_['p99_ms']:.0f} ms "
      "| < 150 ms |")
    w(f"| whole `ragmap search` process, no server (same run) | {ns['p50_ms']:.0f} ms | {ns['p99_ms']:.0f} ms | |")
    w(f"| whole `ragmap search --mode lexical`, no server | {lex['p50_ms']:.0f} ms | {lex['p99_ms']:.0f} ms | |")
    w("")
    w(f"With a server running, a `ragmap search` process takes {ns['p50_ms'] / ws_['p50_ms']:.1f}x less time "
      f"than loading the model itself. `ragmap serve` was ready {s['serve_ready_s']:.2f} s after start "
      f"and held {s['rss_idle_mib']:.0f} MiB.")
    w("")
    ld = s["load"]
    rss = ld["rss_mib"]
    w(f"Mixed load: {ld['requests']} requests from {ld['clients']} concurrent clients "
      f"({', '.join(f'{k} {v} %' for k, v in MIX)}) in {ld['wall_s']:.1f} s: "
      f"**{ld['errors']} errors**; all requests p50 {ld['all']['p50_ms']:.1f} ms, p99 {ld['all']['p99_ms']:.1f} ms. "
      f"Server RSS {rss.get('after_first_100', float('nan')):.0f} MiB after the first 100 requests, "
      f"{rss.get('before_last_100', float('nan')):.0f} MiB before the last 100, {rss['end']:.0f} MiB at the end.")
    w("")
    w("| request kind | n | p50 | p99 |")
    w("|---|---|---|---|")
    for kind, _ in MIX:
        p = ld["by_kind"][kind]
        if p.get("n"):
            w(f"| {kind} | {p['n']} | {p['p50_ms']:.1f} ms | {p['p99_ms']:.1f} ms |")
    w("")
    return lines

