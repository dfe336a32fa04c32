"""MCP search beside ragmap's own search, on one `ragmap serve`.

The same queries, interleaved request by request on one keep-alive
connection each: `POST /api/search` (k=6), `tools/call search` at `/mcp` in
revision 2026-07-28 (per-request `_meta`, SEP-2243 headers) and in the
handshake era (2025-11-25, after `initialize`), and Dify's `POST /retrieval`.
What differs between them is the protocol layer, so the p50 gap is its cost.

Used by run.py on its own as `scripts/bench --mcp` (and in the full bench).
"""

import http.client
import json
import time

from serve_bench import Server, percentiles

MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


class Connection:
    def __init__(self, server):
        self.server = server
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=120)

    def post(self, path, body, headers=None):
        """(status, parsed body, milliseconds)."""
        data = json.dumps(body).encode()
        all_headers = {"content-type": "application/json",
                       "accept": "application/json, text/event-stream", **(headers or {})}
        start = time.perf_counter()
        self.conn.request("POST", path, body=data, headers=all_headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        ms = (time.perf_counter() - start) * 1000
        parsed = json.loads(payload) if payload else None
        return resp.status, parsed, ms


def api_search(c, q):
    status, body, ms = c.post("/api/search", {"query": q, "k": 6})
    return status == 200 and len(body["results"]) > 0, ms


def mcp_search(c, q, modern, ids):
    ids[0] += 1
    params = {"name": "search", "arguments": {"query": q, "k": 6}}
    headers = {"mcp-protocol-version": "2026-07-28" if modern else "2025-11-25"}
    if modern:
        params["_meta"] = MODERN_META
        headers.update({"mcp-method": "tools/call", "mcp-name": "search"})
    status, body, ms = c.post("/mcp", {"jsonrpc": "2.0", "id": ids[0], "method": "tools/call",
                                       "params": params}, headers)
    ok = status == 200 and not body["result"].get("isError") and body["result"]["structuredContent"]["results"]
    return bool(ok), ms


def dify_retrieval(c, q):
    status, body, ms = c.post("/retrieval", {"knowledge_id": "ragmap", "query": q,
                                             "retrieval_setting": {"top_k": 6, "score_threshold": 0.0}})
    return status == 200 and len(body["records"]) > 0, ms


def run(ragmap, ws, queries, quick=False, env=None):
    """Every kind of search, interleaved, on one server over the indexed `ws`."""
    server = Server(ragmap, ws, env)
    try:
        api, modern, legacy, dify = (Connection(server) for _ in range(4))
        legacy_ids = [1]
        status, init, _ = legacy.post("/mcp", {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"}}})
        assert status == 200 and init["result"]["protocolVersion"] == "2025-11-25", init
        legacy.post("/mcp", {"jsonrpc": "2.0", "method": "notifications/initialized"},
                    {"mcp-protocol-version": "2025-11-25"})
        modern_ids = [0]
        kinds = {
            "api_search": lambda q: api_search(api, q),
            "mcp_2026_07_28": lambda q: mcp_search(modern, q, True, modern_ids),
            "mcp_2025_11_25": lambda q: mcp_search(legacy, q, False, legacy_ids),
            "dify_retrieval": lambda q: dify_retrieval(dify, q),
        }
        for q in queries[:20]:  # warm-up: page cache, statement cache, session
            for call in kinds.values():
                call(q)
        n = 100 if quick else 400
        ms = {k: [] for k in kinds}
        errors = {k: 0 for k in kinds}
        for i in range(n):
            q = queries[i % len(queries)]
            # Rotate the order so no kind always runs right after another.
            order = list(kinds.items())
            order = order[i % len(order):] + order[:i % len(order)]
            for kind, call in order:
                ok, t = call(q)
                errors[kind] += not ok
                ms[kind].append(t)
        return {kind: {**percentiles(v), "errors": errors[kind]} for kind, v in ms.items()}
    finally:
        server.stop()


LABELS = {
    "api_search": "`POST /api/search`",
    "mcp_2026_07_28": "`/mcp` `tools/call search`, revision 2026-07-28",
    "mcp_2025_11_25": "`/mcp` `tools/call search`, revision 2025-11-25 (after `initialize`)",
    "dify_retrieval": "Dify `POST /retrieval` (passages widened, scores mapped)",
}


def report_lines(r, machine, command):
    """The `## MCP and Dify` section of BENCHMARKS.md."""
    lines = []
    w = lines.append
    base = r["api_search"]["p50_ms"]
    w("## MCP and Dify")
    w("")
    w(f"One `ragmap serve` on {machine['cpu']} ({machine['nproc_available']} cores), measured by "
      f"`{command}`: the same queries (k=6, hybrid) through each protocol, interleaved request by "
      "request, one keep-alive connection each (Python's http.client). Load average at the start: "
      f"{machine['load_at_start'][0]:.2f}.")
    w("")
    w("| request | n | p50 | p99 | p50 − `/api/search` | errors |")
    w("|---|---|---|---|---|---|")
    for kind, label in LABELS.items():
        p = r[kind]
        w(f"| {label} | {p['n']} | {p['p50_ms']:.2f} ms | {p['p99_ms']:.2f} ms | "
          f"{p['p50_ms'] - base:+.2f} ms | {p['errors']} |")
    w("")
    gap = r["mcp_2026_07_28"]["p50_ms"] - base
    w(f"Goal: `/mcp` search p50 within 5 ms of `/api/search`: {gap:+.2f} ms "
      f"({'met' if abs(gap) <= 5 else 'missed'}).")
    w("")
    return lines
