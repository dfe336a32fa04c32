//! The MCP server (`ragmap mcp` on stdio, `/mcp` on `ragmap serve`) with real
//! clients: the official Python SDK in both protocol eras, raw JSON-RPC on
//! stdio to check that stdout carries nothing else, the MCP Inspector's CLI
//! when Node 22 is installed; and Dify's external knowledge API.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const QUERY: &str = "LoRA low-rank adapters";

/// A workspace with four notes and one web page, indexed, answering with the
/// model at `llm` (the real llama.cpp server, or an address where none is).
fn indexed(llm: &str, server: &str) -> Workspace {
    let ws = Workspace::new(&format!(
        "[llm]\nbase_url = \"{llm}\"\nmodel = \"test\"\nrewrite = false\nconnect_timeout_secs = 2.0\nmax_answer_tokens = 48\n\n[server]\nworkers = 1\n{server}"
    ));
    write_topic_docs(&ws);
    ws.write_doc(
        "zh/rag.md",
        "# 检索增强生成\n\nRAG 先从知识库检索相关段落，再把段落和问题一起交给大模型生成答案。\n",
    );
    ws.write_doc(
        "web/qlora.md",
        "+++\ntitle = \"QLoRA explained\"\nurl = \"https://example.com/qlora\"\n+++\n# QLoRA\n\n## Quantized adapters\n\nQLoRA fine-tunes a 4-bit quantized model through LoRA low-rank adapters.\n",
    );
    ws.build_index();
    ws
}

/// The venv python with the official MCP SDK (scripts/test installs it and
/// exports `RAGMAP_TEST_MCP_PYTHON`).
fn mcp_python() -> Option<String> {
    let python = std::env::var("RAGMAP_TEST_MCP_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    let works = |p: &str| {
        Command::new(p)
            .args(["-c", "import mcp"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    match python {
        Some(p) if works(&p) => Some(p),
        Some(p) => unavailable(&format!(
            "RAGMAP_TEST_MCP_PYTHON={p} cannot import mcp (run scripts/test)"
        )),
        None => {
            unavailable("RAGMAP_TEST_MCP_PYTHON is not set (scripts/test installs the MCP SDK)")
        }
    }
}

/// Runs tests/python/mcp_client.py with `args`; what the client saw.
fn sdk_session(python: &str, args: Value) -> Value {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mcp_client.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(args.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the MCP client failed ({args}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What every session must have seen: the tools, annotated read-only, and
/// real results from search and fetch.
fn check_session(seen: &Value, era: &str, with_ask: bool) {
    let expected = if era == "legacy" {
        "2025-11-25"
    } else {
        "2026-07-28"
    };
    assert_eq!(seen["protocol_version"], expected, "{seen}");
    assert_eq!(tool_names(&seen["tools"]), tool_set(with_ask), "{era}");
    for tool in seen["tools"].as_array().unwrap() {
        assert_eq!(tool["annotations"]["readOnlyHint"], true, "{tool}");
        assert_eq!(tool["annotations"]["destructiveHint"], false, "{tool}");
        let description = tool["description"].as_str().unwrap();
        assert!(!description.is_ascii(), "no Chinese in: {description}");
        assert!(tool["output"].is_object(), "no output schema: {tool}");
    }
    let tools = seen["tools"].as_array().unwrap();
    let search = &tools.iter().find(|t| t["name"] == "search").unwrap()["input"];
    assert_eq!(search["required"], json!(["query"]));
    assert!(search["properties"]["mode"].to_string().contains("lexical"));
    assert_eq!(
        search["properties"]["k"]["type"], "integer",
        "one plain type: {search}"
    );

    let found = &seen["search"];
    assert_eq!(found["is_error"], false, "{found}");
    let results = found["structured"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    // The same JSON as text, for clients that read only text.
    let as_text: Value = serde_json::from_str(found["text"].as_str().unwrap()).unwrap();
    assert_eq!(as_text, found["structured"]);
    let paths: Vec<&str> = results
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert!(paths[..2].contains(&"en/finetune.md"), "{paths:?}");
    assert!(paths[..2].contains(&"web/qlora.md"), "{paths:?}");
    for r in results {
        for key in ["id", "title", "path", "heading", "snippet", "score"] {
            assert!(r.get(key).is_some(), "{key} missing: {r}");
        }
    }
    let web = results
        .iter()
        .find(|r| r["path"] == "web/qlora.md")
        .unwrap();
    let note = results
        .iter()
        .find(|r| r["path"] == "en/finetune.md")
        .unwrap();
    assert!(note.get("url").is_none(), "a note has no URL: {note}");
    assert_eq!(web["url"], "https://example.com/qlora");
    assert_eq!(web["title"], "QLoRA explained");
    let lexical = seen["search_lexical"]["structured"]["results"]
        .as_array()
        .unwrap();
    assert_eq!(lexical.len(), 2);

    let fetched = &seen["fetch"];
    assert_eq!(fetched["is_error"], false, "{fetched}");
    assert_eq!(fetched["structured"]["id"], results[0]["id"]);
    assert!(fetched["structured"]["text"]
        .as_str()
        .unwrap()
        .contains("adapter"));
    let unknown = &seen["fetch_unknown"];
    assert_eq!(unknown["is_error"], true, "{unknown}");
    assert!(unknown["text"]
        .as_str()
        .unwrap()
        .contains("no passage has id 999999999"));
    let empty = &seen["search_empty"];
    assert_eq!(empty["is_error"], true, "{empty}");
    assert!(empty["text"]
        .as_str()
        .unwrap()
        .contains("\"query\" is empty"));
}

/// The tool names, sorted (servers list them in any order).
fn tool_names(tools: &Value) -> Vec<String> {
    let mut names: Vec<String> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn tool_set(with_ask: bool) -> Vec<String> {
    let names: &[&str] = if with_ask {
        &["ask", "fetch", "search"]
    } else {
        &["fetch", "search"]
    };
    names.iter().map(|n| n.to_string()).collect()
}

/// `ask` answered by the real model: an answer and the passages it was given.
fn check_answer(seen: &Value) {
    let asked = &seen["ask"];
    assert_eq!(asked["is_error"], false, "{asked}");
    let answer = asked["structured"]["answer"].as_str().unwrap();
    assert!(!answer.trim().is_empty(), "{asked}");
    let sources = asked["structured"]["sources"].as_array().unwrap();
    assert!(!sources.is_empty(), "{asked}");
    assert_eq!(sources[0]["n"], 1);
    assert!(
        asked["text"].as_str().unwrap().contains("Sources:"),
        "{asked}"
    );
}

#[test]
fn the_python_sdk_over_stdio_in_both_eras_searches_fetches_and_asks() {
    if !model_available() {
        return;
    }
    let (Some(python), Some(llm)) = (mcp_python(), llm_url()) else {
        return;
    };
    let ws = indexed(&format!("{}/v1", llm.trim_end_matches("/v1")), "");
    for era in ["legacy", "auto"] {
        let seen = sdk_session(
            &python,
            json!({"transport": "stdio", "mode": era, "ragmap": env!("CARGO_BIN_EXE_ragmap"),
                   "workspace": ws.path(), "query": QUERY, "ask": "What does LoRA train?"}),
        );
        check_session(&seen, era, true);
        check_answer(&seen);
    }
}

#[test]
fn the_python_sdk_over_http_in_both_eras_with_the_servers_key() {
    if !model_available() {
        return;
    }
    let (Some(python), Some(llm)) = (mcp_python(), llm_url()) else {
        return;
    };
    let ws = indexed(&format!("{}/v1", llm.trim_end_matches("/v1")), "");
    let key = "mcp-test-key";
    let served = Served::start(&ws, &[], &[("RAGMAP_SERVER_KEY", key)]);
    for era in ["legacy", "auto"] {
        let seen = sdk_session(
            &python,
            json!({"transport": "http", "mode": era, "url": served.at("/mcp"), "key": key,
                   "query": QUERY, "ask": "What does LoRA train?"}),
        );
        check_session(&seen, era, true);
        check_answer(&seen);
    }
    assert!(!served.stderr().contains(key));
}

#[test]
fn without_a_model_ask_is_a_clear_tool_error_and_unconfigured_it_is_not_offered() {
    if !model_available() {
        return;
    }
    let Some(python) = mcp_python() else {
        return;
    };
    // A model is configured but nothing answers there.
    let down = format!("http://127.0.0.1:{}/v1", closed_port());
    let ws = indexed(&down, "");
    let served = Served::start(&ws, &[], &[]);
    let seen = sdk_session(
        &python,
        json!({"transport": "http", "mode": "auto", "url": served.at("/mcp"), "query": QUERY,
               "ask": "What does LoRA train?"}),
    );
    check_session(&seen, "auto", true);
    let asked = &seen["ask"];
    assert_eq!(asked["is_error"], true, "{asked}");
    let message = asked["text"].as_str().unwrap();
    assert!(message.contains("no chat model answered at"), "{message}");
    assert!(message.contains(&down), "{message}");

    // No model configured anywhere (and none on 127.0.0.1:8080 or Ollama's
    // port to find): only search and fetch.
    let bare = Workspace::new("[server]\nworkers = 1\n");
    write_topic_docs(&bare);
    bare.write_doc(
        "web/qlora.md",
        "+++\ntitle = \"QLoRA explained\"\nurl = \"https://example.com/qlora\"\n+++\n# QLoRA\n\nQLoRA fine-tunes a 4-bit quantized model through LoRA low-rank adapters.\n",
    );
    bare.build_index();
    let unused = format!("127.0.0.1:{}", closed_port());
    let env = [("OLLAMA_HOST", unused.as_str())];
    let probe = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:8080".parse().unwrap(),
        Duration::from_millis(300),
    );
    if probe.is_ok() {
        unavailable::<()>("something listens on 127.0.0.1:8080, which provider auto would use");
        return;
    }
    let served = Served::start(&bare, &[], &env);
    let seen = sdk_session(
        &python,
        json!({"transport": "http", "mode": "legacy", "url": served.at("/mcp"), "query": QUERY}),
    );
    assert_eq!(tool_names(&seen["tools"]), tool_set(false));
}

/// `ragmap mcp` with pipes: send one JSON-RPC message at a time and read the
/// answer, then close stdin; everything it wrote to stdout, line by line.
struct Stdio_ {
    child: std::process::Child,
    reader: BufReader<std::process::ChildStdout>,
    lines: Vec<String>,
}

impl Stdio_ {
    fn start(ws: &Workspace) -> Stdio_ {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ragmap"))
            .arg("-C")
            .arg(ws.path())
            .args(["mcp", "-v"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let reader = BufReader::new(child.stdout.take().unwrap());
        Stdio_ {
            child,
            reader,
            lines: Vec::new(),
        }
    }

    fn send(&mut self, message: Value) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends a request and reads lines until its response.
    fn request(&mut self, message: Value) -> Value {
        let id = message["id"].clone();
        self.send(message);
        loop {
            let mut line = String::new();
            assert!(
                self.reader.read_line(&mut line).unwrap() > 0,
                "stdout closed"
            );
            self.lines.push(line.clone());
            let parsed: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if parsed["id"] == id {
                return parsed;
            }
        }
    }

    /// Closes stdin and waits for the exit; (exit code, every stdout line, stderr).
    fn finish(mut self) -> (Option<i32>, Vec<String>, String) {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.reader, &mut rest).unwrap();
        self.lines.extend(rest.lines().map(|l| format!("{l}\n")));
        let out = self.child.wait_with_output().unwrap();
        (
            out.status.code(),
            self.lines,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    })
}

#[test]
fn stdout_of_ragmap_mcp_holds_only_protocol_messages_in_both_eras() {
    if !model_available() {
        return;
    }
    let ws = indexed(&format!("http://127.0.0.1:{}/v1", closed_port()), "");
    let search = |id: u64, meta: Option<Value>| {
        let mut params = json!({"name": "search", "arguments": {"query": QUERY, "k": 2}});
        if let Some(meta) = meta {
            params["_meta"] = meta;
        }
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
    };

    let mut legacy = Stdio_::start(&ws);
    let init = legacy.request(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}));
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    legacy.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let found = legacy.request(search(2, None));
    assert_eq!(found["result"]["isError"], false, "{found}");
    let (code, lines_legacy, err) = legacy.finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("ragmap mcp: tools search, fetch, ask"),
        "{err}"
    );

    let mut modern = Stdio_::start(&ws);
    let discovered = modern.request(
        json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover",
        "params": {"_meta": modern_meta()}}),
    );
    let versions = discovered["result"]["supportedVersions"].to_string();
    assert!(
        versions.contains("2026-07-28") && versions.contains("2025-11-25"),
        "{discovered}"
    );
    let found = modern.request(search(2, Some(modern_meta())));
    let results = &found["result"]["structuredContent"]["results"];
    assert_eq!(results.as_array().map(Vec::len), Some(2), "{found}");
    let (code, lines_modern, err) = modern.finish();
    assert_eq!(code, Some(0), "{err}");

    for line in lines_legacy.iter().chain(&lines_modern) {
        let message: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON-RPC message on stdout ({e}): {line:?}"));
        assert_eq!(message["jsonrpc"], "2.0", "{line}");
    }
}

#[test]
fn an_ask_whose_answer_loops_gives_what_was_kept_and_says_it_stopped() {
    if !model_available() {
        return;
    }
    let line = "LoRA trains small low-rank adapters beside the weights.\n";
    let model = ScriptedServer::start(move |req| {
        if !req.path.ends_with("/chat/completions") {
            return Reply::json(404, r#"{"error":"no"}"#);
        }
        openai_stream(&[line; 20])
    });
    let ws = indexed(&model.url("/v1"), "");
    let mut mcp = Stdio_::start(&ws);
    mcp.request(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}));
    mcp.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let asked = mcp.request(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "ask", "arguments": {"question": "What does LoRA train?"}}}));
    let result = &asked["result"];
    assert_eq!(result["isError"], false, "{asked}");
    let answer = result["structuredContent"]["answer"].as_str().unwrap();
    let (kept, note) = answer.rsplit_once("\n\n").unwrap();
    assert_eq!(kept, line.repeat(3).trim_end());
    assert!(!note.contains('\n'), "{note:?}");
    assert!(note.contains("stopped the answer"), "{note}");
    assert!(note.contains("kept repeating itself"), "{note}");
    let sources = result["structuredContent"]["sources"].as_array().unwrap();
    assert!(!sources.is_empty(), "{asked}");
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with(answer), "{text}");
    assert!(text.contains("Sources:"), "{text}");
    let (code, _, err) = mcp.finish();
    assert_eq!(code, Some(0), "{err}");
}

/// The MCP Inspector's CLI (npm `@modelcontextprotocol/inspector`, Node ≥ 22),
/// from the directory scripts/test installs it in (`RAGMAP_TEST_INSPECTOR`).
fn inspector() -> Option<(String, String)> {
    let dir = std::env::var("RAGMAP_TEST_INSPECTOR")
        .ok()
        .filter(|d| !d.is_empty());
    let Some(dir) = dir else {
        return unavailable(
            "RAGMAP_TEST_INSPECTOR is not set (scripts/test installs the MCP Inspector)",
        );
    };
    let node = format!("{dir}/node/bin/node");
    let cli = format!(
        "{dir}/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
    );
    if !std::path::Path::new(&node).exists() || !std::path::Path::new(&cli).exists() {
        return unavailable(&format!(
            "no Node or Inspector CLI under {dir} (run scripts/test)"
        ));
    }
    Some((node, cli))
}

#[test]
fn the_mcp_inspector_cli_takes_the_readmes_configs_over_stdio_and_http() {
    if !model_available() {
        return;
    }
    let Some((node, cli)) = inspector() else {
        return;
    };
    let ws = indexed(&format!("http://127.0.0.1:{}/v1", closed_port()), "");
    let key = "inspector-key";
    let served = Served::start(&ws, &[], &[("RAGMAP_SERVER_KEY", key)]);
    // The `mcpServers` JSON of the README (the stdio entry also passes this
    // environment's RAGMAP_* variables, which a client passes no further).
    let mut env: serde_json::Map<String, Value> = std::env::vars()
        .filter(|(k, _)| k.starts_with("RAGMAP_"))
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    // The Inspector runs with a scratch home: name the real asset cache.
    if !env.contains_key("RAGMAP_CACHE") {
        let cache = ragmap::config::default_cache_dir();
        env.insert("RAGMAP_CACHE".into(), json!(cache));
    }
    let config = json!({"mcpServers": {
        "ragmap": {"command": env!("CARGO_BIN_EXE_ragmap"), "args": ["-C", ws.path(), "mcp"], "env": env},
        "ragmap-http": {"type": "http", "url": served.at("/mcp"),
                        "headers": {"Authorization": format!("Bearer {key}")}},
    }});
    let scratch = tempfile::tempdir().unwrap();
    let config_path = scratch.path().join("mcp.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    for server in ["ragmap", "ragmap-http"] {
        let run = |extra: &[&str]| {
            // Its catalog and secrets stay in the scratch folder.
            let out = Command::new(&node)
                .arg(&cli)
                .arg("--cli")
                .arg("--config")
                .arg(&config_path)
                .args(["--server", server])
                .args(extra)
                .env("HOME", scratch.path())
                .env("MCP_INSPECTOR_SECRET_STORE", "memory")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "inspector {server} {extra:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        };
        let listed = run(&["--method", "tools/list"]);
        assert_eq!(tool_names(&listed["tools"]), tool_set(true), "{server}");
        let query = format!("query={QUERY}");
        let called = run(&[
            "--method",
            "tools/call",
            "--tool-name",
            "search",
            "--tool-arg",
            &query,
        ]);
        let results = called["structuredContent"]["results"].as_array().unwrap();
        assert!(!results.is_empty(), "{called}");
        assert_ne!(called["isError"], true, "{called}");
    }
}

async fn post(url: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[test]
fn mcp_over_http_checks_the_key_the_origin_and_the_host() {
    if !model_available() {
        return;
    }
    let ws = indexed(
        &format!("http://127.0.0.1:{}/v1", closed_port()),
        "allowed_hosts = [\"host.docker.internal\"]\ncors_origins = [\"http://localhost:3000\"]\n",
    );
    let key = "origin-test-key";
    let served = Served::start(&ws, &[], &[("RAGMAP_SERVER_KEY", key)]);
    let mcp = served.at("/mcp");
    let port = mcp
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/mcp")
        .to_string();
    let discover = json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": modern_meta()}}).to_string();
    let bearer = format!("Bearer {key}");
    let own_origin = format!("http://127.0.0.1:{port}");
    let docker_host = format!("host.docker.internal:{port}");
    block_on(async {
        let status = |headers: Vec<(&'static str, String)>| {
            let (mcp, discover) = (mcp.clone(), discover.clone());
            async move {
                let pairs: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                post(&mcp, &discover, &pairs).await
            }
        };
        assert_eq!(status(vec![]).await.0, 401);
        assert_eq!(
            status(vec![("authorization", "Bearer wrong".into())])
                .await
                .0,
            401
        );
        let (s, ok) = status(vec![
            ("authorization", bearer.clone()),
            ("mcp-protocol-version", "2026-07-28".into()),
            ("mcp-method", "server/discover".into()),
        ])
        .await;
        assert_eq!(s, 200, "{ok}");
        assert!(
            ok["result"]["supportedVersions"]
                .to_string()
                .contains("2026-07-28"),
            "{ok}"
        );
        for (origin, want) in [
            ("https://evil.example", 403),
            ("http://localhost:3000", 200),
            (own_origin.as_str(), 200),
            ("http://127.0.0.1:1", 403),
        ] {
            let (s, body) = status(vec![
                ("authorization", bearer.clone()),
                ("origin", origin.into()),
                ("mcp-protocol-version", "2026-07-28".into()),
                ("mcp-method", "server/discover".into()),
            ])
            .await;
            assert_eq!(s, want, "Origin {origin}: {body}");
        }
        for (host, want) in [(docker_host.as_str(), 200), ("attacker.example", 403)] {
            let (s, body) = status(vec![
                ("authorization", bearer.clone()),
                ("host", host.into()),
                ("mcp-protocol-version", "2026-07-28".into()),
                ("mcp-method", "server/discover".into()),
            ])
            .await;
            assert_eq!(s, want, "Host {host}: {body}");
        }
    });
}

#[test]
fn difys_external_knowledge_requests_get_records_and_difys_errors() {
    if !model_available() {
        return;
    }
    let ws = indexed(&format!("http://127.0.0.1:{}/v1", closed_port()), "");
    let key = "dify-test-key";
    let served = Served::start(&ws, &[], &[("RAGMAP_SERVER_KEY", key)]);
    let url = served.at("/retrieval");
    let bearer = format!("Bearer {key}");
    let body = |knowledge: &str, top_k: usize, threshold: f32, condition: Value| {
        let mut b = json!({"knowledge_id": knowledge, "query": QUERY,
            "retrieval_setting": {"top_k": top_k, "score_threshold": threshold}});
        if !condition.is_null() {
            b["metadata_condition"] = condition;
        }
        b.to_string()
    };
    block_on(async {
        let auth = [("authorization", bearer.as_str())];
        let (s, found) = post(&url, &body("ragmap", 3, 0.0, Value::Null), &auth).await;
        assert_eq!(s, 200, "{found}");
        let records = found["records"].as_array().unwrap();
        assert_eq!(records.len(), 3);
        let scores: Vec<f64> = records
            .iter()
            .map(|r| r["score"].as_f64().unwrap())
            .collect();
        assert_eq!(scores[0], 1.0);
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1])
                && scores.iter().all(|s| (0.0..=1.0).contains(s)),
            "{scores:?}"
        );
        for r in records {
            assert!(r["content"].as_str().is_some_and(|c| !c.is_empty()), "{r}");
            assert!(r["title"].is_string() && r["metadata"].is_object(), "{r}");
        }
        let web = records
            .iter()
            .find(|r| r["title"] == "QLoRA explained")
            .unwrap();
        assert_eq!(web["metadata"]["url"], "https://example.com/qlora");
        assert_eq!(web["metadata"]["path"], "web/qlora.md");

        // The threshold drops what scores below it; 1.0 keeps the best alone.
        let (_, best) = post(&url, &body("ragmap", 3, 1.0, Value::Null), &auth).await;
        assert_eq!(best["records"].as_array().unwrap().len(), 1, "{best}");
        // Metadata conditions filter on title, url, path, heading.
        let only_web = json!({"logical_operator": "and", "conditions": [
            {"name": "url", "comparison_operator": "start with", "value": "https://example.com/"}]});
        let (s, filtered) = post(&url, &body("ragmap", 3, 0.0, only_web), &auth).await;
        assert_eq!(s, 200, "{filtered}");
        let paths: Vec<&str> = filtered["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["metadata"]["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["web/qlora.md"]);
        let bad =
            json!({"conditions": [{"name": "price", "comparison_operator": ">", "value": 3}]});
        let (s, e) = post(&url, &body("ragmap", 3, 0.0, bad), &auth).await;
        assert_eq!((s, e["error_code"].as_u64()), (400, Some(400)), "{e}");

        // Dify's documented errors.
        for (headers, status, code) in [
            (vec![], 403, 1001),
            (vec![("authorization", "Basic abc")], 403, 1001),
            (vec![("authorization", "Bearer wrong")], 403, 1002),
        ] {
            let (s, e) = post(&url, &body("ragmap", 3, 0.0, Value::Null), &headers).await;
            assert_eq!(s, status, "{e}");
            assert_eq!(e["error_code"], code, "{e}");
            assert!(
                e["error_msg"].as_str().is_some_and(|m| !m.is_empty()),
                "{e}"
            );
            assert!(!e.to_string().contains(key));
        }
        let (s, e) = post(&url, &body("AAA-BBB-CCC", 3, 0.0, Value::Null), &auth).await;
        assert_eq!((s, e["error_code"].as_u64()), (404, Some(2001)), "{e}");
        assert!(
            e["error_msg"].as_str().unwrap().contains("\"ragmap\""),
            "{e}"
        );
        let (s, e) = post(&url, "{not json", &auth).await;
        assert_eq!((s, e["error_code"].as_u64()), (400, Some(400)), "{e}");
    });
}
