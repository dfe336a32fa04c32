//! Both chat backends against the scripted loopback server (tests/common), each test
//! scripting every reply: the protocol details real servers produce (role-only first delta, usage
//! chunk with `choices: []`, CRLF, keep-alives, multi-line data, chunked encoding) and
//! the failures (HTTP errors with JSON bodies, cut and malformed streams, slow or
//! stalled servers, nothing listening, unknown host).

mod common;

use std::time::{Duration, Instant};

use common::*;
use ragmap::answer::{Answerer, Prepared};
use ragmap::config::{Config, Provider};
use ragmap::llm::{
    backend_from_config, ChatBackend, ChatMessage, ChatOptions, LlmError, ModelInfo, OllamaBackend,
    OpenAiBackend, ServerKind, Timeouts,
};
use ragmap::query::Query;
use tokio::net::TcpStream;

// ---------------------------------------------------------------- helpers

const KEY: &str = "sk-test-Zq81vX-do-not-print";

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        first_token: Duration::from_secs(5),
        idle: Duration::from_secs(5),
    }
}

fn short_timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        first_token: Duration::from_millis(400),
        idle: Duration::from_millis(400),
    }
}

fn openai(url: &str, t: Timeouts) -> OpenAiBackend {
    OpenAiBackend::new(&format!("{url}/v1"), Some(KEY.into()), t).unwrap()
}

fn options() -> ChatOptions {
    ChatOptions {
        model: "smollm2".into(),
        temperature: Some(0.0),
        max_tokens: Some(64),
        context_tokens: Some(2048),
        ..ChatOptions::default()
    }
}

fn messages() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("Be brief."),
        ChatMessage::user("Say hello."),
    ]
}

/// Runs a chat, returning the result and the deltas the callback saw.
async fn chat(
    backend: &dyn ChatBackend,
) -> (Result<ragmap::llm::ChatOutcome, LlmError>, Vec<String>) {
    let mut seen = Vec::new();
    let mut sink = |t: &str| seen.push(t.to_string());
    let res = backend.chat(&messages(), &options(), &mut sink).await;
    (res, seen)
}

fn assert_no_key(err: &LlmError) {
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains(KEY) && !shown.contains("do-not-print"),
        "key leaked: {shown}"
    );
    assert!(!err.to_string().contains('\n'), "not one line: {err}");
}

// ---------------------------------------------------------------- OpenAI: success paths

#[tokio::test]
async fn openai_streams_a_realistic_answer() {
    let role_only = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null},\"finish_reason\":null}],\"created\":1,\"id\":\"x\",\"model\":\"m\",\"object\":\"chat.completion.chunk\"}\r\n\r\n";
    let finish = "data: {\"choices\":[{\"finish_reason\":\"stop\",\"index\":0,\"delta\":{}}],\"object\":\"chat.completion.chunk\"}\r\n\r\n";
    let usage = "data: {\"choices\":[],\"usage\":{\"completion_tokens\":3,\"prompt_tokens\":17,\"total_tokens\":20},\"timings\":{\"predicted_n\":3}}\r\n\r\n";
    let server = ScriptedServer::replies(vec![sse_reply()
        .body(": keep-alive\r\n\r\n")
        .body(role_only)
        .body(openai_delta("Hel").replace("\n\n", "\r\n\r\n"))
        // One event split across two chunks, with its JSON over two data lines.
        .body("data: {\"choices\":[{\"index\":0,\n")
        .body("data: \"delta\":{\"content\":\"lo\"}}]}\n\n: ping\n\n")
        .body(openai_delta(", world"))
        .body(finish)
        .body(usage)
        .body("data: [DONE]\r\n\r\n")]);
    let backend = openai(&server.url(""), timeouts());
    let (res, seen) = chat(&backend).await;
    let out = res.unwrap();
    assert_eq!(seen, ["Hel", "lo", ", world"]);
    assert_eq!(out.text, "Hello, world");
    assert_eq!(out.deltas, 3);
    assert_eq!(out.finish_reason.as_deref(), Some("stop"));
    let usage = out.usage.unwrap();
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (Some(17), Some(3))
    );
    assert!(out.time_to_first_token.unwrap() <= out.elapsed);

    let reqs = server.requests();
    let req = &reqs[0];
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/v1/chat/completions"),
        "{req:?}"
    );
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(req.json()["stream"], true);
    assert_eq!(req.json()["stream_options"]["include_usage"], true);
    assert_eq!(req.json()["model"], "smollm2");
    assert_eq!(req.json()["max_tokens"], 64);
    assert_eq!(req.json()["temperature"], 0.0);
    assert_eq!(req.json()["messages"][0]["role"], "system");
    assert_eq!(req.json()["messages"][1]["content"], "Say hello.");
}

#[tokio::test]
async fn openai_reassembles_utf8_split_across_network_chunks() {
    let event = openai_delta("你好, 世界 😀");
    let bytes = event.as_bytes();
    let cut1 = event.find('你').unwrap() + 1; // inside 你
    let cut2 = event.find('😀').unwrap() + 2; // inside the emoji
    let server = ScriptedServer::replies(vec![sse_reply()
        .body(&bytes[..cut1])
        .sleep(20)
        .body(&bytes[cut1..cut2])
        .sleep(20)
        .body(&bytes[cut2..])
        .body(OPENAI_DONE)]);
    let (res, _) = chat(&openai(&server.url(""), timeouts())).await;
    assert_eq!(res.unwrap().text, "你好, 世界 😀");
}

#[tokio::test]
async fn openai_accepts_end_after_finish_reason_without_done() {
    let finish = "data: {\"choices\":[{\"finish_reason\":\"length\",\"index\":0,\"delta\":{\"content\":\"!\"}}]}";
    let server = ScriptedServer::replies(vec![sse_reply().body(openai_delta("Hi")).body(finish)]);
    let (res, _) = chat(&openai(&server.url(""), timeouts())).await;
    let out = res.unwrap();
    assert_eq!(out.text, "Hi!");
    assert!(out.truncated());
    assert_eq!(out.usage, None);
}

#[tokio::test]
async fn openai_retries_without_stream_options_when_rejected() {
    let server = ScriptedServer::replies(vec![
        Reply::json(
            400,
            r#"{"error":{"message":"Unrecognized request argument supplied: stream_options","type":"invalid_request_error"}}"#,
        ),
        sse_reply().body(openai_delta("ok")).body(OPENAI_DONE),
    ]);
    let (res, _) = chat(&openai(&server.url(""), timeouts())).await;
    assert_eq!(res.unwrap().text, "ok");
    let reqs = server.requests();
    assert!(reqs[0].json().get("stream_options").is_some());
    assert!(reqs[1].json().get("stream_options").is_none());
}

#[tokio::test]
async fn openai_accepts_a_non_streamed_json_answer() {
    let body = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"whole"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;
    let server = ScriptedServer::replies(vec![Reply::json(200, body)]);
    let (res, seen) = chat(&openai(&server.url(""), timeouts())).await;
    let out = res.unwrap();
    assert_eq!((out.text.as_str(), seen.len()), ("whole", 1));
    assert_eq!(out.usage.unwrap().prompt_tokens, Some(5));
}

// ---------------------------------------------------------------- OpenAI: failures

#[tokio::test]
async fn a_connection_closed_before_any_answer_is_tried_once_more() {
    // The first request's connection closes unanswered (a kept-alive one the
    // server dropped as it went out); the second is answered.
    let server = ScriptedServer::replies(vec![
        Reply::silent().cut(),
        sse_reply()
            .body(openai_delta("again"))
            .body("data: [DONE]\n\n"),
    ]);
    let (res, seen) = chat(&openai(&server.url(""), timeouts())).await;
    assert_eq!(res.unwrap().text, "again");
    assert_eq!(
        (seen.concat(), server.requests().len()),
        ("again".into(), 2)
    );

    // Twice: the error says so, after exactly one more try.
    let server = ScriptedServer::replies(vec![Reply::silent().cut(), Reply::silent().cut()]);
    let (res, _) = chat(&openai(&server.url(""), timeouts())).await;
    let err = res.unwrap_err();
    assert!(matches!(err, LlmError::Connect { .. }), "{err:?}");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn openai_stream_cut_mid_answer_keeps_the_partial_text() {
    // Chunked body that never terminates: the connection just closes.
    let server = ScriptedServer::replies(vec![sse_reply()
        .body(openai_delta("The answer "))
        .body(openai_delta("is"))
        .cut()]);
    let (res, seen) = chat(&openai(&server.url(""), timeouts())).await;
    let err = res.unwrap_err();
    assert!(matches!(err, LlmError::Cut { .. }), "{err:?}");
    assert_eq!(err.partial_text(), Some("The answer is"));
    assert_eq!(seen.concat(), "The answer is");
    assert_no_key(&err);

    // A complete HTTP body that simply lacks [DONE] and any finish_reason.
    let server = ScriptedServer::replies(vec![sse_reply().body(openai_delta("half"))]);
    let (res, _) = chat(&openai(&server.url(""), timeouts())).await;
    let err = res.unwrap_err();
    assert!(
        matches!(&err, LlmError::Cut { reason, .. } if reason.contains("[DONE]")),
        "{err:?}"
    );
    assert_eq!(err.partial_text(), Some("half"));
}

#[tokio::test]
async fn openai_http_errors_are_typed_with_the_server_message() {
    let cases = [
        (401, format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}","type":"invalid_request_error","code":"invalid_api_key"}}}}"#)),
        (404, r#"{"error":{"message":"The model `smollm2` does not exist or you do not have access to it.","type":"invalid_request_error","code":"model_not_found"}}"#.to_string()),
        (429, r#"{"error":{"message":"Rate limit reached, retry in 20s","type":"requests","code":"rate_limit_exceeded"}}"#.to_string()),
        (500, r#"{"error":"boom: out of memory"}"#.to_string()),
        (400, r#"{"error":{"code":400,"message":"request (3000 tokens) exceeds the available context size (2048 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":3000,"n_ctx":2048}}"#.to_string()),
        (404, "404 page not found".to_string()),
    ];
    let server = ScriptedServer::replies(cases.iter().map(|(s, b)| Reply::json(*s, b)).collect());
    let backend = openai(&server.url(""), timeouts());
    let mut errors = Vec::new();
    for _ in 0..cases.len() {
        let (res, seen) = chat(&backend).await;
        assert!(seen.is_empty());
        let err = res.unwrap_err();
        assert_no_key(&err);
        errors.push(err);
    }
    match &errors[0] {
        LlmError::Http {
            status: 401,
            message,
            ..
        } => assert_eq!(message, "Incorrect API key provided: ***"),
        e => panic!("{e:?}"),
    }
    assert!(
        matches!(&errors[1], LlmError::UnknownModel { model, message } if model == "smollm2" && message.contains("does not exist"))
    );
    assert!(
        matches!(&errors[2], LlmError::Http { status: 429, message, .. } if message == "Rate limit reached, retry in 20s")
    );
    assert!(
        matches!(&errors[3], LlmError::Http { status: 500, message, .. } if message == "boom: out of memory")
    );
    assert_eq!(errors[3].status(), Some(500));
    assert!(matches!(
        &errors[4],
        LlmError::ContextExceeded {
            prompt_tokens: Some(3000),
            context_tokens: Some(2048),
            ..
        }
    ));
    assert!(errors[4]
        .to_string()
        .contains("exceeds the available context size"));
    assert!(
        matches!(&errors[5], LlmError::Http { status: 404, message, .. } if message.contains("base URL")),
        "{:?}",
        errors[5]
    );
}

#[tokio::test]
async fn openai_malformed_stream_line_is_an_error_with_partial_text() {
    let server = ScriptedServer::replies(vec![sse_reply()
        .body(openai_delta("ok "))
        .body("data: {\"choices\":[{\"delta\":\n\n")]);
    let (res, _) = chat(&openai(&server.url(""), timeouts())).await;
    let err = res.unwrap_err();
    assert!(matches!(err, LlmError::Malformed { .. }), "{err:?}");
    assert_eq!(err.partial_text(), Some("ok "));
}

#[tokio::test]
async fn openai_error_event_mid_stream_is_a_server_error() {
    let server = ScriptedServer::replies(vec![sse_reply().body(openai_delta("part")).body(
        "data: {\"error\":{\"message\":\"slot unavailable\",\"type\":\"server_error\"}}\n\n",
    )]);
    let (res, _) = chat(&openai(&server.url(""), timeouts())).await;
    let err = res.unwrap_err();
    assert!(
        matches!(&err, LlmError::Server { message, partial } if message == "slot unavailable" && partial == "part"),
        "{err:?}"
    );
}

#[tokio::test]
async fn openai_html_page_is_refused_clearly() {
    let server = ScriptedServer::replies(vec![Reply::new(200)
        .chunked()
        .header("Content-Type", "text/html")
        .body("<html>login</html>")]);
    let (res, _) = chat(&openai(&server.url(""), timeouts())).await;
    let err = res.unwrap_err();
    assert!(
        matches!(&err, LlmError::Malformed { reason, .. } if reason.contains("text/html")),
        "{err:?}"
    );
}

#[tokio::test]
async fn slow_first_token_times_out_within_the_limit() {
    // Headers come at once; then only keep-alives and a role-only delta: no token.
    let role_only = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n";
    let keep_alives = (0..30).fold(sse_reply().body(role_only), |reply, _| {
        reply.sleep(100).body(": keep-alive\n\n")
    });
    // Headers never come.
    let server = ScriptedServer::replies(vec![keep_alives, Reply::silent().sleep(5000)]);
    let backend = openai(&server.url(""), short_timeouts());
    for _ in 0..2 {
        let started = Instant::now();
        let (res, _) = chat(&backend).await;
        let took = started.elapsed();
        let err = res.unwrap_err();
        assert!(matches!(err, LlmError::FirstTokenTimeout { .. }), "{err:?}");
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_millis(2500),
            "{took:?}"
        );
        assert_no_key(&err);
    }
}

#[tokio::test]
async fn stall_mid_stream_fires_the_idle_timeout() {
    let server = ScriptedServer::replies(vec![sse_reply()
        .body(openai_delta("so far"))
        .sleep(5000)
        .body(openai_delta("late"))]);
    let started = Instant::now();
    let (res, seen) = chat(&openai(&server.url(""), short_timeouts())).await;
    let err = res.unwrap_err();
    assert!(matches!(err, LlmError::Stalled { .. }), "{err:?}");
    assert_eq!(err.partial_text(), Some("so far"));
    assert_eq!(seen, ["so far"]);
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
async fn connection_refused_is_reported_fast() {
    let addr = format!("127.0.0.1:{}", closed_port());
    let backend = openai(&format!("http://{addr}"), timeouts());
    let started = Instant::now();
    let (res, _) = chat(&backend).await;
    let err = res.unwrap_err();
    assert!(matches!(err, LlmError::ConnectionRefused { .. }), "{err:?}");
    assert!(err.is_unreachable());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_no_key(&err);
    let ping = backend.ping(Duration::from_secs(1)).await.unwrap_err();
    assert!(
        matches!(ping, LlmError::ConnectionRefused { .. }),
        "{ping:?}"
    );

    // Credentials in the base URL stay out of messages too.
    let backend = openai(&format!("http://me:hunter2@{addr}"), timeouts());
    assert!(!backend.base_url().contains("hunter2"));
    assert!(!format!("{backend:?}").contains("hunter2"));
    let err = chat(&backend).await.0.unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
}

#[tokio::test]
async fn connect_timeout_fires_when_the_server_never_accepts() {
    // A listener whose accept queue is full: Linux drops further SYNs, so the next
    // connect hangs, like a firewalled host.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    let t = Timeouts {
        connect: Duration::from_millis(400),
        ..timeouts()
    };
    let started = Instant::now();
    let (res, _) = chat(&openai(&format!("http://{addr}"), t)).await;
    let err = res.unwrap_err();
    assert!(matches!(err, LlmError::ConnectTimeout { .. }), "{err:?}");
    assert!(err.is_unreachable());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(listener);
}

#[tokio::test]
async fn unknown_host_is_its_own_error() {
    let backend = OpenAiBackend::new(
        "http://ragmap-no-such-host.invalid:8080/v1",
        Some(KEY.into()),
        timeouts(),
    )
    .unwrap();
    let (res, _) = chat(&backend).await;
    let err = res.unwrap_err();
    assert!(
        matches!(&err, LlmError::UnknownHost { host, .. } if host == "ragmap-no-such-host.invalid"),
        "{err:?}"
    );
    assert!(err.is_unreachable());
    assert_no_key(&err);
}

#[tokio::test]
async fn invalid_base_urls_are_rejected_up_front() {
    for url in ["not a url", "ftp://host/v1", "http://"] {
        let err = OpenAiBackend::new(url, None, timeouts()).unwrap_err();
        assert!(matches!(err, LlmError::InvalidUrl { .. }), "{url}: {err:?}");
    }
}

#[tokio::test]
async fn api_key_never_shows_in_debug_output() {
    let backend = openai("http://127.0.0.1:9", timeouts());
    let shown = format!("{backend:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("***"));
}

#[tokio::test]
async fn dropping_the_future_cancels_the_request() {
    let script = (0..50).fold(sse_reply().body(openai_delta("first")), |reply, _| {
        reply.sleep(100).body(openai_delta(" more"))
    });
    let server = ScriptedServer::replies(vec![script]);
    let backend = openai(&server.url(""), timeouts());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut tx = Some(tx);
    let mut sink = |_: &str| {
        if let Some(tx) = tx.take() {
            let _ = tx.send(());
        }
    };
    let msgs = messages();
    let opts = options();
    tokio::select! {
        _ = backend.chat(&msgs, &opts, &mut sink) => panic!("should have been cancelled"),
        _ = rx => {}
    }
    // The server notices the closed connection long before its 5 s script ends.
    let started = Instant::now();
    assert!(
        server.wait_closed(1, Duration::from_secs(3)).await,
        "server still writing"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn ping_answers_quickly() {
    let server = ScriptedServer::replies(vec![openai_models(&["m"]), Reply::silent().sleep(3000)]);
    let backend = openai(&server.url(""), timeouts());
    backend.ping(Duration::from_secs(1)).await.unwrap();
    let started = Instant::now();
    let err = backend.ping(Duration::from_millis(300)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{err:?}");
    let reqs = server.requests();
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str()),
        ("GET", "/v1/models")
    );
}

// ---------------------------------------------------------------- from config

#[tokio::test]
async fn backend_from_config_uses_provider_url_and_key_variable() {
    let server = ScriptedServer::replies(vec![sse_reply()
        .body(openai_delta("cfg"))
        .body(OPENAI_DONE)]);
    let mut config = Config::default();
    config.llm.base_url = Some(format!("{}/v1/", server.url("")));
    // Cargo sets CARGO_PKG_NAME for test runs: a key variable that exists without set_var.
    config.llm.api_key_env = "CARGO_PKG_NAME".into();
    config.llm.model = "from-config".into();
    let backend = backend_from_config(&config).unwrap();
    assert_eq!(backend.provider(), Provider::Openai);
    assert_eq!(backend.base_url(), format!("{}/v1", server.url("")));
    let mut sink = |_: &str| {};
    let out = backend
        .chat(&messages(), &ChatOptions::from_config(&config), &mut sink)
        .await
        .unwrap();
    assert_eq!(out.text, "cfg");
    let reqs = server.requests();
    assert_eq!(reqs[0].header("authorization"), Some("Bearer ragmap"));
    assert_eq!(reqs[0].json()["model"], "from-config");
    assert_eq!(reqs[0].json()["max_tokens"], 512);

    let mut config = Config::default();
    config.llm.provider = Provider::Ollama;
    config.llm.base_url = Some("http://127.0.0.1:11999".into());
    let backend = backend_from_config(&config).unwrap();
    assert_eq!(backend.provider(), Provider::Ollama);
}

// ---------------------------------------------------------------- Ollama

fn ollama(url: &str, t: Timeouts) -> OllamaBackend {
    OllamaBackend::new(url, t).unwrap()
}

#[tokio::test]
async fn ollama_streams_ndjson() {
    let line = ollama_line("世界");
    let split = line.find('世').unwrap() + 1;
    let server = ScriptedServer::replies(vec![ndjson_reply()
        .body(ollama_line("Hello"))
        .body(&line.as_bytes()[..split])
        .body(&line.as_bytes()[split..])
        .body("\r\n")
        .body(OLLAMA_DONE)]);
    let (res, seen) = chat(&ollama(&server.url(""), timeouts())).await;
    let out = res.unwrap();
    assert_eq!(seen, ["Hello", "世界"]);
    assert_eq!(out.finish_reason.as_deref(), Some("stop"));
    let usage = out.usage.unwrap();
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (Some(26), Some(4))
    );
    let reqs = server.requests();
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str()),
        ("POST", "/api/chat")
    );
    assert_eq!(reqs[0].header("authorization"), None);
    assert_eq!(reqs[0].json()["stream"], true);
    assert_eq!(reqs[0].json()["options"]["num_predict"], 64);
    assert_eq!(reqs[0].json()["options"]["num_ctx"], 2048);
    assert_eq!(reqs[0].json()["options"]["temperature"], 0.0);
}

#[tokio::test]
async fn ollama_unknown_model_and_other_errors() {
    let server = ScriptedServer::replies(vec![
        Reply::json(
            404,
            r#"{"error":"model \"smollm2\" not found, try pulling it first"}"#,
        ),
        Reply::json(500, r#"{"error":"llama runner process has terminated"}"#),
        ndjson_reply()
            .body(ollama_line("par"))
            .body("{\"error\":\"out of memory\"}\n"),
        ndjson_reply().body(ollama_line("cut")).cut(),
        ndjson_reply().body(ollama_line("x")).body("not json\n"),
        ndjson_reply().body(ollama_line("stall")).sleep(5000),
    ]);
    let backend = ollama(&server.url(""), short_timeouts());
    let mut errs = Vec::new();
    for _ in 0..6 {
        errs.push(chat(&backend).await.0.unwrap_err());
    }
    assert!(
        matches!(&errs[0], LlmError::UnknownModel { message, .. } if message.contains("try pulling it first")),
        "{:?}",
        errs[0]
    );
    assert!(
        matches!(&errs[1], LlmError::Http { status: 500, message, .. } if message == "llama runner process has terminated")
    );
    assert!(
        matches!(&errs[2], LlmError::Server { message, partial } if message == "out of memory" && partial == "par"),
        "{:?}",
        errs[2]
    );
    assert!(
        matches!(&errs[3], LlmError::Cut { partial, .. } if partial == "cut"),
        "{:?}",
        errs[3]
    );
    assert!(
        matches!(&errs[4], LlmError::Malformed { partial, .. } if partial == "x"),
        "{:?}",
        errs[4]
    );
    assert!(
        matches!(&errs[5], LlmError::Stalled { partial, .. } if partial == "stall"),
        "{:?}",
        errs[5]
    );
}

#[tokio::test]
async fn ollama_refused_and_ping() {
    let addr = format!("127.0.0.1:{}", closed_port());
    let err = chat(&ollama(&format!("http://{addr}"), timeouts()))
        .await
        .0
        .unwrap_err();
    assert!(matches!(err, LlmError::ConnectionRefused { .. }), "{err:?}");

    let server = ScriptedServer::replies(vec![Reply::json(200, r#"{"version":"0.5.7"}"#)]);
    ollama(&server.url(""), timeouts())
        .ping(Duration::from_secs(1))
        .await
        .unwrap();
    let reqs = server.requests();
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str()),
        ("GET", "/api/version")
    );
}

// ---------------------------------------------------------------- the model's real context, loops

/// A config answering through `url` (an OpenAI-compatible `/v1`, or Ollama's root).
fn answering_config(url: &str, provider: Provider, context_tokens: usize) -> Config {
    let mut config = Config::default();
    config.llm.provider = provider;
    config.llm.base_url = Some(url.to_string());
    config.llm.context_tokens = context_tokens;
    config.llm.max_answer_tokens = 128;
    config.llm.first_token_timeout_secs = 5.0;
    config
}

async fn prepare(answerer: &Answerer) -> Prepared {
    let hits = async |_: &Query| Ok::<_, std::convert::Infallible>(lora_passages(12, 20));
    let Ok(prepared) = answerer
        .prepare_query(Query::new("What is LoRA?"), hits)
        .await;
    prepared
}

/// The estimated tokens of a chat request's messages, as ragmap budgets them.
fn estimated(request: &Request) -> usize {
    let messages: Vec<ChatMessage> = request.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage::user(m["content"].as_str().unwrap()))
        .collect();
    ragmap::prompt::estimate_messages(&messages)
}

fn chats(server: &ScriptedServer) -> Vec<Request> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/chat/completions") || r.path == "/api/chat")
        .collect()
}

#[tokio::test]
async fn llama_cpp_context_and_sampling_are_read_once_and_the_prompt_fits_first_time() {
    let models = r#"{"object":"list","data":[{"id":"smollm2","object":"model","owned_by":"llamacpp","meta":{"n_ctx":1024,"n_ctx_train":8192}}]}"#;
    let props = r#"{"default_generation_settings":{"n_ctx":1024,"params":{"repeat_penalty":1.0,"dry_multiplier":0.0}},"total_slots":1}"#;
    let server = ScriptedServer::start(move |r| match r.path.as_str() {
        "/v1/models" => Reply::json(200, models),
        "/props" => Reply::json(200, props),
        _ => openai_stream(&["LoRA trains ", "adapters [1]."]),
    });
    let config = answering_config(&server.url("/v1"), Provider::Openai, 4096);
    let answerer = Answerer::from_config(&config, false).unwrap();
    let info = answerer.model_info().await.clone();
    assert_eq!(info.context_tokens, Some(1024));
    assert_eq!(info.server, ServerKind::LlamaCpp);
    let budget = answerer.budget().await;
    assert_eq!((budget.context_tokens, budget.answer_tokens), (1024, 128));
    for _ in 0..2 {
        let mut prepared = prepare(&answerer).await;
        let mut sink = |_: &str| {};
        let out = answerer
            .answer(&mut prepared, &[], &mut sink)
            .await
            .unwrap();
        assert_eq!(out.text, "LoRA trains adapters [1].");
    }
    let reqs = server.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    // Asked once for the process; one request per answer, none spent on refits.
    assert_eq!(
        paths,
        [
            "/v1/models",
            "/props",
            "/v1/chat/completions",
            "/v1/chat/completions"
        ]
    );
    let chat = reqs[2].json();
    assert!(estimated(&reqs[2]) + 128 <= 1024, "{}", estimated(&reqs[2]));
    assert_eq!(chat["max_tokens"], 128);
    // llama.cpp takes its own repetition options; the server set none itself.
    assert!((chat["repeat_penalty"].as_f64().unwrap() - 1.1).abs() < 1e-6);
    // Over several turns of a menu-shaped loop, not llama.cpp's 64 tokens.
    assert_eq!(chat["repeat_last_n"], 256);
    assert!((chat["dry_multiplier"].as_f64().unwrap() - 0.8).abs() < 1e-6);
    // DRY looks back over the whole context, not llama.cpp's 64 tokens.
    assert_eq!(chat["dry_penalty_last_n"], 1024);
    assert!(chat.get("frequency_penalty").is_none());
}

#[tokio::test]
async fn servers_that_do_not_tell_get_only_what_the_user_set() {
    let server = ScriptedServer::start(|r| match r.path.as_str() {
        "/v1/models" => openai_models(&["gpt-x", "gpt-y"]),
        "/props" => Reply::json(404, r#"{"error":{"message":"Not found"}}"#),
        _ => openai_stream(&["ok"]),
    });
    let mut config = answering_config(&server.url("/v1"), Provider::Openai, 4096);
    config.llm.model = "gpt-x".into();
    let answerer = Answerer::from_config(&config, false).unwrap();
    assert_eq!(answerer.model_info().await, &ModelInfo::default());
    assert_eq!(answerer.budget().await.context_tokens, 4096);
    let mut prepared = prepare(&answerer).await;
    let mut sink = |_: &str| {};
    answerer
        .answer(&mut prepared, &[], &mut sink)
        .await
        .unwrap();
    let chat = chats(&server)[0].json();
    for key in [
        "repeat_penalty",
        "dry_multiplier",
        "frequency_penalty",
        "presence_penalty",
    ] {
        assert!(chat.get(key).is_none(), "{key} sent to an unknown server");
    }

    config.llm.frequency_penalty = Some(0.3);
    let answerer = Answerer::from_config(&config, false).unwrap();
    let mut prepared = prepare(&answerer).await;
    answerer
        .answer(&mut prepared, &[], &mut sink)
        .await
        .unwrap();
    let chat = chats(&server)[1].json();
    assert!((chat["frequency_penalty"].as_f64().unwrap() - 0.3).abs() < 1e-6);
    assert!(chat.get("repeat_penalty").is_none());
}

#[tokio::test]
async fn ollama_api_show_sets_num_ctx_and_its_modelfile_sampling_is_left_alone() {
    let show = r#"{"parameters":"num_ctx                        8192\nrepeat_penalty                 1.3\nstop                           \"<|im_end|>\"","details":{"family":"qwen2"},"model_info":{"general.architecture":"qwen2","qwen2.context_length":2048,"qwen2.block_count":28}}"#;
    let server = ScriptedServer::start(move |r| match r.path.as_str() {
        "/api/show" => Reply::json(200, show),
        _ => ollama_stream(&["LoRA ", "[1]"]),
    });
    let mut config = answering_config(&server.url(""), Provider::Ollama, 4096);
    config.llm.model = "qwen2.5:7b".into();
    let answerer = Answerer::from_config(&config, false).unwrap();
    let mut prepared = prepare(&answerer).await;
    assert!(prepared.prompt.estimated_tokens <= 2048 - 128);
    let mut sink = |_: &str| {};
    answerer
        .answer(&mut prepared, &[], &mut sink)
        .await
        .unwrap();
    let reqs = server.requests();
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str()),
        ("POST", "/api/show")
    );
    assert_eq!(reqs[0].json()["model"], "qwen2.5:7b");
    let chat = chats(&server)[0].json();
    // The model's 2048, not the configured 4096: Ollama would cut the prompt's start.
    assert_eq!(chat["options"]["num_ctx"], 2048);
    assert_eq!(chat["options"]["num_predict"], 128);
    // The Modelfile sets repeat_penalty: ragmap's default stays out.
    assert!(chat["options"].get("repeat_penalty").is_none(), "{chat}");
    assert!(estimated(&chats(&server)[0]) + 128 <= 2048);

    // A model without its own penalty gets ragmap's; no DRY in Ollama's options.
    let plain = r#"{"parameters":"","model_info":{"general.architecture":"llama","llama.context_length":8192}}"#;
    let server = ScriptedServer::start(move |r| match r.path.as_str() {
        "/api/show" => Reply::json(200, plain),
        _ => ollama_stream(&["ok"]),
    });
    let config = answering_config(&server.url(""), Provider::Ollama, 4096);
    let answerer = Answerer::from_config(&config, false).unwrap();
    let mut prepared = prepare(&answerer).await;
    answerer
        .answer(&mut prepared, &[], &mut sink)
        .await
        .unwrap();
    let chat = chats(&server)[0].json();
    assert_eq!(chat["options"]["num_ctx"], 4096);
    assert!((chat["options"]["repeat_penalty"].as_f64().unwrap() - 1.1).abs() < 1e-6);
    assert_eq!(chat["options"]["repeat_last_n"], 256);
    assert!(chat["options"].get("dry_multiplier").is_none());
    assert!(chat["options"].get("dry_penalty_last_n").is_none());
}

/// The refusals of the servers ragmap knows, for a context of 1024 tokens
/// and a prompt of `prompt` tokens.
fn refusals(prompt: usize) -> Vec<Reply> {
    vec![
        // llama.cpp
        Reply::json(
            400,
            &format!(
                r#"{{"error":{{"code":400,"message":"request ({prompt} tokens) exceeds the available context size (1024 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":{prompt},"n_ctx":1024}}}}"#
            ),
        ),
        // OpenAI
        Reply::json(
            400,
            &format!(
                r#"{{"error":{{"message":"This model's maximum context length is 1024 tokens. However, your messages resulted in {prompt} tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}}}"#
            ),
        ),
        // vLLM
        Reply::json(
            400,
            &format!(
                r#"{{"object":"error","message":"This model's maximum context length is 1024 tokens. However, you requested {} tokens ({prompt} in the messages, 128 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}}"#,
                prompt + 128
            ),
        ),
        // Hugging Face TGI
        Reply::json(
            422,
            &format!(
                r#"{{"error":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 1024. Given: {prompt} `inputs` tokens and 128 `max_new_tokens`","error_type":"validation"}}"#
            ),
        ),
    ]
}

#[tokio::test]
async fn a_length_refusal_is_refit_to_what_the_server_said_and_asked_once_more() {
    for (shape, refusal) in refusals(2900).into_iter().enumerate() {
        let chat_count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = chat_count.clone();
        let server = ScriptedServer::start(move |r| match r.path.as_str() {
            "/v1/models" => openai_models(&["a", "b"]),
            "/props" => Reply::json(404, "{}"),
            _ if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 => refusal.clone(),
            _ => openai_stream(&["refit ", "answer [1]"]),
        });
        let config = answering_config(&server.url("/v1"), Provider::Openai, 4096);
        let answerer = Answerer::from_config(&config, false).unwrap();
        let mut prepared = prepare(&answerer).await;
        let offered = prepared.prompt.sources.len();
        let mut seen = String::new();
        let mut sink = |t: &str| seen.push_str(t);
        let out = answerer.answer(&mut prepared, &[], &mut sink).await;
        let out = out.unwrap_or_else(|e| panic!("shape {shape}: {e}"));
        assert_eq!(out.text, "refit answer [1]");
        assert_eq!(seen, out.text);
        let chats = chats(&server);
        assert_eq!(chats.len(), 2, "shape {shape}: one retry");
        let (first, second) = (estimated(&chats[0]), estimated(&chats[1]));
        assert!(second + 128 <= 1024, "shape {shape}: refit to {second}");
        assert!(second < first);
        // The sources left are those of the refitted prompt the model was shown.
        assert_eq!(sources_sent(&chats[0]), offered, "shape {shape}");
        let kept = &prepared.prompt.sources;
        assert!(!kept.is_empty() && kept.len() < offered, "shape {shape}");
        assert_eq!(sources_sent(&chats[1]), kept.len(), "shape {shape}");
        let user = chats[1].json()["messages"][1]["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(user, prepared.prompt.user, "shape {shape}");
        // The next question fits at once: no refusal, no extra request.
        let mut prepared = prepare(&answerer).await;
        let mut quiet = |_: &str| {};
        answerer
            .answer(&mut prepared, &[], &mut quiet)
            .await
            .unwrap();
        assert_eq!(chats_len(&server), 3, "shape {shape}");
    }
}

/// How many numbered passages a chat request's messages carry.
fn sources_sent(request: &Request) -> usize {
    request.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["content"]
                .as_str()
                .unwrap()
                .matches("<source id=")
                .count()
        })
        .sum()
}

fn chats_len(server: &ScriptedServer) -> usize {
    chats(server).len()
}

#[tokio::test]
async fn a_refusal_counted_higher_than_the_estimate_shrinks_the_budget_by_as_much() {
    // A tokenizer that spends three times the estimate: the refit scales down.
    let server = ScriptedServer::start(|r| match r.path.as_str() {
        "/v1/models" => openai_models(&["a", "b"]),
        "/props" => Reply::json(404, "{}"),
        _ => Reply::new(500),
    });
    let config = answering_config(&server.url("/v1"), Provider::Openai, 4096);
    let answerer = Answerer::from_config(&config, false).unwrap();
    let mut prepared = prepare(&answerer).await;
    let estimate = ragmap::prompt::estimate_messages(&answerer.messages(&prepared, &[]));
    let server_count = estimate * 3;
    let chat_count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = chat_count.clone();
    let refusal = Reply::json(
        400,
        &format!(
            r#"{{"error":{{"code":400,"message":"request ({server_count} tokens) exceeds the available context size (2048 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":{server_count},"n_ctx":2048}}}}"#
        ),
    );
    let server = ScriptedServer::start(move |r| match r.path.as_str() {
        "/v1/models" => openai_models(&["a", "b"]),
        "/props" => Reply::json(404, "{}"),
        _ if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 => refusal.clone(),
        _ => openai_stream(&["ok"]),
    });
    let config = answering_config(&server.url("/v1"), Provider::Openai, 4096);
    let answerer = Answerer::from_config(&config, false).unwrap();
    let mut sink = |_: &str| {};
    answerer
        .answer(&mut prepared, &[], &mut sink)
        .await
        .unwrap();
    let chats = chats(&server);
    assert_eq!(chats.len(), 2);
    // Three times the estimate must still fit the 2048 with the answer.
    assert!(
        estimated(&chats[1]) * 3 + 128 <= 2048,
        "{}",
        estimated(&chats[1])
    );
}

#[tokio::test]
async fn never_more_than_one_retry() {
    let server = ScriptedServer::start(|r| match r.path.as_str() {
        "/v1/models" => openai_models(&["a", "b"]),
        "/props" => Reply::json(404, "{}"),
        _ => refusals(5000).remove(0),
    });
    let config = answering_config(&server.url("/v1"), Provider::Openai, 4096);
    let answerer = Answerer::from_config(&config, false).unwrap();
    let mut prepared = prepare(&answerer).await;
    let mut sink = |_: &str| {};
    let err = answerer
        .answer(&mut prepared, &[], &mut sink)
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::ContextExceeded { .. }), "{err:?}");
    assert_eq!(chats(&server).len(), 2);
}

#[tokio::test]
async fn the_guard_stops_a_looping_stream_and_keeps_what_came() {
    let line = "LoRA is a method that trains adapters.\n";
    let looping = (0..60).fold(sse_reply(), |reply, _| {
        reply.sleep(100).body(openai_delta(line))
    });
    let server = ScriptedServer::replies(vec![looping]);
    let backend = openai(&server.url(""), timeouts());
    let mut seen = String::new();
    let mut sink = |t: &str| seen.push_str(t);
    let err = ragmap::llm::guard::chat_guarded(&backend, &messages(), &options(), &mut sink)
        .await
        .unwrap_err();
    match &err {
        LlmError::Repetition { what, partial } => {
            assert_eq!(partial, &line.repeat(3));
            assert!(what.contains("came 3 times"), "{what}");
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(seen, line.repeat(3));
    assert_eq!(err.exit_code(), ragmap::exit::LLM_REPEATING);
    assert!(!err.to_string().contains('\n'));
    // The request was dropped: the server stops writing long before its 6 s script ends.
    assert!(server.wait_closed(1, Duration::from_secs(3)).await);

    // A run of words repeated within one line is stopped too.
    let words = "the model answers from the retrieved passages and then ";
    let server = ScriptedServer::replies(vec![openai_stream(&[&words.repeat(6)])]);
    let backend = openai(&server.url(""), timeouts());
    let mut sink = |_: &str| {};
    let err = ragmap::llm::guard::chat_guarded(&backend, &messages(), &options(), &mut sink)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::Repetition { what, .. } if what.contains("came 4 times")),
        "{err:?}"
    );

    // An answer that does not repeat itself comes through whole.
    let server = ScriptedServer::replies(vec![openai_stream(&[
        "LoRA freezes the weights [1].\n",
        "It trains two small matrices per layer [2].\n",
    ])]);
    let backend = openai(&server.url(""), timeouts());
    let out = ragmap::llm::guard::chat_guarded(&backend, &messages(), &options(), &mut sink)
        .await
        .unwrap();
    assert_eq!(out.text.lines().count(), 2);
}
