//! `ragmap serve` end to end: the real binary on a scratch workspace, its
//! upstream model scripted, talked to over HTTP as chat apps and the command
//! line talk to it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Pieces open with their space, as a tokenizer's do (ragmap holds a
/// trailing space back until it knows no dropped citation follows it).
const ANSWER: [&str; 2] = ["LoRA trains small", " low-rank adapters [1]."];

/// A workspace with four short documents, indexed, answering through `upstream`.
fn indexed(upstream: &str, extra_config: &str) -> Workspace {
    // One worker unless the test asks for more: each loads a model session.
    let workers = if extra_config.contains("workers") {
        ""
    } else {
        "workers = 1\n"
    };
    let ws = Workspace::new(&format!(
        "[llm]\nbase_url = \"{upstream}\"\nmodel = \"scripted\"\nrewrite = false\nconnect_timeout_secs = 2.0\n\n[server]\n{workers}{extra_config}"
    ));
    write_topic_docs(&ws);
    ws.write_doc(
        "zh/rag.md",
        "# 检索增强生成\n\nRAG 先从知识库检索相关段落，再把段落和问题一起交给大模型生成答案。\n",
    );
    ws.build_index();
    ws
}

/// An upstream model answering every chat with `pieces`, `pause_ms` apart.
fn model(pieces: &'static [&'static str], pause_ms: u64) -> ScriptedServer {
    ScriptedServer::start(move |req| {
        if !req.path.ends_with("/chat/completions") {
            return Reply::json(404, r#"{"error":"no"}"#);
        }
        let mut reply = sse_reply();
        for p in pieces {
            reply = reply.body(openai_delta(p)).sleep(pause_ms);
        }
        reply.body(OPENAI_STOP).body(OPENAI_DONE)
    })
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn chat_body(question: &str, stream: bool) -> Value {
    json!({"model": "ragmap", "stream": stream, "messages": [{"role": "user", "content": question}]})
}

/// The `data:` payloads of an event stream, in order.
fn events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(str::to_string)
        .collect()
}

async fn get_json(url: &str) -> Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

async fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = http().post(url).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_stream_and_whole_with_sources_like_ask() {
    if !model_available() {
        return;
    }
    let upstream = model(&ANSWER, 0);
    let ws = indexed(&upstream.url("/v1"), "");
    let served = Served::start(&ws, &[], &[]);

    let (status, whole) = post(
        &served.at("/v1/chat/completions"),
        &chat_body("How does LoRA fine-tune a model?", false),
    )
    .await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["content"], ANSWER.concat());
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    let sources = whole["sources"].as_array().unwrap();
    assert_eq!(sources[0]["n"], 1);
    assert_eq!(sources[0]["path"], "en/finetune.md");
    assert!(sources[0]["text"].as_str().unwrap().contains("low-rank"));
    assert_eq!(
        whole["ragmap"]["search"],
        "How does LoRA fine-tune a model?"
    );

    // The model got ask's prompt: the system rules, numbered sources, the question.
    let sent = upstream.requests().last().unwrap().json();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert!(messages[0]["content"]
        .as_str()
        .unwrap()
        .contains("ONLY the numbered sources"));
    let user = messages.last().unwrap()["content"].as_str().unwrap();
    assert!(user.contains("<source id=\"1\""), "{user}");
    assert!(user.contains("Question: How does LoRA fine-tune a model?"));

    let r = http()
        .post(served.at("/v1/chat/completions"))
        .json(&chat_body("How does LoRA fine-tune a model?", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = events(&r.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, ANSWER.concat());
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["sources"][0]["path"], "en/finetune.md");

    // Clients that show only text can ask for the sources in it.
    let mut body = chat_body("How does LoRA fine-tune a model?", false);
    body["ragmap"] = json!({"sources_footer": true});
    let (_, footed) = post(&served.at("/v1/chat/completions"), &body).await;
    let content = footed["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.starts_with(&ANSWER.concat()));
    assert!(
        content.contains("\n\nSources:\n[1] Fine-tuning with LoRA — "),
        "{content}"
    );
}

/// A line the looping model writes again and again.
const LOOP_LINE: &str = "LoRA trains small low-rank adapters beside the weights.\n";

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_that_loops_comes_back_as_what_was_kept_cut_for_length() {
    if !model_available() {
        return;
    }
    let upstream = model(&[LOOP_LINE; 20], 0);
    let ws = indexed(&upstream.url("/v1"), "");
    let served = Served::start(&ws, &[], &[]);
    let kept = LOOP_LINE.repeat(3);

    let (status, whole) = post(
        &served.at("/v1/chat/completions"),
        &chat_body("How does LoRA fine-tune a model?", false),
    )
    .await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["content"], kept);
    assert_eq!(whole["choices"][0]["finish_reason"], "length");
    let stopped = whole["ragmap"]["stopped"].as_str().unwrap();
    assert!(stopped.contains("kept repeating itself"), "{stopped}");
    assert!(stopped.contains("came 3 times"), "{stopped}");
    assert_eq!(whole["sources"][0]["path"], "en/finetune.md");

    let r = http()
        .post(served.at("/v1/chat/completions"))
        .json(&chat_body("How does LoRA fine-tune a model?", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = events(&r.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks.iter().all(|c| c.get("error").is_none()),
        "{chunks:?}"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, kept);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert!(last["ragmap"]["stopped"].as_str().is_some(), "{last}");
    assert_eq!(last["sources"][0]["path"], "en/finetune.md");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_failure_is_an_openai_error_with_its_status() {
    if !model_available() {
        return;
    }
    let upstream = ScriptedServer::start(|req| {
        match req.json()["messages"][1]["content"].as_str().unwrap_or("") {
            q if q.contains("breaks") => openai_error(500, "upstream exploded"),
            q if q.contains("stalls") => Reply::silent().sleep(20_000),
            _ => openai_stream(&["ok [1]"]),
        }
    });
    let ws = indexed(
        &upstream.url("/v1"),
        "max_body_bytes = 4000\nmax_question_chars = 200\n",
    );
    // The first-token timeout of [llm] bounds a stalled model.
    let config = std::fs::read_to_string(ws.path().join("config.toml")).unwrap();
    std::fs::write(
        ws.path().join("config.toml"),
        config.replace("[server]", "first_token_timeout_secs = 1.0\n\n[server]"),
    )
    .unwrap();
    let served = Served::start(&ws, &[], &[]);
    let chat = served.at("/v1/chat/completions");
    let check = |status: u16, body: &Value, want: u16, kind: &str| {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["error"]["type"], kind, "{body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    };

    let r = http()
        .post(&chat)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    check(
        status,
        &r.json().await.unwrap(),
        400,
        "invalid_request_error",
    );
    let (s, b) = post(&chat, &json!({"messages": []})).await;
    check(s, &b, 400, "invalid_request_error");
    let (s, b) = post(&chat, &chat_body(&"长".repeat(201), false)).await;
    check(s, &b, 400, "invalid_request_error");
    let (s, b) = post(&chat, &chat_body(&"x".repeat(5000), false)).await;
    check(s, &b, 413, "invalid_request_error");
    for stream in [false, true] {
        let (s, b) = post(&chat, &chat_body("this question breaks the model", stream)).await;
        check(s, &b, 502, "upstream_error");
        assert!(b["error"]["message"].as_str().unwrap().contains("exploded"));
        let started = Instant::now();
        let (s, b) = post(&chat, &chat_body("this question stalls the model", stream)).await;
        check(s, &b, 504, "upstream_error");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let (s, b) = post(&served.at("/v1/nothing"), &json!({})).await;
    check(s, &b, 404, "invalid_request_error");

    // No model at all.
    let ws2 = indexed(&format!("http://127.0.0.1:{}/v1", closed_port()), "");
    let served2 = Served::start(&ws2, &[], &[]);
    let (s, b) = post(
        &served2.at("/v1/chat/completions"),
        &chat_body("What is LoRA?", true),
    )
    .await;
    check(s, &b, 502, "upstream_error");
    assert!(!served.stderr().contains("panicked") && !served2.stderr().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_429_and_frees_when_requests_finish() {
    if !model_available() {
        return;
    }
    let upstream = model(&["slow ", "answer ", "[1]"], 700);
    let ws = indexed(&upstream.url("/v1"), "queue = 1\n");
    let served = Served::start(&ws, &[], &[]);
    let chat = served.at("/v1/chat/completions");
    let holding = {
        let chat = chat.clone();
        tokio::spawn(async move { post(&chat, &chat_body("What is LoRA?", false)).await })
    };
    // Wait until the first request reached the model.
    let deadline = Instant::now() + Duration::from_secs(20);
    while upstream.requests().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, b) = post(&chat, &chat_body("What is RAG?", false)).await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(b["error"]["code"], "queue_full");
    let (s, _) = post(&served.at("/api/search"), &json!({"query": "RAG"})).await;
    assert_eq!(s, 429);
    let (s, _) = holding.await.unwrap();
    assert_eq!(s, 200);
    let (s, b) = post(&served.at("/api/search"), &json!({"query": "RAG"})).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_cancels_the_model_request() {
    if !model_available() {
        return;
    }
    let pieces: &'static [&'static str] =
        &["a ", "b ", "c ", "d ", "e ", "f ", "g ", "h ", "i ", "j "];
    let upstream = model(pieces, 1000);
    let ws = indexed(&upstream.url("/v1"), "");
    let served = Served::start(&ws, &[], &[]);
    let mut r = http()
        .post(served.at("/v1/chat/completions"))
        .json(&chat_body("What is LoRA?", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("chat.completion.chunk"));
    let dropped = Instant::now();
    drop(r);
    // The model would stream for ten more seconds; its connection closes at once.
    assert!(upstream.wait_closed(1, Duration::from_secs(5)).await);
    assert!(dropped.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn models_embeddings_search_and_health() {
    if !model_available() {
        return;
    }
    let upstream = model(&ANSWER, 0);
    let ws = indexed(&upstream.url("/v1"), "");
    let served = Served::start(&ws, &[], &[]);

    let models: Value = get_json(&served.at("/v1/models")).await;
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "ragmap");

    let (s, e) = post(
        &served.at("/v1/embeddings"),
        &json!({"input": ["What is LoRA?", "什么是 RAG？"], "model": "x"}),
    )
    .await;
    assert_eq!(s, 200, "{e}");
    let vectors: Vec<Vec<f32>> = e["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| serde_json::from_value(d["embedding"].clone()).unwrap())
        .collect();
    assert_eq!(vectors.len(), 2);
    assert_eq!(vectors[0].len(), 384);
    // The same vector as the library's query embedding.
    let mut embedder = ragmap::embed::Embedder::load(&ws.config()).unwrap();
    let local = embedder.embed_query("What is LoRA?").unwrap();
    let diff = local
        .iter()
        .zip(&vectors[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-4, "{diff}");
    assert!(e["usage"]["prompt_tokens"].as_u64().unwrap() > 4);
    let (_, p) = post(
        &served.at("/v1/embeddings"),
        &json!({"input": "What is LoRA?", "input_type": "passage"}),
    )
    .await;
    let passage: Vec<f32> = serde_json::from_value(p["data"][0]["embedding"].clone()).unwrap();
    assert!(p["usage"]["prompt_tokens"].as_u64().unwrap() > 4, "{p}");
    // The vector `ragmap index` stores for that text.
    let indexed = embedder
        .embed_passages(&["What is LoRA?".to_string()], |_| {})
        .unwrap();
    let diff = indexed[0]
        .iter()
        .zip(&passage)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-4, "{diff}");
    assert_ne!(
        passage, vectors[0],
        "the passage prefix makes another vector"
    );
    let (s, _) = post(&served.at("/v1/embeddings"), &json!({"input": []})).await;
    assert_eq!(s, 400);

    // /api/search gives `search --json`'s items.
    let (s, found) = post(
        &served.at("/api/search"),
        &json!({"query": "LoRA low-rank adapters", "k": 2, "mode": "hybrid"}),
    )
    .await;
    assert_eq!(s, 200, "{found}");
    let results = found["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let cli = ws.run(&[
        "search",
        "LoRA low-rank adapters",
        "-k",
        "2",
        "--json",
        "--no-server",
    ]);
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(&cli, &found["results"]);
    let (s, _) = post(&served.at("/api/search"), &json!({"query": "x", "k": 0})).await;
    assert_eq!(s, 400);

    let health: Value = get_json(&served.at("/health")).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["documents"], 4);
    assert!(health["chunks"].as_u64().unwrap() >= 4);
    assert_eq!(health["generation"], found["generation"]);
}

#[test]
fn beyond_loopback_it_needs_a_key_and_every_request_shows_it() {
    if !model_available() {
        return;
    }
    let ws = indexed("http://127.0.0.1:9/v1", "");
    let refused = ws.run(&["serve", "--host", "0.0.0.0", "--port", "0"]);
    assert_clean_failure(&refused, 1, "RAGMAP_SERVER_KEY");

    let key = "k-7f3a9c-secret";
    let served = Served::start(&ws, &["--host", "0.0.0.0"], &[("RAGMAP_SERVER_KEY", key)]);
    block_on(async {
        let models = served.at("/v1/models");
        let status = |auth: Option<String>| {
            let models = models.clone();
            async move {
                let mut r = http().get(models);
                if let Some(a) = auth {
                    r = r.header("authorization", a);
                }
                r.send().await.unwrap().status().as_u16()
            }
        };
        assert_eq!(status(None).await, 401);
        assert_eq!(status(Some("Bearer wrong".into())).await, 401);
        assert_eq!(status(Some(format!("Bearer {key}"))).await, 200);
        let (s, b) = post(&served.at("/api/search"), &json!({"query": "LoRA"})).await;
        assert_eq!(s, 401);
        assert!(!b.to_string().contains(key));
        // The page and the health check stay open, and never carry the key.
        let page = http().get(served.at("/")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let policy = page.headers()["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert_eq!(page.headers()["x-content-type-options"], "nosniff");
        assert!(!page.text().await.unwrap().contains(key));
        let health = http().get(served.at("/health")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        assert!(!health.text().await.unwrap().contains(key));
    });
    assert!(!served.stderr().contains(key));
}

#[test]
fn the_command_line_uses_a_running_server_and_falls_back_without_one() {
    if !model_available() {
        return;
    }
    let upstream = model(&ANSWER, 0);
    let ws = indexed(&upstream.url("/v1"), "");
    let question = ["search", "LoRA low-rank adapters"];
    let local_text = ws.run(&[&question[..], &["--no-server"]].concat());
    let local_json = ws.run(&[&question[..], &["--no-server", "--json"]].concat());
    assert!(local_text.status.success());

    let served = Served::start(&ws, &[], &[]);
    let discovery = ws.path().join("index/server.json");
    let running: Value = serde_json::from_slice(&std::fs::read(&discovery).unwrap()).unwrap();
    assert_eq!(running["pid"], served.pid());
    assert_eq!(running["url"], served.url);

    // With the model made unloadable here, only the server can answer.
    let no_model = [("RAGMAP_MODEL_DIR", "/nonexistent/model")];
    let via_server = ws.run_env(&question, &no_model);
    assert_eq!(
        stdout(&via_server),
        stdout(&local_text),
        "{}",
        stderr(&via_server)
    );
    let via_server = ws.run_env(&[&question[..], &["--json"]].concat(), &no_model);
    assert_eq!(stdout(&via_server), stdout(&local_json));
    assert_eq!(
        ws.run_env(&[&question[..], &["--no-server"]].concat(), &no_model)
            .status
            .code(),
        Some(3)
    );

    // ask prints the same answer and sources either way.
    let ask = ["ask", "How does LoRA fine-tune a model?", "--no-rewrite"];
    let asked_there = ws.run_env(&ask, &no_model);
    let asked_here = ws.run(&[&ask[..], &["--no-server"]].concat());
    assert!(asked_there.status.success(), "{}", stderr(&asked_there));
    assert_eq!(stdout(&asked_there), stdout(&asked_here));
    assert!(stdout(&asked_here).contains("Sources:\n[1] Fine-tuning with LoRA"));

    // A graceful stop removes the file; a stale one is ignored.
    assert_eq!(served.terminate(Duration::from_secs(15)), Some(0));
    assert!(!discovery.exists());
    let stale = json!({"url": format!("http://127.0.0.1:{}", closed_port()), "pid": std::process::id(), "generation": "g", "instance": "old", "started_at": "then"});
    std::fs::write(&discovery, stale.to_string()).unwrap();
    let fallback = ws.run(&question);
    assert_eq!(stdout(&fallback), stdout(&local_text));
    // Something else answering at the address is not taken for the server.
    let impostor = ScriptedServer::always(Reply::json(200, r#"{"results": []}"#));
    let stale = json!({"url": impostor.url(""), "pid": std::process::id(), "generation": "g", "instance": "old", "started_at": "then"});
    std::fs::write(&discovery, stale.to_string()).unwrap();
    assert_eq!(stdout(&ws.run(&question)), stdout(&local_text));
}

#[test]
fn a_new_index_generation_replaces_the_old_one_under_load() {
    if !model_available() {
        return;
    }
    let ws = indexed("http://127.0.0.1:9/v1", "workers = 2\n");
    let served = Served::start(&ws, &[], &[]);
    let search = served.at("/api/search");
    let stop = Arc::new(AtomicBool::new(false));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    // Each reader's answers in order: (generation, paths found).
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (search, stop, failures) = (search.clone(), stop.clone(), failures.clone());
            std::thread::spawn(move || {
                let mut seen: Vec<(String, Vec<String>)> = Vec::new();
                block_on(async {
                    let query = json!({"query": "QLoRA 4-bit NF4 quantized adapters", "k": 3});
                    while !stop.load(Ordering::SeqCst) {
                        let (s, b) = post(&search, &query).await;
                        if s != 200 {
                            failures.lock().unwrap().push(format!("{s} {b}"));
                            continue;
                        }
                        let paths = b["results"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|r| r["path"].as_str().unwrap().to_string())
                            .collect();
                        seen.push((b["generation"].as_str().unwrap().to_string(), paths));
                    }
                });
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    ws.write_doc(
        "en/qlora.md",
        "# QLoRA\n\nQLoRA fine-tunes 4-bit NF4 quantized models through low-rank adapters, with double quantization and paged optimizers.\n",
    );
    let started = Instant::now();
    let indexed = ws.run(&["index"]);
    assert!(indexed.status.success(), "{}", stderr(&indexed));
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "index was not blocked"
    );
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let per_reader: Vec<Vec<(String, Vec<String>)>> =
        readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(
        failures.lock().unwrap().is_empty(),
        "{:?}",
        failures.lock().unwrap()
    );
    let mut generations: Vec<&String> = Vec::new();
    for (g, _) in per_reader.iter().flatten() {
        if !generations.contains(&g) {
            generations.push(g);
        }
    }
    assert_eq!(generations.len(), 2, "{generations:?}");
    let (old, new) = (generations[0], generations[1]);
    for seen in &per_reader {
        for (g, paths) in seen {
            let has_new_doc = paths.iter().any(|p| p == "en/qlora.md");
            if g == old {
                assert!(!has_new_doc, "the old generation showed the new document");
            } else {
                assert_eq!(g, new);
                assert_eq!(paths.first().map(String::as_str), Some("en/qlora.md"));
            }
        }
        // Each reader saw the old state, then only the new one.
        let first_new = seen.iter().position(|(g, _)| g == new).unwrap();
        assert!(seen[..first_new].iter().all(|(g, _)| g == old));
        assert!(seen[first_new..].iter().all(|(g, _)| g == new));
    }
    drop(served);
}

/// The venv python with the official `openai` client (scripts/test installs
/// it and exports `RAGMAP_TEST_PYTHON`).
fn openai_python() -> Option<String> {
    let python = std::env::var("RAGMAP_TEST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    let works = |p: &str| {
        std::process::Command::new(p)
            .args(["-c", "import openai"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    match python {
        Some(p) if works(&p) => Some(p),
        Some(p) => unavailable(&format!(
            "RAGMAP_TEST_PYTHON={p} cannot import openai (run scripts/test)"
        )),
        None => {
            unavailable("RAGMAP_TEST_PYTHON is not set (scripts/test installs the openai client)")
        }
    }
}

#[test]
fn the_official_openai_client_streams_answers_sources_embeddings_and_errors() {
    if !model_available() {
        return;
    }
    let Some(python) = openai_python() else {
        return;
    };
    let upstream = model(&ANSWER, 50);
    let key = "client-test-key";
    // Small enough that the refused body fits in the socket buffers: the
    // client reads the 413 instead of a reset.
    let ws = indexed(&upstream.url("/v1"), "max_body_bytes = 32768\n");
    let served = Served::start(&ws, &[], &[("RAGMAP_SERVER_KEY", key)]);
    let broken_ws = indexed(&format!("http://127.0.0.1:{}/v1", closed_port()), "");
    let broken = Served::start(&broken_ws, &[], &[("RAGMAP_SERVER_KEY", key)]);

    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_client.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args([served.url.as_str(), key, broken.url.as_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the openai client failed:\n{}\nserver stderr:\n{}",
        String::from_utf8_lossy(&out.stderr),
        served.stderr()
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(seen["models"], json!(["ragmap"]));
    assert_eq!(seen["whole"]["content"], ANSWER.concat());
    assert_eq!(seen["whole"]["finish_reason"], "stop");
    assert_eq!(seen["whole"]["sources"][0]["n"], 1);
    assert_eq!(seen["whole"]["sources"][0]["path"], "en/finetune.md");
    // Streamed in the model's pieces, sources on the last chunk.
    assert_eq!(seen["stream"]["pieces"], json!(ANSWER));
    assert_eq!(seen["stream"]["finish_reason"], "stop");
    assert_eq!(seen["stream"]["sources"][0]["path"], "en/finetune.md");
    assert_eq!(seen["embeddings"]["count"], 2);
    assert_eq!(seen["embeddings"]["dims"], json!([384]));
    assert_eq!(seen["embeddings"]["indices"], json!([0, 1]));

    let errors = &seen["errors"];
    for (case, status, class) in [
        ("no_messages", 400, "BadRequestError"),
        ("wrong_key", 401, "AuthenticationError"),
        ("too_large", 413, "APIStatusError"),
        ("upstream_down", 502, "InternalServerError"),
        ("upstream_down_streaming", 502, "InternalServerError"),
    ] {
        assert_eq!(errors[case]["status"], status, "{case}: {}", errors[case]);
        assert_eq!(errors[case]["type"], class, "{case}: {}", errors[case]);
        // The client parsed our error object: its message is there.
        assert!(
            errors[case]["body"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{case}: {}",
            errors[case]
        );
    }
    assert!(!served.stderr().contains(key), "the key leaked to the log");
}
