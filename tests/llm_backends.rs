//! Both chat backends against an in-process HTTP/1.1 server whose every byte each test
//! scripts: the protocol details real servers produce (role-only first delta, usage
//! chunk with `choices: []`, CRLF, keep-alives, multi-line data, chunked encoding) and
//! the failures (HTTP errors with JSON bodies, cut and malformed streams, slow or
//! stalled servers, nothing listening, unknown host).

use std::time::{Duration, Instant};

use ragmap::config::{Config, Provider};
use ragmap::llm::{
    backend_from_config, ChatBackend, ChatMessage, ChatOptions, LlmError, OllamaBackend,
    OpenAiBackend, Timeouts,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------- scripted server

enum Step {
    /// Raw bytes (the response head, or a body without chunked framing).
    Raw(Vec<u8>),
    /// One chunk of a `Transfer-Encoding: chunked` body.
    Chunk(Vec<u8>),
    /// The chunked body's terminator.
    End,
    Sleep(u64),
}

use Step::*;

fn chunk(s: &str) -> Step {
    Chunk(s.as_bytes().to_vec())
}

fn head(status: &str, content_type: &str) -> Step {
    Raw(format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes())
}

fn sse_head() -> Step {
    head("200 OK", "text/event-stream; charset=utf-8")
}

fn json_response(status: &str, body: &str) -> Vec<Step> {
    vec![Raw(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )]
}

/// An OpenAI stream chunk carrying a content delta.
fn delta(text: &str) -> String {
    format!(
        "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n",
        serde_json::to_string(text).unwrap()
    )
}

#[derive(Debug)]
struct Request {
    head: String,
    body: serde_json::Value,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

struct Server {
    url: String,
    task: JoinHandle<Vec<Request>>,
}

impl Server {
    /// Serves one connection per script, in order.
    async fn start(scripts: Vec<Vec<Step>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut requests = Vec::new();
            for script in scripts {
                let (mut sock, _) = listener.accept().await.unwrap();
                requests.push(read_request(&mut sock).await);
                for step in script {
                    let res = match step {
                        Raw(b) => sock.write_all(&b).await,
                        Chunk(b) => {
                            let mut framed = format!("{:x}\r\n", b.len()).into_bytes();
                            framed.extend_from_slice(&b);
                            framed.extend_from_slice(b"\r\n");
                            sock.write_all(&framed).await
                        }
                        End => sock.write_all(b"0\r\n\r\n").await,
                        Sleep(ms) => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            Ok(())
                        }
                    };
                    if res.is_err() || sock.flush().await.is_err() {
                        break;
                    }
                }
                let _ = sock.shutdown().await;
            }
            requests
        });
        Server { url, task }
    }

    async fn requests(self) -> Vec<Request> {
        self.task.await.unwrap()
    }
}

async fn read_request(sock: &mut TcpStream) -> Request {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut tmp).await.unwrap();
        assert!(n > 0, "client closed before sending a request");
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut tmp).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&tmp[..n]);
    }
    let body =
        serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(serde_json::Value::Null);
    Request { head, body }
}

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
    let server = Server::start(vec![vec![
        sse_head(),
        chunk(": keep-alive\r\n\r\n"),
        chunk(role_only),
        chunk(&delta("Hel").replace("\n\n", "\r\n\r\n")),
        // One event split across two chunks, with its JSON over two data lines.
        chunk("data: {\"choices\":[{\"index\":0,\n"),
        chunk("data: \"delta\":{\"content\":\"lo\"}}]}\n\n: ping\n\n"),
        chunk(&delta(", world")),
        chunk(finish),
        chunk(usage),
        chunk("data: [DONE]\r\n\r\n"),
        End,
    ]])
    .await;
    let backend = openai(&server.url, timeouts());
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

    let reqs = server.requests().await;
    let req = &reqs[0];
    assert!(
        req.head.starts_with("POST /v1/chat/completions "),
        "{}",
        req.head
    );
    assert_eq!(
        req.header("authorization").as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(req.body["stream"], true);
    assert_eq!(req.body["stream_options"]["include_usage"], true);
    assert_eq!(req.body["model"], "smollm2");
    assert_eq!(req.body["max_tokens"], 64);
    assert_eq!(req.body["temperature"], 0.0);
    assert_eq!(req.body["messages"][0]["role"], "system");
    assert_eq!(req.body["messages"][1]["content"], "Say hello.");
}

#[tokio::test]
async fn openai_reassembles_utf8_split_across_network_chunks() {
    let event = delta("你好, 世界 😀");
    let bytes = event.as_bytes();
    let cut1 = event.find('你').unwrap() + 1; // inside 你
    let cut2 = event.find('😀').unwrap() + 2; // inside the emoji
    let server = Server::start(vec![vec![
        sse_head(),
        Chunk(bytes[..cut1].to_vec()),
        Sleep(20),
        Chunk(bytes[cut1..cut2].to_vec()),
        Sleep(20),
        Chunk(bytes[cut2..].to_vec()),
        chunk("data: [DONE]\n\n"),
        End,
    ]])
    .await;
    let (res, _) = chat(&openai(&server.url, timeouts())).await;
    assert_eq!(res.unwrap().text, "你好, 世界 😀");
}

#[tokio::test]
async fn openai_accepts_end_after_finish_reason_without_done() {
    let finish = "data: {\"choices\":[{\"finish_reason\":\"length\",\"index\":0,\"delta\":{\"content\":\"!\"}}]}";
    let server = Server::start(vec![vec![
        sse_head(),
        chunk(&delta("Hi")),
        chunk(finish),
        End,
    ]])
    .await;
    let (res, _) = chat(&openai(&server.url, timeouts())).await;
    let out = res.unwrap();
    assert_eq!(out.text, "Hi!");
    assert!(out.truncated());
    assert_eq!(out.usage, None);
}

#[tokio::test]
async fn openai_retries_without_stream_options_when_rejected() {
    let server = Server::start(vec![
        json_response(
            "400 Bad Request",
            r#"{"error":{"message":"Unrecognized request argument supplied: stream_options","type":"invalid_request_error"}}"#,
        ),
        vec![sse_head(), chunk(&delta("ok")), chunk("data: [DONE]\n\n"), End],
    ])
    .await;
    let (res, _) = chat(&openai(&server.url, timeouts())).await;
    assert_eq!(res.unwrap().text, "ok");
    let reqs = server.requests().await;
    assert!(reqs[0].body.get("stream_options").is_some());
    assert!(reqs[1].body.get("stream_options").is_none());
}

#[tokio::test]
async fn openai_accepts_a_non_streamed_json_answer() {
    let body = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"whole"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;
    let server = Server::start(vec![json_response("200 OK", body)]).await;
    let (res, seen) = chat(&openai(&server.url, timeouts())).await;
    let out = res.unwrap();
    assert_eq!((out.text.as_str(), seen.len()), ("whole", 1));
    assert_eq!(out.usage.unwrap().prompt_tokens, Some(5));
}

// ---------------------------------------------------------------- OpenAI: failures

#[tokio::test]
async fn openai_stream_cut_mid_answer_keeps_the_partial_text() {
    // Chunked body that never terminates: the connection just closes.
    let server = Server::start(vec![vec![
        sse_head(),
        chunk(&delta("The answer ")),
        chunk(&delta("is")),
    ]])
    .await;
    let (res, seen) = chat(&openai(&server.url, timeouts())).await;
    let err = res.unwrap_err();
    assert!(matches!(err, LlmError::Cut { .. }), "{err:?}");
    assert_eq!(err.partial_text(), Some("The answer is"));
    assert_eq!(seen.concat(), "The answer is");
    assert_no_key(&err);

    // A complete HTTP body that simply lacks [DONE] and any finish_reason.
    let server = Server::start(vec![vec![sse_head(), chunk(&delta("half")), End]]).await;
    let (res, _) = chat(&openai(&server.url, timeouts())).await;
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
        ("401 Unauthorized", format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}","type":"invalid_request_error","code":"invalid_api_key"}}}}"#)),
        ("404 Not Found", r#"{"error":{"message":"The model `smollm2` does not exist or you do not have access to it.","type":"invalid_request_error","code":"model_not_found"}}"#.to_string()),
        ("429 Too Many Requests", r#"{"error":{"message":"Rate limit reached, retry in 20s","type":"requests","code":"rate_limit_exceeded"}}"#.to_string()),
        ("500 Internal Server Error", r#"{"error":"boom: out of memory"}"#.to_string()),
        ("400 Bad Request", r#"{"error":{"code":400,"message":"request (3000 tokens) exceeds the available context size (2048 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":3000,"n_ctx":2048}}"#.to_string()),
        ("404 Not Found", "404 page not found".to_string()),
    ];
    let server = Server::start(cases.iter().map(|(s, b)| json_response(s, b)).collect()).await;
    let backend = openai(&server.url, timeouts());
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
    let server = Server::start(vec![vec![
        sse_head(),
        chunk(&delta("ok ")),
        chunk("data: {\"choices\":[{\"delta\":\n\n"),
        End,
    ]])
    .await;
    let (res, _) = chat(&openai(&server.url, timeouts())).await;
    let err = res.unwrap_err();
    assert!(matches!(err, LlmError::Malformed { .. }), "{err:?}");
    assert_eq!(err.partial_text(), Some("ok "));
}

#[tokio::test]
async fn openai_error_event_mid_stream_is_a_server_error() {
    let server = Server::start(vec![vec![
        sse_head(),
        chunk(&delta("part")),
        chunk("data: {\"error\":{\"message\":\"slot unavailable\",\"type\":\"server_error\"}}\n\n"),
        End,
    ]])
    .await;
    let (res, _) = chat(&openai(&server.url, timeouts())).await;
    let err = res.unwrap_err();
    assert!(
        matches!(&err, LlmError::Server { message, partial } if message == "slot unavailable" && partial == "part"),
        "{err:?}"
    );
}

#[tokio::test]
async fn openai_html_page_is_refused_clearly() {
    let server = Server::start(vec![vec![
        head("200 OK", "text/html"),
        chunk("<html>login</html>"),
        End,
    ]])
    .await;
    let (res, _) = chat(&openai(&server.url, timeouts())).await;
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
    let mut script = vec![sse_head(), chunk(role_only)];
    for _ in 0..30 {
        script.push(Sleep(100));
        script.push(chunk(": keep-alive\n\n"));
    }
    // Headers never come.
    let server = Server::start(vec![script, vec![Sleep(5000)]]).await;
    let backend = openai(&server.url, short_timeouts());
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
    let server = Server::start(vec![vec![
        sse_head(),
        chunk(&delta("so far")),
        Sleep(5000),
        chunk(&delta("late")),
    ]])
    .await;
    let started = Instant::now();
    let (res, seen) = chat(&openai(&server.url, short_timeouts())).await;
    let err = res.unwrap_err();
    assert!(matches!(err, LlmError::Stalled { .. }), "{err:?}");
    assert_eq!(err.partial_text(), Some("so far"));
    assert_eq!(seen, ["so far"]);
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
async fn connection_refused_is_reported_fast() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
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
    let mut script = vec![sse_head(), chunk(&delta("first"))];
    for _ in 0..50 {
        script.push(Sleep(100));
        script.push(chunk(&delta(" more")));
    }
    let server = Server::start(vec![script]).await;
    let backend = openai(&server.url, timeouts());
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
    tokio::time::timeout(Duration::from_secs(3), server.requests())
        .await
        .expect("server still writing");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn ping_answers_quickly() {
    let server = Server::start(vec![
        json_response("200 OK", r#"{"object":"list","data":[{"id":"m"}]}"#),
        vec![Sleep(3000)],
    ])
    .await;
    let backend = openai(&server.url, timeouts());
    backend.ping(Duration::from_secs(1)).await.unwrap();
    let started = Instant::now();
    let err = backend.ping(Duration::from_millis(300)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{err:?}");
    let reqs = server.requests().await;
    assert!(reqs[0].head.starts_with("GET /v1/models "));
}

// ---------------------------------------------------------------- from config

#[tokio::test]
async fn backend_from_config_uses_provider_url_and_key_variable() {
    let server = Server::start(vec![vec![
        sse_head(),
        chunk(&delta("cfg")),
        chunk("data: [DONE]\n\n"),
        End,
    ]])
    .await;
    let mut config = Config::default();
    config.llm.base_url = Some(format!("{}/v1/", server.url));
    // Cargo sets CARGO_PKG_NAME for test runs: a key variable that exists without set_var.
    config.llm.api_key_env = "CARGO_PKG_NAME".into();
    config.llm.model = "from-config".into();
    let backend = backend_from_config(&config).unwrap();
    assert_eq!(backend.provider(), Provider::Openai);
    assert_eq!(backend.base_url(), format!("{}/v1", server.url));
    let mut sink = |_: &str| {};
    let out = backend
        .chat(&messages(), &ChatOptions::from_config(&config), &mut sink)
        .await
        .unwrap();
    assert_eq!(out.text, "cfg");
    let reqs = server.requests().await;
    assert_eq!(
        reqs[0].header("authorization").as_deref(),
        Some("Bearer ragmap")
    );
    assert_eq!(reqs[0].body["model"], "from-config");
    assert_eq!(reqs[0].body["max_tokens"], 512);

    let mut config = Config::default();
    config.llm.provider = Provider::Ollama;
    config.llm.base_url = Some("http://127.0.0.1:11999".into());
    let backend = backend_from_config(&config).unwrap();
    assert_eq!(backend.provider(), Provider::Ollama);
}

// ---------------------------------------------------------------- Ollama

fn ndjson_head() -> Step {
    head("200 OK", "application/x-ndjson")
}

fn ollama_line(text: &str) -> String {
    format!(
        "{{\"model\":\"qwen\",\"created_at\":\"2025-01-01T00:00:00Z\",\"message\":{{\"role\":\"assistant\",\"content\":{}}},\"done\":false}}\n",
        serde_json::to_string(text).unwrap()
    )
}

const OLLAMA_DONE: &str = "{\"model\":\"qwen\",\"created_at\":\"2025-01-01T00:00:01Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\",\"done\":true,\"total_duration\":1000,\"prompt_eval_count\":26,\"eval_count\":4}\n";

fn ollama(url: &str, t: Timeouts) -> OllamaBackend {
    OllamaBackend::new(url, t).unwrap()
}

#[tokio::test]
async fn ollama_streams_ndjson() {
    let line = ollama_line("世界");
    let split = line.find('世').unwrap() + 1;
    let server = Server::start(vec![vec![
        ndjson_head(),
        chunk(&ollama_line("Hello")),
        Chunk(line.as_bytes()[..split].to_vec()),
        Chunk(line.as_bytes()[split..].to_vec()),
        chunk("\r\n"),
        chunk(OLLAMA_DONE),
        End,
    ]])
    .await;
    let (res, seen) = chat(&ollama(&server.url, timeouts())).await;
    let out = res.unwrap();
    assert_eq!(seen, ["Hello", "世界"]);
    assert_eq!(out.finish_reason.as_deref(), Some("stop"));
    let usage = out.usage.unwrap();
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (Some(26), Some(4))
    );
    let reqs = server.requests().await;
    assert!(reqs[0].head.starts_with("POST /api/chat "));
    assert_eq!(reqs[0].header("authorization"), None);
    assert_eq!(reqs[0].body["stream"], true);
    assert_eq!(reqs[0].body["options"]["num_predict"], 64);
    assert_eq!(reqs[0].body["options"]["num_ctx"], 2048);
    assert_eq!(reqs[0].body["options"]["temperature"], 0.0);
}

#[tokio::test]
async fn ollama_unknown_model_and_other_errors() {
    let server = Server::start(vec![
        json_response(
            "404 Not Found",
            r#"{"error":"model \"smollm2\" not found, try pulling it first"}"#,
        ),
        json_response(
            "500 Internal Server Error",
            r#"{"error":"llama runner process has terminated"}"#,
        ),
        vec![
            ndjson_head(),
            chunk(&ollama_line("par")),
            chunk("{\"error\":\"out of memory\"}\n"),
            End,
        ],
        vec![ndjson_head(), chunk(&ollama_line("cut"))],
        vec![
            ndjson_head(),
            chunk(&ollama_line("x")),
            chunk("not json\n"),
            End,
        ],
        vec![ndjson_head(), chunk(&ollama_line("stall")), Sleep(5000)],
    ])
    .await;
    let backend = ollama(&server.url, short_timeouts());
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = chat(&ollama(&format!("http://{addr}"), timeouts()))
        .await
        .0
        .unwrap_err();
    assert!(matches!(err, LlmError::ConnectionRefused { .. }), "{err:?}");

    let server = Server::start(vec![json_response("200 OK", r#"{"version":"0.5.7"}"#)]).await;
    ollama(&server.url, timeouts())
        .ping(Duration::from_secs(1))
        .await
        .unwrap();
    assert!(server.requests().await[0]
        .head
        .starts_with("GET /api/version "));
}
