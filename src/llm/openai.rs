//! OpenAI-compatible chat completions: `POST {base}/chat/completions` with
//! `stream: true`, answered as Server-Sent Events (`data: {json}` … `data: [DONE]`).
//!
//! Lenient about what servers actually send: a first delta with only a role, `content:
//! null`, a usage-only chunk with `choices: []` (requested with
//! `stream_options.include_usage`; a server that rejects that option gets the request
//! again without it), extra fields, keep-alive comments, and a stream that ends after a
//! `finish_reason` without `[DONE]`. A plain JSON completion (server ignored `stream`)
//! is accepted too.

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use serde::Deserialize;
use serde_json::json;

use super::http::{self, ApiKey, Body, Endpoint};
use super::stream::SseParser;
use super::{
    ChatBackend, ChatMessage, ChatOptions, ChatOutcome, LlmError, ModelInfo, Run, ServerKind,
    Timeouts, TokenSink, Usage,
};
use crate::config::Provider;

/// The chat request: streamed, with usage in the last chunk.
fn request_body(messages: &[ChatMessage], options: &ChatOptions) -> serde_json::Value {
    let mut body = json!({
        "model": options.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(t) = options.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(n) = options.max_tokens {
        body["max_tokens"] = json!(n);
    }
    for (name, value) in options.sampling.fields() {
        body[name] = value;
    }
    body
}

#[derive(Debug)]
pub struct OpenAiBackend {
    endpoint: Endpoint,
    api_key: Option<ApiKey>,
}

impl OpenAiBackend {
    /// `base_url` is the API root, e.g. `http://127.0.0.1:8080/v1`. `api_key`, when
    /// given, is sent as `Authorization: Bearer`.
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        timeouts: Timeouts,
    ) -> Result<Self, LlmError> {
        Ok(OpenAiBackend {
            endpoint: Endpoint::new(base_url, timeouts)?,
            api_key: api_key.filter(|k| !k.is_empty()).map(ApiKey::new),
        })
    }

    /// The key as a bearer token, marked sensitive so it never shows in logs.
    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let Some(key) = &self.api_key else {
            return req;
        };
        match HeaderValue::from_str(&format!("Bearer {}", key.expose())) {
            Ok(mut value) => {
                value.set_sensitive(true);
                req.header(AUTHORIZATION, value)
            }
            Err(_) => req,
        }
    }

    fn request(&self, url: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.authorized(
            self.endpoint
                .client
                .post(url)
                .header(ACCEPT, "text/event-stream")
                .json(body),
        )
    }

    async fn chat_impl(
        &self,
        messages: &[ChatMessage],
        options: &ChatOptions,
        on_token: &mut TokenSink<'_>,
    ) -> Result<ChatOutcome, LlmError> {
        let url = self.endpoint.url("/chat/completions");
        let timeouts = self.endpoint.timeouts;
        let run = Run::new(on_token);
        let start = run.start;
        let deadline = start + timeouts.first_token;
        let resp = self
            .open(
                &url,
                request_body(messages, options),
                &options.model,
                deadline,
            )
            .await?;
        let content_type = http::content_type(resp.headers());
        let mut body = Body::new(resp, &self.endpoint.shown(&url), timeouts, start);
        if content_type.starts_with("application/json") {
            return self.whole_json(&mut body, run).await;
        }
        if content_type.starts_with("text/html") {
            return Err(LlmError::Malformed {
                reason: format!(
                    "expected an event stream, got {content_type} (is the base URL right?)"
                ),
                partial: String::new(),
            });
        }
        self.read_stream(&mut body, run).await
    }

    /// Sends the chat request and checks its status. A server that rejects
    /// `stream_options` gets the request again without it.
    async fn open(
        &self,
        url: &str,
        mut body: serde_json::Value,
        model: &str,
        deadline: Instant,
    ) -> Result<reqwest::Response, LlmError> {
        let resp = self.send(url, &body, deadline).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let err = self.error_response(resp, url, model).await;
        let rejects_option = matches!(&err, LlmError::Http { status: 400 | 422, message, .. }
            if message.contains("stream_options") || message.contains("include_usage"));
        if !rejects_option {
            return Err(err);
        }
        if let Some(o) = body.as_object_mut() {
            o.remove("stream_options");
        }
        let resp = self.send(url, &body, deadline).await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(self.error_response(resp, url, model).await)
        }
    }

    async fn send(
        &self,
        url: &str,
        body: &serde_json::Value,
        deadline: Instant,
    ) -> Result<reqwest::Response, LlmError> {
        let first_token = self.endpoint.timeouts.first_token;
        self.endpoint
            .send(self.request(url, body), url, deadline, first_token)
            .await
    }

    async fn error_response(&self, resp: reqwest::Response, url: &str, model: &str) -> LlmError {
        http::error_response(
            resp,
            &self.endpoint.shown(url),
            model,
            self.api_key.as_ref(),
            self.endpoint.timeouts.idle,
        )
        .await
    }

    /// Reads the event stream up to `[DONE]`; a stream that just ends is
    /// complete only after a finish reason.
    async fn read_stream(
        &self,
        body: &mut Body,
        mut run: Run<'_, '_>,
    ) -> Result<ChatOutcome, LlmError> {
        let mut parser = SseParser::new();
        let mut done = false;
        while !done {
            let Some(chunk) = body.next(run.progress()).await? else {
                break;
            };
            let events = parser.push(&chunk).map_err(|e| LlmError::Malformed {
                reason: e.to_string(),
                partial: run.partial(),
            })?;
            for event in events {
                if self.handle_event(&event.event, &event.data, &mut run)? {
                    done = true;
                    break;
                }
            }
        }
        if !done {
            if let Some(event) = parser.finish() {
                done = self.handle_event(&event.event, &event.data, &mut run)?;
            }
        }
        if !done && !run.has_finish_reason() {
            return Err(LlmError::Cut {
                reason: "the stream ended before [DONE]".into(),
                partial: run.partial(),
            });
        }
        Ok(run.outcome())
    }

    /// Handles one SSE event; `true` at `[DONE]`.
    fn handle_event(
        &self,
        event: &str,
        data: &str,
        run: &mut Run<'_, '_>,
    ) -> Result<bool, LlmError> {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        run.event();
        let chunk: StreamChunk = match serde_json::from_str(data) {
            Ok(c) => c,
            Err(e) if event == "error" => {
                return Err(self.server_error(&http::one_line(&format!("{data} ({e})")), run))
            }
            Err(e) => {
                return Err(LlmError::Malformed {
                    reason: format!(
                        "a stream event is not a JSON chunk ({e}): {}",
                        http::one_line(http::truncate(data, 120))
                    ),
                    partial: run.partial(),
                })
            }
        };
        if let Some(err) = chunk.error.filter(|e| !e.is_null()) {
            let info = http::parse_error_body(err_body(&err).as_bytes());
            return Err(self.server_error(&info.message, run));
        }
        if event == "error" {
            return Err(self.server_error(&http::one_line(data), run));
        }
        if let Some(choice) = chunk.choices.unwrap_or_default().into_iter().next() {
            if let Some(text) = choice.delta.and_then(|d| d.content) {
                run.token(&text);
            }
            run.finish_reason(choice.finish_reason);
        }
        if let Some(u) = chunk.usage {
            run.usage(u.into());
        }
        Ok(false)
    }

    fn server_error(&self, message: &str, run: &Run<'_, '_>) -> LlmError {
        LlmError::Server {
            message: http::redact(message, self.api_key.as_ref()),
            partial: run.partial(),
        }
    }

    /// A server that ignored `stream: true` and sent one JSON completion.
    async fn whole_json(
        &self,
        body: &mut Body,
        mut run: Run<'_, '_>,
    ) -> Result<ChatOutcome, LlmError> {
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next(run.progress()).await? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > http::MAX_JSON_BODY {
                return Err(LlmError::Malformed {
                    reason: "the JSON answer is too large".into(),
                    partial: String::new(),
                });
            }
        }
        let whole: Completion =
            serde_json::from_slice(&bytes).map_err(|e| LlmError::Malformed {
                reason: format!("the JSON answer does not parse: {e}"),
                partial: String::new(),
            })?;
        if let Some(choice) = whole.choices.unwrap_or_default().into_iter().next() {
            if let Some(text) = choice.message.and_then(|m| m.content) {
                run.token(&text);
            }
            run.finish_reason(choice.finish_reason);
        }
        if let Some(u) = whole.usage {
            run.usage(u.into());
        }
        Ok(run.outcome())
    }

    /// `GET /models` with the key, if any: both the model list and the ping ask it.
    fn models_request(&self, timeout: Duration) -> (String, reqwest::RequestBuilder) {
        let url = self.endpoint.url("/models");
        let req = self.authorized(self.endpoint.client.get(&url).timeout(timeout));
        (url, req)
    }

    async fn models_impl(&self, timeout: Duration) -> Result<Vec<String>, LlmError> {
        let (url, req) = self.models_request(timeout);
        let doc = self
            .endpoint
            .fetch_json(req, &url, self.api_key.as_ref(), timeout)
            .await?;
        // llama.cpp's server also lists `models[].name`; OpenAI's shape is `data[].id`.
        let mut ids = http::names(&doc, "data", &["id"]);
        if ids.is_empty() {
            ids = http::names(&doc, "models", &["model", "name"]);
        }
        Ok(ids)
    }

    /// `GET /models` (llama.cpp's `meta.n_ctx`, vLLM's `max_model_len`, …),
    /// then, for llama.cpp or when that told no context, llama.cpp's
    /// `GET /props` beside the API root.
    async fn model_info_impl(&self, model: &str, timeout: Duration) -> Result<ModelInfo, LlmError> {
        let deadline = Instant::now() + timeout;
        let (url, req) = self.models_request(timeout);
        let listed = match self
            .endpoint
            .fetch_json(req, &url, self.api_key.as_ref(), timeout)
            .await
        {
            Ok(doc) => ModelInfo::from_openai_models(&doc, model),
            Err(e) if e.is_unreachable() => return Err(e),
            Err(_) => ModelInfo::default(),
        };
        let wants_props = listed.server == ServerKind::LlamaCpp || listed.context_tokens.is_none();
        let left = deadline.saturating_duration_since(Instant::now());
        if !wants_props || left.is_zero() {
            return Ok(listed);
        }
        let root = self.endpoint.base.trim_end_matches("/v1");
        let url = format!("{root}/props");
        let req = self.authorized(self.endpoint.client.get(&url).timeout(left));
        match self
            .endpoint
            .fetch_json(req, &url, self.api_key.as_ref(), left)
            .await
        {
            Ok(doc)
                if doc.get("default_generation_settings").is_some()
                    || doc.get("n_ctx").is_some() =>
            {
                Ok(ModelInfo::from_llama_props(&doc).or(listed))
            }
            _ => Ok(listed),
        }
    }

    async fn ping_impl(&self, timeout: Duration) -> Result<(), LlmError> {
        let (url, req) = self.models_request(timeout);
        let resp = self
            .endpoint
            .send(req, &url, Instant::now() + timeout, timeout)
            .await?;
        let status = resp.status().as_u16();
        if status >= 500 || status == 401 || status == 403 {
            return Err(http::error_response(
                resp,
                &self.endpoint.shown(&url),
                "",
                self.api_key.as_ref(),
                timeout,
            )
            .await);
        }
        Ok(())
    }
}

impl ChatBackend for OpenAiBackend {
    fn provider(&self) -> Provider {
        Provider::Openai
    }

    fn base_url(&self) -> &str {
        &self.endpoint.shown
    }

    fn chat<'a>(
        &'a self,
        messages: &'a [ChatMessage],
        options: &'a ChatOptions,
        on_token: &'a mut TokenSink<'_>,
    ) -> BoxFuture<'a, Result<ChatOutcome, LlmError>> {
        Box::pin(self.chat_impl(messages, options, on_token))
    }

    fn ping(&self, timeout: Duration) -> BoxFuture<'_, Result<(), LlmError>> {
        Box::pin(self.ping_impl(timeout))
    }

    fn models(&self, timeout: Duration) -> BoxFuture<'_, Result<Vec<String>, LlmError>> {
        Box::pin(self.models_impl(timeout))
    }

    fn model_info<'a>(
        &'a self,
        model: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ModelInfo, LlmError>> {
        Box::pin(self.model_info_impl(model, timeout))
    }
}

/// `{"error": …}` inside a stream, as a body `parse_error_body` understands.
fn err_body(err: &serde_json::Value) -> String {
    json!({ "error": err }).to_string()
}

#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Option<Vec<StreamChoice>>,
    #[serde(default)]
    usage: Option<UsageJson>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Option<Vec<CompletionChoice>>,
    #[serde(default)]
    usage: Option<UsageJson>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    message: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct UsageJson {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

impl From<UsageJson> for Usage {
    fn from(u: UsageJson) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        }
    }
}
