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
    let mut vectors = Vectors::new(4096, 384).unwrap();
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

// ---------------------------------------------------------------- commands

const RAG_DOC: &str = "---\ntitle: Retrieval-augmented generation\nurl: \"http://127.0.0.1:9/example.com/rag/index.html\"\n---\n# How RAG works\n\nRetrieval-augmented generation retrieves relevant passages from a document store and gives them to the language model as context, so answers are grounded in sources.\n";

/// A workspace on database `name` with four small documents, indexed.
fn indexed(pg: &Cluster, name: &str, config: &str) -> PgWorkspace {
    let p = PgWorkspace::new(&pg.database(name), config);
    write_topic_docs(&p.ws);
    p.ws.write_doc("web/rag.md", RAG_DOC);
    let out = p.ok(&["index"]);
    assert!(out.contains("4 added"), "{out}");
    p
}

/// `ragmap mcp` answering one `search` call over stdio.
fn mcp_search(p: &PgWorkspace, query: &str) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ragmap"))
        .arg("-C")
        .arg(p.ws.path())
        .arg("mcp")
        .env("RAGMAP_INDEX_URL", &p.url)
        .env(
            "RAGMAP_LLM_BASE_URL",
            format!("http://127.0.0.1:{}/v1", closed_port()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = |message: Value| writeln!(stdin, "{message}").unwrap();
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}),
    );
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "search", "arguments": {"query": query, "k": 2}}}));
    let answer = lines
        .by_ref()
        .map_while(Result::ok)
        .map(|l| serde_json::from_str::<Value>(&l).unwrap_or(Value::Null))
        .find(|m| m["id"] == 2)
        .expect("an answer to tools/call");
    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    answer
}

#[test]
fn every_command_works_on_postgres_and_nothing_is_written_to_the_index_folder() {
    if !model_available() {
        return;
    }
    let Some(pg) = pg_cluster() else { return };
    let p = indexed(&pg, "commands", "[llm]\nrewrite = false\n");
    let status = p.status();
    assert_eq!(status["documents"], 4);
    assert_eq!(status["location"], ragmap::index::postgres::redact(&p.url));
    assert_eq!(status["changed_since"].as_array().map(Vec::len), Some(0));
    for mode in ["hybrid", "vector", "lexical"] {
        assert_eq!(
            p.top_path("How does LoRA cut the memory of fine-tuning?", mode),
            "en/finetune.md"
        );
    }
    assert_eq!(
        p.top_path("红烧肉怎么做？需要冰糖吗？", "hybrid"),
        "zh/cooking.md"
    );
    assert!(p
        .ok(&["ask", "What does LoRA freeze?", "--dry-run"])
        .contains("low-rank adapter"));
    // No chat model: the passages are printed, exit 5, as with the embedded index.
    let closed = format!("http://127.0.0.1:{}/v1", closed_port());
    let out = p.ws.run_env(
        &["ask", "What does LoRA freeze?", "--base-url", &closed],
        &[("RAGMAP_INDEX_URL", &p.url)],
    );
    assert_eq!(out.status.code(), Some(5), "{}", out_of(&out));
    assert!(stdout(&out).contains("finetune.md"), "{}", out_of(&out));
    let out = p.ws.run_with_input(
        &["chat", "--base-url", &closed],
        &[("RAGMAP_INDEX_URL", &p.url)],
        "How often should tomatoes be watered?\n/sources\n/exit\n",
    );
    assert!(out.status.success(), "{}", out_of(&out));
    assert!(stdout(&out).contains("garden.md"), "{}", out_of(&out));
    let questions = p.ws.path().join("q.jsonl");
    std::fs::write(
        &questions,
        "{\"id\":\"q1\",\"question\":\"How does RAG ground answers in sources?\",\"gold\":[\"example.com/rag/index.html\"]}\n{\"id\":\"q2\",\"question\":\"红烧肉怎么做？\",\"gold\":[\"zh/cooking.md\"]}\n",
    )
    .unwrap();
    let report: Value =
        serde_json::from_str(&p.ok(&["eval", questions.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(
        report["variants"][0]["overall"]["recall_at_1"], 1.0,
        "{report}"
    );
    let config = p.ok(&["config"]);
    assert!(
        config.contains(&ragmap::index::postgres::redact(&p.url)),
        "{config}"
    );
    let found = mcp_search(&p, "tomato seedlings");
    assert_eq!(
        found["result"]["structuredContent"]["results"][0]["path"], "en/garden.md",
        "{found}"
    );
    if let Ok(llm) = std::env::var("RAGMAP_TEST_LLM_URL") {
        p.ok(&["ask", "What does LoRA freeze?", "--base-url", &llm]);
    }
    serve_searches_and_stops_cleanly(&p);
    assert!(
        !p.ws.path().join("index").exists(),
        "an index folder was written"
    );
}

/// `ragmap serve` on the database: /health names the backend and
/// generation, /api/search and the command line (through the server)
/// answer, SIGTERM stops it cleanly (its connections closed off the async threads).
fn serve_searches_and_stops_cleanly(p: &PgWorkspace) {
    let served = Served::start(&p.ws, &[], &[("RAGMAP_INDEX_URL", &p.url)]);
    let health = get_json(&served.at("/health"));
    assert_eq!(health["backend"], "postgres", "{health}");
    assert_eq!(health["documents"], 4);
    let (status, found) = post_json(
        &served.at("/api/search"),
        &json!({"query": "LoRA adapters", "k": 1}),
    );
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["results"][0]["path"], "en/finetune.md");
    assert_eq!(found["generation"], health["generation"]);
    // The command line finds the server of this database and searches there.
    let hits: Value =
        serde_json::from_str(&p.ok(&["search", "LoRA adapters", "--json", "-k", "1", "-v"]))
            .unwrap();
    assert_eq!(hits[0]["path"], "en/finetune.md");
    let stderr = served.stderr();
    assert_eq!(
        served.terminate(Duration::from_secs(20)),
        Some(0),
        "{stderr}"
    );
}

#[test]
fn incremental_runs_skip_unchanged_documents_and_forget_deleted_ones() {
    if !model_available() {
        return;
    }
    let Some(pg) = pg_cluster() else { return };
    let p = indexed(&pg, "incremental", "");
    let generation = |p: &PgWorkspace| {
        pg.psql(
            p.url.rsplit('/').next().unwrap(),
            "SELECT generation FROM ragmap.state",
        )
    };
    let before = generation(&p);
    let again: Value = serde_json::from_str(&p.ok(&["index", "--json"])).unwrap();
    assert_eq!(
        (
            again["unchanged"].as_i64(),
            again["chunks_embedded"].as_i64()
        ),
        (Some(4), Some(0))
    );
    assert_eq!(
        generation(&p),
        before,
        "a run with nothing to do commits nothing"
    );

    p.ws.write_doc(
        "en/garden.md",
        "# Growing peppers\n\nPeppers want warm soil and little water.\n",
    );
    std::fs::remove_file(p.ws.corpus().join("zh/cooking.md")).unwrap();
    p.ws.write_doc(
        "en/vllm.md",
        "# vLLM\n\nvLLM serves models with PagedAttention, which pages the KV cache.\n",
    );
    let report: Value = serde_json::from_str(&p.ok(&["index", "--json"])).unwrap();
    assert_eq!(
        (
            report["added"].as_i64(),
            report["changed"].as_i64(),
            report["deleted"].as_i64(),
            report["unchanged"].as_i64()
        ),
        (Some(1), Some(1), Some(1), Some(2)),
        "{report}"
    );
    assert_eq!(p.status()["documents"], 4);
    assert_eq!(
        p.top_path("PagedAttention KV cache", "lexical"),
        "en/vllm.md"
    );
    assert_eq!(p.top_path("warm soil peppers", "lexical"), "en/garden.md");
    assert_eq!(
        p.top_path("五花肉 冰糖", "lexical"),
        "",
        "the deleted document is gone"
    );
    // The stored frequencies and lengths are what the postings say.
    let db = p.url.rsplit('/').next().unwrap();
    let wrong = pg.psql(db, "SELECT count(*) FROM (SELECT term, count(*)::int df FROM ragmap.postings GROUP BY term) a FULL JOIN ragmap.terms t USING (term) WHERE a.df IS DISTINCT FROM t.df");
    assert_eq!(wrong, "0");
    let totals = pg.psql(db, "SELECT (SELECT sum(dl) FROM ragmap.chunks) = chunk_tokens AND (SELECT count(*) FROM ragmap.chunks) = chunks FROM ragmap.state");
    assert_eq!(totals, "t");
}

// ---------------------------------------------------------------- writers

fn database_of(p: &PgWorkspace) -> String {
    p.url.rsplit('/').next().unwrap().to_string()
}

#[test]
fn a_second_indexer_waits_for_the_first_and_then_finds_nothing_to_do() {
    if !model_available() {
        return;
    }
    let Some(pg) = pg_cluster() else { return };
    let p = indexed(&pg, "concurrent", "");
    let db = database_of(&p);
    // Enough notes that the first run still holds the lock (embedding them
    // takes seconds) when the second has started (a fraction of one).
    let notes = 120;
    for i in 0..notes {
        p.ws.write_doc(
            &format!("more/{i}.md"),
            &format!("# Note {i}\n\nRetrieval note number {i} about chunking and embeddings.\n"),
        );
    }
    let generation = pg.psql(&db, "SELECT generation FROM ragmap.state");
    let spawn = || {
        let mut cmd = p.ws.command(&["index"]);
        cmd.env("RAGMAP_INDEX_URL", &p.url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    let first = spawn();
    let held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted";
    assert!(
        pg.wait_for(&db, held, "1"),
        "the first run never took the index lock"
    );
    let second = spawn();
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    assert!(first.status.success(), "{}", out_of(&first));
    assert!(second.status.success(), "{}", out_of(&second));
    assert!(
        stderr(&second).contains("waiting for another `ragmap index`"),
        "{}",
        out_of(&second)
    );
    let added = format!("{notes} added");
    assert!(stdout(&first).contains(&added), "{}", out_of(&first));
    let unchanged = format!("0 added, 0 changed, 0 deleted, {} unchanged", notes + 4);
    assert!(stdout(&second).contains(&unchanged), "{}", out_of(&second));
    let after: i64 = pg
        .psql(&db, "SELECT generation FROM ragmap.state")
        .parse()
        .unwrap();
    assert_eq!(after, generation.parse::<i64>().unwrap() + 1);
    assert_eq!(p.status()["documents"], notes + 4);
}

fn versioned_doc(i: usize, version: usize) -> String {
    format!(
        "# Topic {i} v{version}\n\nDocument {i} (v{version}) explains retrieval step {i}: chunking, embedding and indexing.\n\n## Details\n\n{}\n",
        "检索增强生成把文档切块、向量化并建立索引。 Retrieval augmented generation splits documents. ".repeat(8)
    )
}

#[test]
fn an_index_run_killed_anywhere_leaves_the_previous_generation_whole() {
    if !model_available() {
        return;
    }
    let Some(pg) = pg_cluster() else { return };
    let p = PgWorkspace::new(
        &pg.database("killed"),
        "[chunk]\nmax_tokens = 96\noverlap_tokens = 8\n",
    );
    let db = database_of(&p);
    for i in 0..12 {
        p.ws.write_doc(&format!("d{i}.md"), &versioned_doc(i, 1));
    }
    p.ok(&["index"]);
    let mut version = 2;
    let mut change = |p: &PgWorkspace| {
        for i in (0..12).step_by(2) {
            p.ws.write_doc(&format!("d{i}.md"), &versioned_doc(i, version));
        }
        p.ws.write_doc("extra.md", &versioned_doc(99, version));
        version += 1;
    };
    change(&p);
    let started = Instant::now();
    p.ok(&["index"]);
    let full = started.elapsed();
    for point in 0..6u32 {
        change(&p);
        let before = pg.psql(&db, "SELECT generation FROM ragmap.state");
        let mut cmd = p.ws.command(&["index"]);
        cmd.env("RAGMAP_INDEX_URL", &p.url);
        kill_after(&mut cmd, full.mul_f64(0.15 + 0.17 * f64::from(point)));
        let after = pg.psql(&db, "SELECT generation FROM ragmap.state");
        let documents = p.status()["documents"].as_i64().unwrap();
        assert_eq!(documents, 13, "point {point}");
        assert!(
            after == before || after.parse::<i64>().unwrap() == before.parse::<i64>().unwrap() + 1
        );
        assert!(!p.top_path("retrieval step chunking", "lexical").is_empty());
        assert_eq!(
            pg.psql(
                &db,
                "SELECT count(*) FROM pg_namespace WHERE nspname = 'ragmap_next'"
            ),
            "0"
        );
        p.ok(&["index"]);
        let status = p.status();
        assert_eq!(
            status["changed_since"].as_array().map(Vec::len),
            Some(0),
            "point {point}: {status}"
        );
    }
    // A killed full build (--rebuild) leaves the old generation too.
    let before = pg.psql(&db, "SELECT generation FROM ragmap.state");
    let mut cmd = p.ws.command(&["index", "--rebuild"]);
    cmd.env("RAGMAP_INDEX_URL", &p.url);
    kill_after(&mut cmd, full.mul_f64(0.8));
    let after = pg.psql(&db, "SELECT generation FROM ragmap.state");
    assert!(after == before || after.parse::<i64>().unwrap() == before.parse::<i64>().unwrap() + 1);
    assert_eq!(p.status()["documents"], 13);
}

// ---------------------------------------------------------------- servers

/// Polls each server's /health until it reports `generation`; the time it took.
fn until_generation(servers: &[&Served], generation: &str) -> Duration {
    let started = Instant::now();
    for served in servers {
        loop {
            let health = get_json(&served.at("/health"));
            if health["generation"] == generation {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "stuck at {health}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    started.elapsed()
}

/// One answer of the mixed load: which server, its status (0: no answer)
/// and the generation it reported, and when it arrived.
struct Answer {
    server: usize,
    what: &'static str,
    status: u16,
    generation: Option<i64>,
    at: Instant,
}

/// Request `n` of the mixed load to `url`: searches in each mode, /health
/// and /v1/embeddings, in turn.
async fn one_request(client: &reqwest::Client, url: &str, server: usize, n: usize) -> Answer {
    let search = |query: &str, mode: &str| {
        let body = json!({"query": query, "k": 3, "mode": mode});
        client.post(format!("{url}/api/search")).json(&body)
    };
    let (what, request) = match n % 5 {
        0 => (
            "hybrid",
            search("How does LoRA cut the memory of fine-tuning?", "hybrid"),
        ),
        1 => (
            "lexical",
            search("PagedAttention KV cache tomato", "lexical"),
        ),
        2 => ("vector", search("红烧肉怎么做？", "vector")),
        3 => ("health", client.get(format!("{url}/health"))),
        _ => (
            "embeddings",
            client
                .post(format!("{url}/v1/embeddings"))
                .json(&json!({"input": ["LoRA adapters", "检索增强生成"]})),
        ),
    };
    let (status, generation) = match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let generation = body["generation"].as_str().and_then(|g| g.parse().ok());
            (status, generation)
        }
        Err(_) => (0, None),
    };
    Answer {
        server,
        what,
        status,
        generation,
        at: Instant::now(),
    }
}

/// `total` requests from `clients` concurrent clients, spread over `urls`;
/// `issued` counts the requests sent so far.
fn mixed_load(
    urls: Vec<String>,
    total: usize,
    clients: usize,
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<Answer> {
    use std::sync::atomic::Ordering::SeqCst;
    block_on(async move {
        let client = http();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (client, urls, issued) = (client.clone(), urls.clone(), issued.clone());
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    loop {
                        let n = issued.fetch_add(1, SeqCst);
                        if n >= total {
                            return answers;
                        }
                        let server = (n + c) % urls.len();
                        answers.push(one_request(&client, &urls[server], server, n).await);
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    })
}

#[test]
fn two_servers_answer_1000_mixed_requests_while_an_indexer_commits_and_follow_within_a_second() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    if !model_available() {
        return;
    }
    let Some(pg) = pg_cluster() else { return };
    let p = indexed(&pg, "servers", "[server]\nworkers = 1\n");
    let db = database_of(&p);
    let env = [("RAGMAP_INDEX_URL", p.url.as_str())];
    let (a, b) = (
        Served::start(&p.ws, &[], &env),
        Served::start(&p.ws, &[], &env),
    );
    let before = get_json(&a.at("/health"))["generation"].clone();
    assert_eq!(get_json(&b.at("/health"))["generation"], before);

    let issued = std::sync::Arc::new(AtomicUsize::new(0));
    let load_started = Instant::now();
    let load = {
        let (urls, issued) = (vec![a.url.clone(), b.url.clone()], issued.clone());
        std::thread::spawn(move || mixed_load(urls, 1000, 8, issued))
    };
    // Two index runs commit while the clients keep asking.
    let mut commits = Vec::new();
    for (at, doc, body) in [
        (
            100,
            "en/vllm.md",
            "# vLLM\n\nvLLM serves models with PagedAttention, which pages the KV cache.\n",
        ),
        (
            400,
            "en/garden.md",
            "# Growing peppers\n\nPeppers want warm soil and little water.\n",
        ),
    ] {
        while issued.load(SeqCst) < at {
            std::thread::sleep(Duration::from_millis(5));
        }
        p.ws.write_doc(doc, body);
        p.ok(&["index"]);
        let committed = Instant::now();
        let generation = pg.psql(&db, "SELECT generation FROM ragmap.state");
        let took = until_generation(&[&a, &b], &generation);
        assert!(took < Duration::from_secs(1), "the servers took {took:?}");
        eprintln!(
            "generation {generation}: both servers on it {took:?} after the indexer exited ({} requests sent)",
            issued.load(SeqCst)
        );
        commits.push((
            committed,
            generation.parse::<i64>().unwrap(),
            issued.load(SeqCst),
        ));
    }
    let answers = load.join().unwrap();
    eprintln!("{} answers in {:?}", answers.len(), load_started.elapsed());
    let failed: Vec<_> = answers
        .iter()
        .filter(|r| r.status != 200)
        .map(|r| format!("{} on server {}: {}", r.what, r.server, r.status))
        .collect();
    assert_eq!(answers.len(), 1000);
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert!(
        commits.iter().all(|(_, _, sent)| *sent < 1000),
        "the load ended before a commit: {:?}",
        commits.iter().map(|c| c.2).collect::<Vec<_>>()
    );
    // Every answer a second after a commit comes from that generation or a later one.
    for (committed, generation, _) in &commits {
        let late = answers
            .iter()
            .filter(|r| r.at > *committed + Duration::from_secs(1))
            .filter(|r| r.generation.is_some_and(|g| g < *generation))
            .count();
        assert_eq!(late, 0, "answers from before generation {generation}");
    }
    for served in [&a, &b] {
        let (status, found) = post_json(
            &served.at("/api/search"),
            &json!({"query": "PagedAttention", "k": 1, "mode": "lexical"}),
        );
        assert_eq!(status, 200);
        assert_eq!(found["results"][0]["path"], "en/vllm.md", "{found}");
    }
    assert_eq!(a.terminate(Duration::from_secs(20)), Some(0));
    assert_eq!(b.terminate(Duration::from_secs(20)), Some(0));
}

#[test]
fn a_server_reading_a_replica_follows_the_primary_and_reports_its_lag() {
    if !model_available() {
        return;
    }
    let Some(pg) = pg_cluster() else { return };
    let p = indexed(&pg, "replicated", "[server]\nworkers = 1\n");
    let db = database_of(&p);
    let replica = pg.replica(&db);
    let env = [
        ("RAGMAP_INDEX_URL", p.url.as_str()),
        ("RAGMAP_INDEX_READ_URL", replica.as_str()),
    ];
    let served = Served::start(&p.ws, &[], &env);
    let health = get_json(&served.at("/health"));
    assert_eq!(health["backend"], "postgres");
    assert!(health["replica_lag_seconds"].as_f64().is_some(), "{health}");
    let status = p.ws.run_env(&["status"], &env);
    assert!(
        stdout(&status).contains("searches read"),
        "{}",
        out_of(&status)
    );
    // Writes go to the primary even with a replica configured.
    p.ws.write_doc(
        "en/vllm.md",
        "# vLLM\n\nvLLM serves models with PagedAttention, which pages the KV cache.\n",
    );
    let out = p.ws.run_env(&["index"], &env);
    assert!(out.status.success(), "{}", out_of(&out));
    let generation = pg.psql(&db, "SELECT generation FROM ragmap.state");
    let took = until_generation(&[&served], &generation);
    assert!(
        took < Duration::from_secs(1),
        "the replica's server took {took:?}"
    );
    let (_, found) = post_json(
        &served.at("/api/search"),
        &json!({"query": "PagedAttention", "k": 1, "mode": "lexical"}),
    );
    assert_eq!(found["results"][0]["path"], "en/vllm.md", "{found}");
    assert_eq!(served.terminate(Duration::from_secs(20)), Some(0));
}

// ---------------------------------------------------------------- models

/// An OpenAI-compatible embeddings server answering with vectors of the
/// length `dimensions` holds at the time.
fn embedding_server(dimensions: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> ScriptedServer {
    ScriptedServer::start(move |request: &Request| {
        embeddings_reply(
            request,
            dimensions.load(std::sync::atomic::Ordering::SeqCst),
        )
    })
}

#[test]
fn a_remote_models_dimension_sizes_the_vector_column_and_another_is_refused() {
    if !tokenizer_available() {
        return;
    }
    let Some(pg) = pg_cluster() else { return };
    let dimensions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(8));
    let server = embedding_server(dimensions.clone());
    let config = format!(
        "[embed]\nbase_url = \"{}\"\nmodel = \"fake-embedder\"\nrequest_size = 4\nmax_retries = 1\nretry_base_delay_ms = 10\ntimeout_secs = 5.0\n",
        server.url("/v1")
    );
    let p = PgWorkspace::new(&pg.database("remote"), &config);
    let db = database_of(&p);
    let tag = format!("{:?}{}", Instant::now(), std::process::id());
    for i in 0..3 {
        p.ws.write_doc(
            &format!("d{i}.md"),
            &format!("# Document {i}\n\nParagraph {i} of run {tag} about embeddings.\n"),
        );
    }
    p.ok(&["index"]);
    let column = "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'ragmap.embeddings'::regclass AND attname = 'embedding'";
    assert_eq!(pg.psql(&db, column), "vector(8)");
    let meta = |key: &str| {
        pg.psql(
            &db,
            &format!("SELECT value FROM ragmap.meta WHERE key = '{key}'"),
        )
    };
    assert_eq!(meta("model"), "fake-embedder");
    assert_eq!(meta("dimensions"), "8");
    assert_eq!(meta("model_files"), "", "a server's weights are not hashed");
    let status = p.status();
    assert_eq!(status["dimensions"], 8, "{status}");
    let hits: Value = serde_json::from_str(&p.ok(&[
        "search",
        "embeddings",
        "--json",
        "--mode",
        "vector",
        "--no-server",
    ]))
    .unwrap();
    assert_eq!(hits.as_array().map(Vec::len), Some(3), "{hits}");

    // The server now gives 16 dimensions: refused before anything is written.
    dimensions.store(16, std::sync::atomic::Ordering::SeqCst);
    let generation = pg.psql(&db, "SELECT generation FROM ragmap.state");
    p.ws.write_doc("more.md", "# More\n\nAnother document.\n");
    let out = p.run(&["index"]);
    assert_clean_failure(&out, 4, "returns 16-dimension vectors");
    assert!(
        stderr(&out).contains("holds 8-dimension ones"),
        "{}",
        out_of(&out)
    );
    assert_eq!(
        pg.psql(&db, "SELECT generation FROM ragmap.state"),
        generation
    );
    let out = p.run(&["search", "--no-server", "document"]);
    assert_clean_failure(&out, 4, "\"fake-embedder\" (16 dimensions");
    // The local model is another model: refused, both named.
    if model_available() {
        let local = PgWorkspace::new(&p.url, "");
        local.ws.write_doc("d0.md", "# Document\n\nText.\n");
        let out = local.run(&["index"]);
        assert_clean_failure(&out, 4, "\"fake-embedder\" (8 dimensions)");
        assert!(
            stderr(&out).contains("multilingual-e5-small"),
            "{}",
            out_of(&out)
        );
    }
    // --rebuild embeds everything again into a column of the new length.
    p.ok(&["index", "--rebuild"]);
    assert_eq!(pg.psql(&db, column), "vector(16)");
    assert_eq!(meta("dimensions"), "16");
    assert_eq!(p.status()["documents"], 4);
}

// ---------------------------------------------------------------- bad input

#[test]
fn each_bad_database_is_one_line_naming_the_fix_with_its_exit_code() {
    if !model_available() {
        return;
    }
    let Some(pg) = pg_cluster() else { return };
    let ws = Workspace::new("[index]\nconnect_timeout_secs = 2.0\n");
    write_topic_docs(&ws);
    let run = |url: &str, args: &[&str], extra: &[(&str, &str)]| {
        let mut env = vec![("RAGMAP_INDEX_URL", url)];
        env.extend_from_slice(extra);
        let out = ws.run_env(args, &env);
        assert!(
            !out_of(&out).contains(&password(&pg.url)),
            "{}",
            out_of(&out)
        );
        out
    };
    let lexical = ["search", "tomato", "--mode", "lexical"];
    let closed = format!("postgres://ragmap:pw@127.0.0.1:{}/ragmap", closed_port());
    assert_clean_failure(
        &run(&closed, &lexical, &[]),
        9,
        "cannot reach the index database",
    );
    assert_clean_failure(
        &run(&closed, &["index"], &[]),
        9,
        "cannot reach the index database",
    );
    let wrong = pg.url.replace(&password(&pg.url), "not-the-password");
    let out = run(&wrong, &["index"], &[]);
    assert_clean_failure(&out, 9, "password authentication failed");
    assert!(!out_of(&out).contains("not-the-password"));
    let bare = pg.database_without_vector("novector");
    assert_clean_failure(&run(&bare, &["index"], &[]), 3, "CREATE EXTENSION vector");
    assert_clean_failure(
        &run("mysql://u@h/db", &lexical, &[]),
        1,
        "not a PostgreSQL URL",
    );

    // A server that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("postgres://u:pw@{}/db", silent.local_addr().unwrap());
    let started = Instant::now();
    assert_clean_failure(
        &run(&silent_url, &lexical, &[]),
        9,
        "did not answer within 2 s",
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    let url = pg.database("bad");
    assert!(run(&url, &["index"], &[]).status.success());
    // A statement stuck behind a lock is cancelled by statement_timeout.
    let mut holder = pg.psql_background(
        "bad",
        "BEGIN; LOCK TABLE ragmap.state IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT",
    );
    let locked = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'state' AND l.mode = 'AccessExclusiveLock' AND l.granted";
    assert!(pg.wait_for("bad", locked, "1"));
    let timeout = [("RAGMAP_INDEX_STATEMENT_TIMEOUT_SECS", "1")];
    assert_clean_failure(&run(&url, &lexical, &timeout), 9, "statement_timeout_secs");
    let _ = holder.kill();
    let _ = holder.wait();

    pg.psql("bad", "UPDATE ragmap.meta SET value = 'other-model:0' WHERE key = 'model'; UPDATE ragmap.meta SET value = 'elsewhere' WHERE key = 'model_stamp'");
    let out = run(&url, &["index"], &[]);
    assert_clean_failure(&out, 4, "other-model:0");
    assert!(
        stderr(&out).contains("multilingual-e5-small") && stderr(&out).contains("--rebuild"),
        "{}",
        out_of(&out)
    );
    assert!(run(&url, &["index", "--rebuild"], &[]).status.success());

    pg.psql("bad", "UPDATE ragmap.state SET schema_version = 99");
    assert_clean_failure(&run(&url, &lexical, &[]), 4, "newer than this ragmap");
    assert_clean_failure(&run(&url, &["index"], &[]), 4, "upgrade ragmap");
}
