//! The index in a real PostgreSQL + pgvector (scripts/postgres: a primary and
//! a streaming replica on loopback): every command on it with the real
//! embedding model, BM25 equal to the embedded index's to the last bit,
//! incremental runs, concurrent and killed indexers, servers following an
//! indexer, the replica, copies both ways, and each bad input's one line and
//! exit code.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ragmap::config::Config;
use ragmap::index::{FieldWeights, Pruning, TermCounts};
use serde_json::{json, Value};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .unwrap()
}

fn get_json(url: &str) -> Value {
    block_on(async { http().get(url).send().await.unwrap().json().await.unwrap() })
}

fn post_json(url: &str, body: &Value) -> (u16, Value) {
    block_on(async {
        let r = http().post(url).json(body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    })
}

/// The password part of a `postgres://user:password@…` URL.
fn password(url: &str) -> String {
    let userinfo = url.split("://").nth(1).unwrap().split('@').next().unwrap();
    userinfo.split(':').nth(1).unwrap().to_string()
}

fn out_of(o: &std::process::Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// A workspace whose commands use the database `url` (through the environment).
struct PgWorkspace {
    ws: Workspace,
    url: String,
}

impl PgWorkspace {
    fn new(url: &str, config: &str) -> PgWorkspace {
        PgWorkspace {
            ws: Workspace::new(config),
            url: url.to_string(),
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.ws.run_env(args, &[("RAGMAP_INDEX_URL", &self.url)])
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "ragmap {args:?}: {}", out_of(&out));
        let text = out_of(&out);
        assert!(
            !text.contains(&password(&self.url)),
            "password printed: {text}"
        );
        stdout(&out)
    }

    fn config(&self) -> Config {
        let mut config = self.ws.config();
        config.index.url = Some(self.url.clone());
        config
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    fn top_path(&self, query: &str, mode: &str) -> String {
        let hits: Value = serde_json::from_str(&self.ok(&[
            "search",
            query,
            "--json",
            "--mode",
            mode,
            "--no-server",
        ]))
        .unwrap();
        hits[0]["path"].as_str().unwrap_or("").to_string()
    }
}

// ---------------------------------------------------------------- BM25 parity

/// The text of a mirrored page: tags, scripts and styles dropped.
fn page_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        text.push(' ');
        let tag = &rest[open..];
        let head: String = tag.chars().take(7).collect::<String>().to_ascii_lowercase();
        let skip = ["<script", "<style"]
            .iter()
            .find(|t| head.starts_with(*t))
            .and_then(|t| tag.find(&format!("</{}>", &t[1..])));
        let close = match skip {
            Some(end) => end,
            None => tag.find('>').unwrap_or(tag.len() - 1),
        };
        rest = &tag[close + 1..];
    }
    text.push_str(rest);
    text.replace("&amp;", "&").replace("&nbsp;", " ")
}

/// Up to `per_page` windows of about 600 bytes of `text`.
fn windows(text: &str, per_page: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() && out.len() < per_page {
        let mut end = (start + 600).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
}

/// An embedded index of the web mirror's pages (their text in windows,
/// random vectors), written through the library as a build would; each
/// chunk's id and vector.
fn mirror_index(ws: &Workspace) -> Option<Vec<(i64, Vec<f32>)>> {
    use ragmap::index::store::{Store, DB_FILE};
    use ragmap::index::{terms::FieldTerms, vectors::Vectors, NewChunk, NewDocument};
    use rand::{Rng, SeedableRng};
    let site = webcorpus()?.join("site");
    let mut pages: Vec<_> = walkdir::WalkDir::new(&site)
        .into_iter()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "html"))
        .map(|e| e.path().to_path_buf())
        .collect();
    pages.sort();
    let dir = ws.path().join("index");
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open_rw(&dir.join(DB_FILE)).unwrap();
    let mut vectors = Vectors::new(4096).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut all = Vec::new();
    store.begin().unwrap();
    for page in pages.iter().take(60) {
        let rel = page.strip_prefix(&site).unwrap().display().to_string();
        let text = page_text(&String::from_utf8_lossy(&std::fs::read(page).unwrap()));
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let (title, source) = (
            rel.replace("/index.html", ""),
            format!("http://127.0.0.1:8719/{rel}"),
        );
        let doc = store
            .insert_document(&NewDocument {
                path: &rel,
                hash: "h",
                title: &title,
                source: &source,
                sections: &[],
                modified: Some(1),
                indexed_at: "2026-01-01T00:00:00Z",
            })
            .unwrap();
        for (ordinal, body) in windows(&text, 25).into_iter().enumerate() {
            let heading: String = match ordinal % 2 {
                0 => body.chars().take(20).collect(),
                _ => String::new(),
            };
            let heading = heading.as_str();
            let vector: Vec<f32> = (0..384).map(|_| rng.random::<f32>() - 0.5).collect();
            let id = store
                .insert_chunk(
                    doc,
                    &NewChunk {
                        ordinal,
                        start: 0,
                        end: body.len(),
                        heading,
                        text: body,
                        tokens: 100,
                        terms: &FieldTerms::of(&title, &source, heading, body),
                        vector: &vector,
                    },
                )
                .unwrap();
            vectors.add(id, &vector).unwrap();
            all.push((id, vector));
        }
    }
    let count = vectors.len().to_string();
    store
        .set_meta(&[
            ("vectors_file", "vectors-1.usearch"),
            ("vectors_count", &count),
            ("model", "synthetic"),
            ("model_stamp", "synthetic"),
            ("dimensions", "384"),
            ("settings", "synthetic"),
            ("identity", "synthetic;synthetic"),
            ("built_at", "2026-01-01T00:00:00Z"),
        ])
        .unwrap();
    store.commit().unwrap();
    vectors.save(&dir.join("vectors-1.usearch")).unwrap();
    Some(all)
}

/// Term lists to search with: every eval question's own terms and names,
/// pairs of its terms as phrases (as the glossary's bridges are), and words
/// FTS5 splits or folds.
fn term_lists() -> Vec<(Vec<String>, Vec<String>)> {
    use ragmap::index::terms::{name_terms, query_terms};
    let root = env!("CARGO_MANIFEST_DIR");
    let mut lists = Vec::new();
    for file in ["eval/questions.jsonl", "eval/heldout.jsonl"] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let q: Value = serde_json::from_str(line).unwrap();
            let question = q["question"].as_str().unwrap();
            let terms = query_terms(question);
            let mut phrases: Vec<String> = terms.windows(2).map(|w| w.join(" ")).collect();
            phrases.truncate(6);
            lists.push((terms, name_terms(question)));
            lists.push((phrases, Vec::new()));
        }
    }
    let odd = [
        "max_tokens",
        "top_p",
        "café",
        "naïve",
        "ｌｌｍ",
        "_",
        "a_b_c",
        "大 语言 模型",
    ];
    lists.push((
        odd.iter().map(|s| s.to_string()).collect(),
        vec!["gpt_3".into()],
    ));
    lists
}

/// Each list's lexical and title searches on both indexes, under the
/// default and two forced prunings: the same ids, the same scores.
fn assert_same_ranking(a: &Config, b: &Config) {
    let (a, b) = (
        ragmap::index::open(a).unwrap(),
        ragmap::index::open(b).unwrap(),
    );
    let (a, b) = (
        a.snapshot().unwrap().unwrap(),
        b.snapshot().unwrap().unwrap(),
    );
    let weights = FieldWeights {
        title: 3.0,
        url: 3.0,
        heading: 2.0,
        body: 1.0,
    };
    let prunings = [
        Pruning::OWN_TERMS,
        Pruning {
            budget: 300,
            drop_common: false,
            unpruned_up_to: 0,
        },
        Pruning {
            budget: 60,
            drop_common: true,
            unpruned_up_to: 0,
        },
    ];
    let mut compared = 0;
    for (terms, names) in term_lists() {
        let (mut ca, mut cb) = (TermCounts::default(), TermCounts::default());
        for pruning in prunings {
            let x = a
                .lexical_search(&terms, 40, &weights, pruning, &mut ca)
                .unwrap();
            let y = b
                .lexical_search(&terms, 40, &weights, pruning, &mut cb)
                .unwrap();
            assert_eq!(x, y, "terms {terms:?}, {pruning:?}");
            compared += usize::from(!x.is_empty());
        }
        let x = a.title_search(&names, 10, &weights).unwrap();
        let y = b.title_search(&names, 10, &weights).unwrap();
        assert_eq!(x, y, "names {names:?}");
    }
    assert!(compared > 300, "only {compared} lists found anything");
}

#[test]
fn bm25_equals_the_embedded_index_to_the_last_bit_and_copies_go_both_ways() {
    let Some(pg) = pg_cluster() else { return };
    let ws = Workspace::new("");
    let Some(vectors) = mirror_index(&ws) else {
        return;
    };
    let chunks = vectors.len();
    let url = pg.database("parity");
    // Embedded → Postgres, without the model (nothing is embedded).
    let out = ws.run(&["index", "--to", &url]);
    assert!(out.status.success(), "{}", out_of(&out));
    assert!(stdout(&out).contains(&format!("({chunks} chunks, nothing re-embedded)")));
    assert!(!out_of(&out).contains(&password(&url)));
    let embedded = ws.config();
    let mut postgres = ws.config();
    postgres.index.url = Some(url.clone());
    assert_same_ranking(&embedded, &postgres);

    // Postgres → a folder: the same again, and the vectors came along.
    let back = ws.path().join("back");
    let out = ws.run_env(
        &["index", "--to", back.to_str().unwrap()],
        &[("RAGMAP_INDEX_URL", &url)],
    );
    assert!(out.status.success(), "{}", out_of(&out));
    let mut copied = ws.config();
    copied.paths.index = back;
    assert_same_ranking(&embedded, &copied);
    let (a, b) = (
        ragmap::index::open(&embedded).unwrap(),
        ragmap::index::open(&postgres).unwrap(),
    );
    let c = ragmap::index::open(&copied).unwrap();
    let (sa, sb, sc) = (
        a.snapshot().unwrap().unwrap(),
        b.snapshot().unwrap().unwrap(),
        c.snapshot().unwrap().unwrap(),
    );
    for id in [1, chunks as i64 / 2, chunks as i64] {
        let row = &sa.chunks_by_ids(&[id]).unwrap()[&id];
        assert_eq!(sb.chunks_by_ids(&[id]).unwrap()[&id], *row);
        assert_eq!(sc.chunks_by_ids(&[id]).unwrap()[&id], *row);
        assert_eq!(
            sb.neighbours(row.doc_id, row.ordinal, 1).unwrap(),
            sa.neighbours(row.doc_id, row.ordinal, 1).unwrap()
        );
        assert_eq!(
            sb.first_chunk_of(row.doc_id).unwrap(),
            sa.first_chunk_of(row.doc_id).unwrap()
        );
    }
    // A chunk's own vector finds it first, in all three.
    for (id, vector) in vectors.iter().step_by(97) {
        for snapshot in [&sa, &sb, &sc] {
            let found = snapshot.vectors().nearest(vector, 5).unwrap();
            assert_eq!(found[0].0, *id);
            assert!((found[0].1 - 1.0).abs() < 1e-3, "{found:?}");
        }
    }
    assert_eq!(b.counts().unwrap().chunks, chunks as i64);
    assert_eq!(c.counts().unwrap().chunks, chunks as i64);
}
