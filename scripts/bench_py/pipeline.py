"""A typical Python RAG indexing pipeline, the baseline ragmap is compared with:
langchain-text-splitters RecursiveCharacterTextSplitter(1000, 150), the same
multilingual-e5-small ONNX model through python onnxruntime (tokenizer from the
same tokenizer.json via `tokenizers`, "passage: " prefix, mean pooling, batches
in document order), and a faiss HNSW index (M=16, efConstruction=128,
efSearch=64: ragmap's usearch settings), saved to disk.

  pipeline.py index  --corpus DIR --model-dir DIR --out DIR [--threads N] [--batch N]
  pipeline.py recall --model-dir DIR --out DIR --questions FILE [--k 5]

Each prints one JSON object.
"""

import argparse
import json
import os
import pickle
import re
import time
import urllib.parse

T0 = time.perf_counter()

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from langchain_text_splitters import RecursiveCharacterTextSplitter  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def read_corpus(root):
    docs = []
    for dirpath, _, files in os.walk(root):
        for name in sorted(files):
            if not name.endswith(".md"):
                continue
            path = os.path.join(dirpath, name)
            text = open(path, encoding="utf-8").read()
            meta = {"path": os.path.relpath(path, root), "url": "", "title": ""}
            if text.startswith("---\n"):
                end = text.find("\n---\n", 4)
                if end > 0:
                    for line in text[4:end].splitlines():
                        key, _, value = line.partition(":")
                        value = value.strip()
                        if value.startswith('"'):
                            try:
                                value = json.loads(value)
                            except ValueError:
                                pass
                        if key in ("url", "title"):
                            meta[key] = value
                    text = text[end + 5:]
            docs.append((meta, text))
    docs.sort(key=lambda d: d[0]["path"])
    return docs


class Embedder:
    def __init__(self, model_dir, threads):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            os.path.join(model_dir, "model.onnx"), opts, providers=["CPUExecutionProvider"]
        )
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self.tok.enable_truncation(512)
        pad_id = json.load(open(os.path.join(model_dir, "config.json"))).get("pad_token_id", 1)
        self.tok.enable_padding(pad_id=pad_id, pad_token="<pad>")

    def embed(self, texts):
        enc = self.tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(None, feed)[0]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled.astype(np.float32), int(mask.sum()), int(mask.size)


def cmd_index(a):
    t_start = time.perf_counter()
    docs = read_corpus(a.corpus)
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=150)
    chunks, metas = [], []
    for meta, text in docs:
        for piece in splitter.split_text(text):
            chunks.append(piece)
            metas.append(meta)
    t_split = time.perf_counter()
    emb = Embedder(a.model_dir, a.threads)
    t_load = time.perf_counter()
    vectors, real, padded = [], 0, 0
    for i in range(0, len(chunks), a.batch):
        v, r, p = emb.embed(["passage: " + c for c in chunks[i:i + a.batch]])
        vectors.append(v)
        real += r
        padded += p
    t_embed = time.perf_counter()
    x = np.concatenate(vectors)
    index = faiss.IndexHNSWFlat(x.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 128
    index.hnsw.efSearch = 64
    index.add(x)
    os.makedirs(a.out, exist_ok=True)
    faiss.write_index(index, os.path.join(a.out, "index.faiss"))
    with open(os.path.join(a.out, "chunks.pkl"), "wb") as f:
        pickle.dump({"chunks": chunks, "metas": metas}, f)
    t_end = time.perf_counter()
    print(json.dumps({
        "documents": len(docs),
        "chunks": len(chunks),
        "tokens_real": real,
        "tokens_padded": padded,
        "import_seconds": t_start - T0,
        "split_seconds": t_split - t_start,
        "model_load_seconds": t_load - t_split,
        "embed_seconds": t_embed - t_load,
        "faiss_and_save_seconds": t_end - t_embed,
        "total_seconds_after_imports": t_end - t_start,
    }))


def normalize(s):
    """ragmap's eval rule: scheme, query and fragment dropped, percent-decoded,
    a trailing /index.html and slashes dropped."""
    s = s.strip()
    s = s.split("://", 1)[1] if "://" in s else s
    s = re.split(r"[#?]", s)[0]
    s = urllib.parse.unquote(s, errors="replace")
    if s == "index.html":
        s = ""
    elif s.endswith("/index.html"):
        s = s[: -len("/index.html")]
    return s.rstrip("/")


def without_host(source):
    n = normalize(source)
    if "://" in source:
        i = n.find("/")
        return n[i:] if i >= 0 else ""
    return "/" + n.lstrip("/")


def matches_gold(url, path, gold):
    """The same matching as ragmap's eval (src/eval/metrics.rs `matches`)."""
    gold = gold.strip()
    if gold in (url, path, "corpus/" + path):
        return True
    g = normalize(gold)
    if not g:
        return False
    suffix = "/" + g
    return normalize(url) == g or without_host(url).endswith(suffix) or ("/" + normalize(path)).endswith(suffix)


def cmd_recall(a):
    index = faiss.read_index(os.path.join(a.out, "index.faiss"))
    index.hnsw.efSearch = 64
    data = pickle.load(open(os.path.join(a.out, "chunks.pkl"), "rb"))
    metas = data["metas"]
    emb = Embedder(a.model_dir, a.threads)
    questions = [json.loads(l) for l in open(a.questions, encoding="utf-8") if l.strip()]
    found = 0
    for q in questions:
        v, _, _ = emb.embed(["query: " + q["question"]])
        _, ids = index.search(v, 50)
        docs = []
        for i in ids[0]:
            if i < 0:
                continue
            m = metas[i]
            if m["path"] not in [d["path"] for d in docs]:
                docs.append(m)
            if len(docs) == a.k:
                break
        if any(matches_gold(d["url"], d["path"], g) for d in docs for g in q["gold"]):
            found += 1
    print(json.dumps({"questions": len(questions), "k": a.k,
                      f"recall_at_{a.k}": found / max(len(questions), 1)}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["index", "recall"])
    p.add_argument("--corpus")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--questions")
    p.add_argument("--k", type=int, default=5)
    a = p.parse_args()
    {"index": cmd_index, "recall": cmd_recall}[a.command](a)


if __name__ == "__main__":
    main()
