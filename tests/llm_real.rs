//! The OpenAI-compatible backend against a real llama.cpp `llama-server` (SmolLM2-135M),
//! started by `scripts/llm-server start PORT` (scripts/test does this). The server is
//! found through RAGMAP_TEST_LLM_URL (e.g. http://127.0.0.1:PORT/v1). Without it these
//! tests are skipped with a message — except under CI=true, where that is a failure.

mod common;

use std::time::{Duration, Instant};

use common::llm_url;
use ragmap::config::Config;
use ragmap::llm::{backend_from_config, ChatBackend, ChatMessage, ChatOptions, LlmError};

fn backend(url: &str) -> Box<dyn ChatBackend> {
    let mut config = Config::default();
    config.llm.base_url = Some(url.to_string());
    config.llm.first_token_timeout_secs = 60.0;
    config.llm.idle_timeout_secs = 30.0;
    backend_from_config(&config).unwrap()
}

fn options(model: &str, max_tokens: u32) -> ChatOptions {
    ChatOptions {
        model: model.into(),
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        ..ChatOptions::default()
    }
}

#[tokio::test]
async fn streams_a_real_answer_token_by_token() {
    let Some(url) = llm_url() else { return };
    let backend = backend(&url);
    backend.ping(Duration::from_secs(2)).await.unwrap();
    let messages = [
        ChatMessage::system("You are a helpful assistant. Answer briefly."),
        ChatMessage::user("Name three primary colors."),
    ];
    let mut seen: Vec<(Instant, String)> = Vec::new();
    let mut sink = |t: &str| seen.push((Instant::now(), t.to_string()));
    let started = Instant::now();
    let out = backend
        .chat(&messages, &options("smollm2", 48), &mut sink)
        .await
        .unwrap();
    let ttft = out.time_to_first_token.expect("a first token");
    eprintln!(
        "real llama-server: first token after {:.0} ms, {} deltas in {:.0} ms, finish {:?}, usage {:?}: {:?}",
        ttft.as_secs_f64() * 1000.0,
        out.deltas,
        out.elapsed.as_secs_f64() * 1000.0,
        out.finish_reason,
        out.usage,
        out.text
    );
    assert!(!out.text.trim().is_empty());
    assert!(
        out.deltas > 1,
        "expected a streamed answer, got {} delta(s)",
        out.deltas
    );
    assert_eq!(out.deltas, seen.len());
    assert_eq!(
        seen.iter().map(|(_, t)| t.as_str()).collect::<String>(),
        out.text
    );
    // Streamed, not delivered at the end: the first delta arrived well before the last.
    assert!(seen.last().unwrap().0 > seen.first().unwrap().0);
    assert!(ttft <= out.elapsed && started.elapsed() >= out.elapsed);
    assert!(
        matches!(out.finish_reason.as_deref(), Some("stop" | "length")),
        "{:?}",
        out.finish_reason
    );
    let usage = out
        .usage
        .expect("llama-server reports usage when include_usage is set");
    assert!(usage.prompt_tokens.unwrap() > 10);
    assert!((1..=48).contains(&usage.completion_tokens.unwrap()));
}

#[tokio::test]
async fn the_model_name_is_ignored_by_llama_server() {
    let Some(url) = llm_url() else { return };
    // llama-server serves its one model whatever the request names: no UnknownModel here
    // (Ollama and OpenAI answer 404 instead; see llm_backends.rs).
    let messages = [ChatMessage::user("Say hello.")];
    let mut sink = |_: &str| {};
    let out = backend(&url)
        .chat(&messages, &options("no-such-model-anywhere", 8), &mut sink)
        .await
        .unwrap();
    assert!(!out.text.is_empty());
}

#[tokio::test]
async fn an_over_long_prompt_is_a_clear_context_error() {
    let Some(url) = llm_url() else { return };
    let messages = [ChatMessage::user("word ".repeat(3000))];
    let mut sink = |_: &str| panic!("no token expected");
    let err = backend(&url)
        .chat(&messages, &options("smollm2", 8), &mut sink)
        .await
        .unwrap_err();
    eprintln!("over-long prompt: {err}");
    match &err {
        LlmError::ContextExceeded {
            prompt_tokens: Some(p),
            context_tokens: Some(c),
            ..
        } => assert!(p > c, "{err:?}"),
        e => panic!("expected ContextExceeded with counts, got {e:?}"),
    }
    assert!(err.to_string().contains("context"));
    assert!(!err.to_string().contains('\n'));
}

#[tokio::test]
async fn a_cancelled_answer_frees_the_server_for_the_next_question() {
    let Some(url) = llm_url() else { return };
    let backend = backend(&url);
    let long = [ChatMessage::user(
        "Count from 1 to 1000, separated by commas.",
    )];
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut tx = Some(tx);
    let mut sink = |_: &str| {
        if let Some(tx) = tx.take() {
            let _ = tx.send(());
        }
    };
    let opts = options("smollm2", 1500);
    tokio::select! {
        res = backend.chat(&long, &opts, &mut sink) => { res.unwrap(); }
        _ = rx => {}
    }
    // The server has a single slot (-np 1): had it kept generating the 1,500 tokens
    // (~30 s at this speed), this short request would wait for them.
    let started = Instant::now();
    let mut sink = |_: &str| {};
    let out = backend
        .chat(
            &[ChatMessage::user("Say hi.")],
            &options("smollm2", 8),
            &mut sink,
        )
        .await
        .unwrap();
    assert!(!out.text.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_wrong_base_url_is_not_mistaken_for_an_unknown_model() {
    let Some(url) = llm_url() else { return };
    // llama-server answers unknown paths with a JSON 404 ("File Not Found").
    let wrong = format!("{}/api", url.trim_end_matches('/').trim_end_matches("/v1"));
    let mut sink = |_: &str| {};
    let err = backend(&wrong)
        .chat(
            &[ChatMessage::user("hi")],
            &options("smollm2", 4),
            &mut sink,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::Http { status: 404, message, .. } if message.contains("base URL")),
        "{err:?}"
    );
}
