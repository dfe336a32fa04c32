//! The chat-model client layer: one streaming interface, two wire protocols.
//!
//! - [`openai`]: any OpenAI-compatible server (`POST {base}/chat/completions`, Server-Sent
//!   Events) — llama.cpp's `llama-server`, vLLM, LM Studio, Ollama's `/v1`, OpenAI itself.
//! - [`ollama`]: Ollama's native `POST {base}/api/chat` (newline-delimited JSON).
//!
//! [`backend_from_config`] picks one from `[llm]` in config.toml. [`ChatBackend::chat`]
//! calls a token callback as deltas arrive and returns a [`ChatOutcome`]; every failure is
//! a typed [`LlmError`] the caller can branch on (fall back when the server is
//! unreachable, show the partial answer when the stream was cut, …).
//!
//! Timeouts (all from config): `connect_timeout_secs` for the TCP/TLS connection;
//! `first_token_timeout_secs` from sending the request to the first content token
//! (covers the response headers, prompt processing and keep-alive comments);
//! `idle_timeout_secs` for silence between stream events once tokens flow.
//!
//! Cancellation (Ctrl-C): the future returned by `chat` may be dropped at any await
//! point; dropping it closes the connection, which makes the server stop generating.
//! Tokens already delivered to the callback stay delivered. Typical use:
//!
//! ```no_run
//! # async fn demo(backend: &dyn ragmap::llm::ChatBackend, msgs: &[ragmap::llm::ChatMessage], opts: &ragmap::llm::ChatOptions) {
//! let mut print = |t: &str| print!("{t}");
//! tokio::select! {
//!     res = backend.chat(msgs, opts, &mut print) => { let _ = res; }
//!     _ = tokio::signal::ctrl_c() => eprintln!("\n(interrupted)"),
//! }
//! # }
//! ```
//!
//! Model output is untrusted: pass it through [`crate::term::StreamSanitizer`] before
//! printing. The API key is read from the environment variable named by
//! `api_key_env`, sent only as an `Authorization: Bearer` header by the OpenAI
//! backend, redacted from server messages, and never shown by `Debug`.

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::config::{Config, Provider};

pub mod context;
pub mod guard;
mod http;
pub mod ollama;
pub mod openai;
pub mod sampling;
pub mod stream;

pub use context::{ModelInfo, Refusal, ServerKind};
pub use ollama::OllamaBackend;
pub use openai::OpenAiBackend;
pub use sampling::Sampling;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// Per-request options. `None` leaves the server's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatOptions {
    pub model: String,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    /// Context window to request. Only Ollama takes it (`num_ctx`; its default is
    /// small and silently truncates long prompts); OpenAI-compatible servers fix it.
    pub context_tokens: Option<u32>,
    /// Penalties against repetition (see [`sampling`]).
    pub sampling: Sampling,
}

impl ChatOptions {
    pub fn from_config(config: &Config) -> Self {
        let llm = &config.llm;
        ChatOptions {
            model: llm.model.clone(),
            temperature: Some(llm.temperature),
            max_tokens: u32::try_from(llm.max_answer_tokens).ok().filter(|&n| n > 0),
            context_tokens: u32::try_from(llm.context_tokens).ok().filter(|&n| n > 0),
            sampling: Sampling::configured(config).unwrap_or_default(),
        }
    }
}

/// Network time limits; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_token: Duration,
    pub idle: Duration,
}

impl Timeouts {
    pub fn from_config(config: &Config) -> Self {
        let secs = |s: f64, default: f64| {
            Duration::try_from_secs_f64(if s > 0.0 { s } else { default })
                .unwrap_or(Duration::from_secs(default as u64))
        };
        let llm = &config.llm;
        Timeouts {
            connect: secs(llm.connect_timeout_secs, 5.0),
            first_token: secs(llm.first_token_timeout_secs, 120.0),
            idle: secs(llm.idle_timeout_secs, 60.0),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::from_config(&Config::default())
    }
}

/// Token counts as reported by the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// A completed answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatOutcome {
    /// Everything the callback received, concatenated (unsanitized).
    pub text: String,
    /// `stop`, `length` (cut by max_tokens), …, when the server says.
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
    /// From sending the request to the first non-empty content delta.
    pub time_to_first_token: Option<Duration>,
    pub elapsed: Duration,
    /// Number of non-empty content deltas.
    pub deltas: usize,
    /// What repeated, when the stream guard stopped the answer and `text`
    /// is what it kept (see [`guard::kept`]).
    pub stopped: Option<String>,
    /// Citations of no source that [`crate::answer::Answerer::answer`] took
    /// out of `text` ([`crate::cite::CitationFilter`]).
    pub removed_citations: Vec<usize>,
}

impl ChatOutcome {
    /// The answer stopped at the token limit rather than naturally.
    pub fn truncated(&self) -> bool {
        self.finish_reason.as_deref() == Some("length")
    }
}

/// Why a chat failed. Display is one line; the API key never appears in it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    #[error("invalid LLM base URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot connect to {url}: connection refused (is the server running?)")]
    ConnectionRefused { url: String },
    #[error("cannot connect to {url}: unknown host {host:?}")]
    UnknownHost { url: String, host: String },
    #[error("cannot connect to {url}: no connection within {:.1} s", .after.as_secs_f64())]
    ConnectTimeout { url: String, after: Duration },
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("no answer from {url} within {:.1} s (first-token timeout)", .after.as_secs_f64())]
    FirstTokenTimeout { url: String, after: Duration },
    #[error("the answer stalled: nothing received for {:.1} s ({} characters received)", .after.as_secs_f64(), .partial.chars().count())]
    Stalled { after: Duration, partial: String },
    #[error("{url} answered HTTP {status}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
    #[error("unknown model {model:?}: {message}")]
    UnknownModel { model: String, message: String },
    #[error("the prompt is too long for the model's context: {message}")]
    ContextExceeded {
        message: String,
        prompt_tokens: Option<u64>,
        context_tokens: Option<u64>,
    },
    #[error("the server reported an error mid-answer: {message} ({} characters received)", .partial.chars().count())]
    Server { message: String, partial: String },
    #[error("malformed response from the server: {reason} ({} characters received)", .partial.chars().count())]
    Malformed { reason: String, partial: String },
    #[error("the answer was cut off: {reason} ({} characters received)", .partial.chars().count())]
    Cut { reason: String, partial: String },
    /// The stream guard stopped an answer that kept repeating itself (see [`guard`]).
    #[error("the answer was stopped because it kept repeating itself: {what} ({} characters kept)", .partial.chars().count())]
    Repetition { what: String, partial: String },
}

impl LlmError {
    /// The text received before a mid-stream failure (already passed to the callback).
    pub fn partial_text(&self) -> Option<&str> {
        match self {
            LlmError::Stalled { partial, .. }
            | LlmError::Server { partial, .. }
            | LlmError::Malformed { partial, .. }
            | LlmError::Cut { partial, .. }
            | LlmError::Repetition { partial, .. } => Some(partial),
            _ => None,
        }
    }

    /// The partial text replaced by `shown`, where the error carries one
    /// (what a filter between the model and the reader let through).
    pub(crate) fn with_partial(mut self, shown: &str) -> LlmError {
        match &mut self {
            LlmError::Stalled { partial, .. }
            | LlmError::Server { partial, .. }
            | LlmError::Malformed { partial, .. }
            | LlmError::Cut { partial, .. }
            | LlmError::Repetition { partial, .. } => *partial = shown.to_string(),
            _ => {}
        }
        self
    }

    /// Nothing answers at the configured address: the caller may fall back to
    /// printing the retrieved passages.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            LlmError::ConnectionRefused { .. }
                | LlmError::UnknownHost { .. }
                | LlmError::ConnectTimeout { .. }
                | LlmError::Connect { .. }
        )
    }

    /// Unreachable: the passages were printed instead; a loop the guard
    /// stopped; else the model failed.
    pub fn exit_code(&self) -> u8 {
        if self.is_unreachable() {
            crate::exit::LLM_UNREACHABLE
        } else if matches!(self, LlmError::Repetition { .. }) {
            crate::exit::LLM_REPEATING
        } else {
            crate::exit::LLM_FAILED
        }
    }

    /// HTTP status, when the server answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            LlmError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Receives each content delta as it arrives.
pub type TokenSink<'a> = dyn FnMut(&str) + Send + 'a;

/// A chat model server speaking one protocol.
pub trait ChatBackend: Send + Sync + std::fmt::Debug {
    fn provider(&self) -> Provider;

    /// The base URL requests go to (no trailing slash; any user:password hidden).
    fn base_url(&self) -> &str;

    /// Streams an answer: `on_token` gets every non-empty content delta in order.
    /// Dropping the future cancels the request (see the module docs).
    fn chat<'a>(
        &'a self,
        messages: &'a [ChatMessage],
        options: &'a ChatOptions,
        on_token: &'a mut TokenSink<'_>,
    ) -> BoxFuture<'a, Result<ChatOutcome, LlmError>>;

    /// Cheap liveness check, bounded by `timeout`: `Ok` when an HTTP server answers at
    /// the base URL (any status below 500 except 401/403, which mean chats would fail).
    /// Errors are those of `chat`; a server that accepts the connection but does not
    /// answer within `timeout` gives `FirstTokenTimeout` (`after` = `timeout`).
    fn ping(&self, timeout: Duration) -> BoxFuture<'_, Result<(), LlmError>>;

    /// The model ids the server offers (`GET /models`, Ollama's `/api/tags`),
    /// in the server's order, the whole exchange bounded by `timeout`.
    fn models(&self, timeout: Duration) -> BoxFuture<'_, Result<Vec<String>, LlmError>>;

    /// What the server says about `model`: its context window, the kind of
    /// server, the sampling it sets itself (see [`context`]); the whole
    /// exchange bounded by `timeout`. A server that says nothing gives an
    /// empty [`ModelInfo`]; errors are those of `chat` when nothing answered.
    fn model_info<'a>(
        &'a self,
        model: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ModelInfo, LlmError>>;
}

/// `err` with the models the server has, when it says the model is unknown:
/// the user sees what to pass to `--model` instead.
pub async fn explain_unknown_model(backend: &dyn ChatBackend, err: LlmError) -> LlmError {
    let LlmError::UnknownModel { model, message } = err else {
        return err;
    };
    let message = match backend.models(Duration::from_secs(5)).await {
        Ok(ids) if !ids.is_empty() => {
            const SHOWN: usize = 20;
            let mut list = ids
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if ids.len() > SHOWN {
                list.push_str(&format!(", … ({} in all; ragmap models)", ids.len()));
            }
            format!("{message}; the server has: {list} (pass one with -m)")
        }
        Ok(_) => format!("{message}; the server lists no models"),
        Err(_) => format!("{message}; `ragmap models` lists what the server has"),
    };
    LlmError::UnknownModel { model, message }
}

/// The backend `[llm]` configures: provider, base URL (`Config::llm_base_url`, which
/// honours `RAGMAP_LLM_URL` and `OLLAMA_HOST`), timeouts and, for OpenAI-compatible
/// servers, the API key from the environment variable named by `api_key_env`.
pub fn backend_from_config(config: &Config) -> Result<Box<dyn ChatBackend>, LlmError> {
    let base = config.llm_base_url();
    let timeouts = Timeouts::from_config(config);
    Ok(match config.llm.provider {
        // Unresolved (see `resolve_auto`): the configured or default OpenAI-style endpoint.
        Provider::Auto | Provider::Openai => {
            let key = std::env::var(&config.llm.api_key_env)
                .ok()
                .filter(|k| !k.trim().is_empty());
            Box::new(OpenAiBackend::new(&base, key, timeouts)?)
        }
        Provider::Ollama => Box::new(OllamaBackend::new(&base, timeouts)?),
    })
}

/// `provider = "auto"` made definite: with an endpoint configured, that
/// endpoint as OpenAI-compatible, asking nothing; else the first local server
/// that lists its models, an OpenAI-compatible one on 127.0.0.1:8080, then
/// Ollama at `OLLAMA_HOST` (or 127.0.0.1:11434), taking one of its chat
/// models when `[llm] model` is not set. Returns the line that says what was
/// picked, when something was; with nothing answering, the OpenAI default
/// stays and the caller reports it unreachable as before.
pub async fn resolve_auto(config: &mut Config) -> Option<String> {
    if config.llm.provider != Provider::Auto {
        return None;
    }
    config.llm.provider = Provider::Openai;
    if config.llm_endpoint_configured() {
        return None;
    }
    let probe = Timeouts {
        connect: Duration::from_millis(800),
        first_token: Duration::from_secs(2),
        idle: Duration::from_secs(2),
    };
    let limit = Duration::from_secs(2);
    let model_unset = config.origin("llm.model") == crate::config::Origin::Default;
    let openai_url = config.llm_base_url();
    let key = std::env::var(&config.llm.api_key_env)
        .ok()
        .filter(|k| !k.trim().is_empty());
    let mut picked: Option<(Provider, String, Vec<String>)> = None;
    if let Ok(backend) = OpenAiBackend::new(&openai_url, key, probe) {
        if let Ok(ids) = backend.models(limit).await {
            picked = Some((Provider::Openai, openai_url, ids));
        }
    }
    if picked.is_none() {
        config.llm.provider = Provider::Ollama;
        let ollama_url = config.llm_base_url();
        config.llm.provider = Provider::Openai;
        if let Ok(backend) = OllamaBackend::new(&ollama_url, probe) {
            if let Ok(ids) = backend.models(limit).await {
                picked = Some((Provider::Ollama, ollama_url, ids));
            }
        }
    }
    let (provider, url, ids) = picked?;
    config.llm.provider = provider;
    let mut how = "configured";
    if model_unset {
        if let Some(model) = chat_model(&ids) {
            config.llm.model = model.to_string();
            how = "the first chat model it lists";
        }
    }
    let server = match provider {
        Provider::Ollama => "Ollama",
        _ => "an OpenAI-compatible server",
    };
    Some(format!(
        "answering with {server} at {url}, model {:?} ({how}; provider auto)",
        config.llm.model
    ))
}

/// The first model of a list that is not an embedding model (Ollama lists
/// those beside chat models, most recently pulled first).
pub fn chat_model(ids: &[String]) -> Option<&str> {
    const EMBEDDING: &[&str] = &["embed", "bge-", "bge:", "minilm", "e5-", "gte-", "rerank"];
    ids.iter().map(String::as_str).find(|id| {
        let lower = id.to_ascii_lowercase();
        !EMBEDDING.iter().any(|m| lower.contains(m))
    })
}

/// Bookkeeping shared by both backends while one answer streams in.
pub(crate) struct Run<'a, 'b> {
    on_token: &'a mut TokenSink<'b>,
    start: Instant,
    last_event: Instant,
    text: String,
    deltas: usize,
    first_token: Option<Duration>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

impl<'a, 'b> Run<'a, 'b> {
    pub(crate) fn new(on_token: &'a mut TokenSink<'b>) -> Self {
        let now = Instant::now();
        Run {
            on_token,
            start: now,
            last_event: now,
            text: String::new(),
            deltas: 0,
            first_token: None,
            finish_reason: None,
            usage: None,
        }
    }

    /// A protocol event (not a keep-alive) arrived: the idle timer restarts.
    pub(crate) fn event(&mut self) {
        self.last_event = Instant::now();
    }

    pub(crate) fn token(&mut self, delta: &str) {
        if delta.is_empty() {
            return;
        }
        if self.first_token.is_none() {
            self.first_token = Some(self.start.elapsed());
        }
        self.deltas += 1;
        self.text.push_str(delta);
        (self.on_token)(delta);
    }

    pub(crate) fn finish_reason(&mut self, reason: Option<String>) {
        if let Some(r) = reason.filter(|r| !r.is_empty()) {
            self.finish_reason = Some(r);
        }
    }

    pub(crate) fn has_finish_reason(&self) -> bool {
        self.finish_reason.is_some()
    }

    pub(crate) fn usage(&mut self, usage: Usage) {
        if usage != Usage::default() {
            self.usage = Some(usage);
        }
    }

    pub(crate) fn progress(&self) -> http::Progress<'_> {
        http::Progress {
            got_token: self.first_token.is_some(),
            last_event: self.last_event,
            text: &self.text,
        }
    }

    pub(crate) fn partial(&self) -> String {
        self.text.clone()
    }

    pub(crate) fn outcome(self) -> ChatOutcome {
        ChatOutcome {
            text: self.text,
            finish_reason: self.finish_reason,
            usage: self.usage,
            time_to_first_token: self.first_token,
            elapsed: self.start.elapsed(),
            deltas: self.deltas,
            stopped: None,
            removed_citations: Vec::new(),
        }
    }
}
