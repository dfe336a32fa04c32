"""The `## Start-up` section of BENCHMARKS.md: whole `ragmap search` processes,
cold (fresh workspace copy and an empty tokenizer cache: the first search after
set-up) and warm, interleaved with `--mode lexical` runs (no model), with the
time of each load step as the process reports it (`RAGMAP_TIMINGS=1`), plus the
same steps one after another in one process (`bench startup`).

Used by run.py (in the full run, and alone as `bash scripts/bench --startup`).
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

QUERY = "RAG 和微调有什么区别"
TIME = shutil.which("time") or "/usr/bin/time"


def _process(ragmap, ws, args, env):
    """One process under /usr/bin/time -v: wall, CPU, peak RSS and the load steps it printed."""
    full = [TIME, "-v", ragmap, "-C", ws, "search", QUERY, "--no-server", *args]
    start = time.perf_counter()
    p = subprocess.run(full, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(full)}\n{p.stderr[-2000:]}")

    def field(name):
        m = re.search(rf"{re.escape(name)}: ([\d.]+)", p.stderr)
        return float(m.group(1)) if m else float("nan")

    steps = {m.group(1): float(m.group(2))
             for m in re.finditer(r"^timing: (.+?) ([\d.]+) ms$", p.stderr, re.M)}
    return {"wall_s": wall, "user_s": field("User time (seconds)"),
            "sys_s": field("System time (seconds)"),
            "rss_mib": field("Maximum resident set size (kbytes)") / 1024, "steps": steps}


def _summary(runs):
    steps = sorted({k for r in runs for k in r["steps"]})
    return {
        "runs": len(runs),
        "wall_p50_s": statistics.median(r["wall_s"] for r in runs),
        "wall_min_s": min(r["wall_s"] for r in runs),
        "cpu_p50_s": statistics.median(r["user_s"] + r["sys_s"] for r in runs),
        "rss_max_mib": max(r["rss_mib"] for r in runs),
        "steps_p50_ms": {s: statistics.median(r["steps"][s] for r in runs if s in r["steps"])
                         for s in steps},
    }


def run(ragmap, tool, ws, work, quick):
    env = dict(os.environ, RAGMAP_TIMINGS="1")
    cold = []
    for i in range(2 if quick else 3):
        fresh = os.path.join(work, f"startup-fresh-{i}")
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.copytree(ws, fresh)
        with tempfile.TemporaryDirectory(dir=work) as cache:
            # An empty cache root: the tokenizer is read from tokenizer.json and its cache written.
            cold.append(_process(ragmap, fresh, [], dict(env, RAGMAP_CACHE=cache)))
        shutil.rmtree(fresh)
    _process(ragmap, ws, [], env)  # writes the tokenizer cache, warms the page cache
    hybrid, lexical = [], []
    for _ in range(5 if quick else 15):
        hybrid.append(_process(ragmap, ws, [], env))
        lexical.append(_process(ragmap, ws, ["--mode", "lexical"], env))
    p = subprocess.run([tool, "startup", "--workspace", ws, "--query", QUERY],
                       capture_output=True, text=True, env=os.environ)
    serial = json.loads(p.stdout) if p.returncode == 0 else {"error": p.stderr[-2000:]}
    out = {"query": QUERY, "cold": _summary(cold), "warm": _summary(hybrid),
           "lexical": _summary(lexical), "serial": serial}
    out["ratio_warm_to_lexical"] = out["warm"]["wall_p50_s"] / out["lexical"]["wall_p50_s"]
    out["cpu_ratio_warm_to_lexical"] = out["warm"]["cpu_p50_s"] / out["lexical"]["cpu_p50_s"]
    return out


def report_lines(s, machine, command):
    lines = []
    w = lines.append
    cold, warm, lex = s["cold"], s["warm"], s["lexical"]
    w("## Start-up")
    w("")
    w(f"Whole `ragmap search \"{s['query']}\" --no-server` processes on {machine['cpu']} "
      f"({machine['nproc_available']} cores; load average at the start "
      f"{machine['load_at_start'][0]:.2f}, other sessions share these cores), measured by `{command}`: "
      f"cold = a fresh copy of the workspace and an empty tokenizer cache (the first search after "
      f"set-up; the OS page cache is not dropped), warm = repeated, interleaved with `--mode lexical` "
      f"(no model). Goal: warm ≤ 2× lexical and < 0.5 s; peak RSS ≤ 400 MiB.")
    w("")
    w("| process | runs | wall p50 | CPU p50 (user+sys) | peak RSS |")
    w("|---|---|---|---|---|")
    for name, x in (("cold (first search)", cold), ("warm", warm), ("`--mode lexical`", lex)):
        w(f"| {name} | {x['runs']} | {x['wall_p50_s'] * 1000:.0f} ms | {x['cpu_p50_s'] * 1000:.0f} ms | "
          f"{x['rss_max_mib']:.0f} MiB |")
    w("")
    w(f"Warm / lexical: {s['ratio_warm_to_lexical']:.2f}× wall, {s['cpu_ratio_warm_to_lexical']:.2f}× CPU.")
    w("")
    w("Load steps as the processes report them (`RAGMAP_TIMINGS=1`, p50; tokenizer, ONNX session and "
      "index + jieba run side by side, so on a busy machine each is slower than alone):")
    w("")
    w("| step | cold | warm |")
    w("|---|---|---|")
    for step in sorted(set(cold["steps_p50_ms"]) | set(warm["steps_p50_ms"])):
        c = cold["steps_p50_ms"].get(step)
        h = warm["steps_p50_ms"].get(step)
        w(f"| {step} | {'' if c is None else f'{c:.0f} ms'} | {'' if h is None else f'{h:.0f} ms'} |")
    serial = s.get("serial") or {}
    if "steps" in serial:
        w("")
        w("The same steps one after another in one process (`bench startup`), with resident memory "
          "after each:")
        w("")
        w("| step | time | RSS after |")
        w("|---|---|---|")
        for x in serial["steps"]:
            w(f"| {x['step']} | {x['ms']:.1f} ms | {x['rss_mib']:.0f} MiB |")
    w("")
    return lines

