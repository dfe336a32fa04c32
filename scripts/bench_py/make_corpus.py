"""Builds a markdown corpus from the offline web mirror (../shared/webcorpus) for
the benchmarks, when no crawled corpus is given: the page's main content
(<article>, else <main>, else <body> without navigation chrome) converted with
html2text, with front matter naming the page's mirror URL so per-document
recall can match the question set's gold paths.

Usage: make_corpus.py WEBCORPUS_DIR OUT_DIR
"""

import csv
import os
import re
import sys

import html2text
from bs4 import BeautifulSoup

MIRROR = "http://127.0.0.1:8719"
CHROME = ["script", "style", "noscript", "nav", "header", "footer", "aside", "form", "button"]


def decode(raw: bytes) -> str:
    for enc in ("utf-8", "gbk"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", "replace")


def html_to_markdown(html: str) -> str:
    soup = BeautifulSoup(html, "html.parser")
    root = soup.find("article") or soup.find("main") or soup.body or soup
    for tag in root.find_all(CHROME):
        tag.decompose()
    for tag in root.find_all(class_=re.compile(r"cookie|banner|sidebar|toc|nav", re.I)):
        tag.decompose()
    h = html2text.HTML2Text()
    h.body_width = 0
    h.ignore_images = True
    h.ignore_links = True
    h.unicode_snob = True
    return h.handle(str(root)).strip()


def main() -> None:
    src, out = sys.argv[1], sys.argv[2]
    site = os.path.join(src, "site")
    written = 0
    with open(os.path.join(src, "MANIFEST.tsv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        path = row["mirror_path"].lstrip("/")
        file = os.path.join(site, path)
        if not os.path.isfile(file) or path.endswith(".pdf"):
            continue
        raw = open(file, "rb").read()
        if path.endswith(".md"):
            body = decode(raw)
        else:
            body = html_to_markdown(decode(raw))
        if len(body) < 200:
            continue
        rel = re.sub(r"\.(html?|md)$", "", path) + ".md"
        dest = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        title = row["title"].replace('"', "'")
        front = f'---\ntitle: "{title}"\nurl: "{MIRROR}/{path}"\n---\n'
        with open(dest, "w", encoding="utf-8") as f:
            f.write(front + body + "\n")
        written += 1
    print(f"{written} documents in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
