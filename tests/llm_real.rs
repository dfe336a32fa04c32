//! The OpenAI-compatible backend against a real llama.cpp `llama-server` (SmolLM2-135M),
//! started by `scripts/llm-server start PORT` (scripts/test does this). The server is
//! found through RAGMAP_TEST_LLM_URL (e.g. http://127.0.0.1:PORT/v1). Without it these
//! tests are skipped with a message — except under CI=true, where that is a failure.

mod common;

use std::time::{Duration, Instant};

use common::{forward, llm_url, lora_passages, LlamaServer, Reply, ScriptedServer};
use ragmap::answer::{Answerer, Prepared};
use ragmap::config::{Config, Provider};
use ragmap::llm::guard::{chat_guarded, RepetitionGuard};
use ragmap::llm::sampling;
use ragmap::llm::{
    backend_from_config, ChatBackend, ChatMessage, ChatOptions, LlmError, Sampling, ServerKind,
};
use ragmap::query::Query;

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
    // Past the shipped config's 4096 tokens a slot (scripts/llm-server's -c) twice over:
    // the server refuses before it evaluates anything.
    let messages = [ChatMessage::user("word ".repeat(10_000))];
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

#[tokio::test]
async fn the_real_server_tells_its_context_and_sampling() {
    let Some(url) = llm_url() else { return };
    let info = backend(&url)
        .model_info("default", Duration::from_secs(3))
        .await
        .unwrap();
    eprintln!("llama-server says: {info:?}");
    assert_eq!(info.server, ServerKind::LlamaCpp);
    // What /props says, for the one slot the server runs.
    let props: serde_json::Value = reqwest::get(format!(
        "{}/props",
        url.trim_end_matches('/').trim_end_matches("/v1")
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let n_ctx = props["default_generation_settings"]["n_ctx"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(info.context_tokens, Some(n_ctx));
    // Started without sampling flags: ragmap's defaults apply.
    assert!(info.own_sampling.is_empty(), "{info:?}");
}

/// A prompt SmolLM2-135M answers by repeating a line at temperature 0 with
/// no penalties (found by trying; scripts/bench's answer section shows how
/// often it happens with real questions).
const LOOPING_PROMPT: &str = "Write a poem about the sea.";

#[tokio::test]
async fn the_guard_stops_smollm2_repeating_itself_and_the_default_sampling_avoids_it() {
    let Some(url) = llm_url() else { return };
    let backend = backend(&url);
    let messages = [ChatMessage::user(LOOPING_PROMPT)];
    let mut plain = options("smollm2", 400);
    plain.sampling = Sampling {
        repeat_penalty: Some(1.0),
        dry_multiplier: Some(0.0),
        ..Sampling::default()
    };
    let mut seen = String::new();
    let mut sink = |t: &str| seen.push_str(t);
    let err = chat_guarded(backend.as_ref(), &messages, &plain, &mut sink)
        .await
        .unwrap_err();
    eprintln!("guard: {err}\n{seen}");
    let LlmError::Repetition { partial, .. } = &err else {
        panic!("expected the guard to stop the loop, got {err:?}")
    };
    assert_eq!(partial, &seen);
    // Stopped at the third time, not at the token limit: what came holds one
    // repetition and no more.
    let mut guard = RepetitionGuard::new();
    let cut = seen.rfind('\n').map_or(seen.len(), |i| i);
    assert!(guard.push(&seen[..cut]).is_none(), "stopped late: {seen}");
    assert_eq!(err.exit_code(), ragmap::exit::LLM_REPEATING);

    // The same request with ragmap's sampling for llama.cpp does not loop.
    // (It may still run to the token limit: over a 256-token window the
    // penalty drives this model into a list of "Aeon of …" lines, different
    // each time, that the guard rightly does not call a loop.)
    let mut tuned = plain.clone();
    tuned.sampling = Sampling::defaults_for(
        &backend
            .model_info("default", Duration::from_secs(3))
            .await
            .unwrap(),
    );
    assert_eq!(tuned.sampling.repeat_penalty, Some(1.1));
    let mut sink = |_: &str| {};
    let out = chat_guarded(backend.as_ref(), &messages, &tuned, &mut sink)
        .await
        .unwrap_or_else(|e| panic!("with penalties: {e}"));
    eprintln!("with penalties: {:?}", out.text);
    assert!(
        matches!(out.finish_reason.as_deref(), Some("stop" | "length")),
        "{:?}",
        out.finish_reason
    );
}

/// `question` over [`lora_passages`], fitted as every answer is ([`Answerer::prepare_query`]).
async fn prepare(answerer: &Answerer, question: &str) -> Prepared {
    let passages = async |_: &Query| Ok::<_, std::convert::Infallible>(lora_passages(8, 12));
    let Ok(prepared) = answerer.prepare_query(Query::new(question), passages).await;
    prepared
}

#[tokio::test]
async fn a_small_context_server_refuses_once_and_the_prompt_is_refit_to_it() {
    // A real llama-server with 1024 tokens, behind a front that hides
    // /v1/models and /props: a server that does not tell its context
    // (as OpenAI does), so only its refusal can teach it.
    let Some(small) = LlamaServer::start(&[("LLAMA_CTX", "1024")]) else {
        return;
    };
    let port = small.port;
    let front = ScriptedServer::start(move |r| {
        if r.path.ends_with("/chat/completions") {
            forward(r, port)
        } else {
            Reply::json(404, r#"{"error":{"message":"File Not Found","code":404}}"#)
        }
    });
    let mut config = Config::default();
    config.llm.provider = Provider::Openai;
    config.llm.base_url = Some(front.url("/v1"));
    config.llm.max_answer_tokens = 64;
    config.llm.first_token_timeout_secs = 60.0;
    // The front hides what server it is, so only what the user set is sent:
    // set what a user of this model would.
    config.llm.repeat_penalty = Some(sampling::REPEAT_PENALTY);
    config.llm.dry_multiplier = Some(sampling::DRY_MULTIPLIER);
    let answerer = Answerer::from_config(&config, false).unwrap();
    let budget = answerer.budget().await;
    assert_eq!(budget.context_tokens, 4096, "nothing told");
    let mut prepared = prepare(&answerer, "What is LoRA?").await;
    let mut sink = |_: &str| {};
    let out = answerer
        .answer(&mut prepared, &[], &mut sink)
        .await
        .unwrap_or_else(|e| panic!("refit answer: {e}"));
    eprintln!("refit answer: {:?} usage {:?}", out.text, out.usage);
    assert!(!out.text.trim().is_empty());
    let chats: Vec<_> = front
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .collect();
    assert_eq!(chats.len(), 2, "one refusal, one retry");
    let prompt_tokens = out.usage.and_then(|u| u.prompt_tokens).unwrap();
    assert!(prompt_tokens + 64 <= 1024, "{prompt_tokens}");
    // The sources listed after the answer are the passages the retry carried.
    let shown = chats[1].json()["messages"].to_string();
    let sources = &prepared.prompt.sources;
    assert!(!sources.is_empty());
    assert_eq!(shown.matches("<source id=").count(), sources.len());
    // What was learnt stays: the next prompt fits at once.
    let budget = answerer.budget().await;
    assert!(budget.context_tokens <= 1024, "{budget:?}");
    let mut prepared = prepare(&answerer, "Why is LoRA cheap?").await;
    // A 135M model may still loop ("it is cheap because it is cheap because
    // …"): the guard stopping it is an answer here too. What counts is that
    // it took one request.
    match answerer.answer(&mut prepared, &[], &mut sink).await {
        Ok(_) | Err(LlmError::Repetition { .. }) => {}
        Err(e) => panic!("second answer: {e}"),
    }
    let chats = front
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .count();
    assert_eq!(chats, 3);
}

#[tokio::test]
async fn a_small_context_server_that_tells_gets_a_fitting_prompt_first_time() {
    let Some(small) = LlamaServer::start(&[("LLAMA_CTX", "1024")]) else {
        return;
    };
    // A front that passes everything on, and counts.
    let port = small.port;
    let front = ScriptedServer::start(move |r| forward(r, port));
    let mut config = Config::default();
    config.llm.provider = Provider::Openai;
    config.llm.base_url = Some(front.url("/v1"));
    config.llm.max_answer_tokens = 64;
    config.llm.first_token_timeout_secs = 60.0;
    let answerer = Answerer::from_config(&config, false).unwrap();
    let budget = answerer.budget().await;
    assert_eq!(budget.context_tokens, 1024);
    let mut prepared = prepare(&answerer, "What is LoRA?").await;
    let mut sink = |_: &str| {};
    let out = answerer
        .answer(&mut prepared, &[], &mut sink)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let prompt_tokens = out.usage.and_then(|u| u.prompt_tokens).unwrap();
    eprintln!(
        "estimated {} tokens, llama.cpp counted {prompt_tokens}",
        prepared.prompt.estimated_tokens
    );
    assert!(prompt_tokens + 64 <= 1024, "{prompt_tokens}");
    let paths: Vec<String> = front.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/models", "/props", "/v1/chat/completions"]);
}
