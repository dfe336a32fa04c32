//! Ollama's native chat API: `POST {base}/api/chat` with `stream: true`, answered as
//! newline-delimited JSON — `{"message":{"content":…},"done":false}` per delta, then a
//! last object with `"done":true`, `done_reason` and token counters. Errors are
//! `{"error":"…"}`, with an error status before streaming or as a line mid-stream.
//!
//! The base URL defaults to `OLLAMA_HOST` (see `Config::llm_base_url`). No API key is
//! sent: `api_key_env` names an OpenAI-style key that must not leak to another service.

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use super::http::{self, Body, Endpoint};
use super::stream::NdjsonParser;
use super::{
    ChatBackend, ChatMessage, ChatOptions, ChatOutcome, LlmError, ModelInfo, Run, Timeouts,
    TokenSink, Usage,
};
use crate::config::Provider;

#[derive(Debug)]
pub struct OllamaBackend {
    endpoint: Endpoint,
}

impl OllamaBackend {
    /// `base_url` is the server root, e.g. `http://127.0.0.1:11434`.
    pub fn new(base_url: &str, timeouts: Timeouts) -> Result<Self, LlmError> {
        Ok(OllamaBackend {
            endpoint: Endpoint::new(base_url, timeouts)?,
        })
    }

    async fn chat_impl(
        &self,
        messages: &[ChatMessage],
        options: &ChatOptions,
        on_token: &mut TokenSink<'_>,
    ) -> Result<ChatOutcome, LlmError> {
        let url = self.endpoint.url("/api/chat");
        let timeouts = self.endpoint.timeouts;
        let mut run = Run::new(on_token);
        let start = run.start;
        let body = json!({
            "model": options.model,
            "messages": messages,
            "stream": true,
            "options": request_options(options),
        });
        let req = self.endpoint.client.post(&url).json(&body);
        let resp = self
            .endpoint
            .send(
                req,
                &url,
                start + timeouts.first_token,
                timeouts.first_token,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(http::error_response(
                resp,
                &self.endpoint.shown(&url),
                &options.model,
                None,
                timeouts.idle,
            )
            .await);
        }
        let mut body = Body::new(resp, &self.endpoint.shown(&url), timeouts, start);
        let mut parser = NdjsonParser::new();
        let mut done = false;
        while !done {
            let Some(chunk) = body.next(run.progress()).await? else {
                break;
            };
            let lines = parser.push(&chunk).map_err(|e| LlmError::Malformed {
                reason: e.to_string(),
                partial: run.partial(),
            })?;
            for line in lines {
                if handle_line(&line, &mut run)? {
                    done = true;
                    break;
                }
            }
        }
        if !done {
            if let Some(line) = parser.finish() {
                done = handle_line(&line, &mut run)?;
            }
        }
        if !done {
            return Err(LlmError::Cut {
                reason: "the stream ended before \"done\": true".into(),
                partial: run.partial(),
            });
        }
        Ok(run.outcome())
    }

    async fn models_impl(&self, timeout: Duration) -> Result<Vec<String>, LlmError> {
        let url = self.endpoint.url("/api/tags");
        let req = self.endpoint.client.get(&url).timeout(timeout);
        let doc = self.endpoint.fetch_json(req, &url, None, timeout).await?;
        Ok(http::names(&doc, "models", &["name", "model"]))
    }

    /// `POST /api/show`: the model's context length and its Modelfile's
    /// sampling. A model Ollama does not have is `UnknownModel`, as in `chat`.
    async fn model_info_impl(&self, model: &str, timeout: Duration) -> Result<ModelInfo, LlmError> {
        let url = self.endpoint.url("/api/show");
        let req = self
            .endpoint
            .client
            .post(&url)
            .json(&json!({ "model": model }))
            .timeout(timeout);
        match self.endpoint.fetch_json(req, &url, None, timeout).await {
            Ok(doc) => Ok(ModelInfo::from_ollama_show(&doc)),
            Err(e) if e.is_unreachable() => Err(e),
            Err(_) => Ok(ModelInfo {
                server: super::ServerKind::Ollama,
                ..ModelInfo::default()
            }),
        }
    }

    async fn ping_impl(&self, timeout: Duration) -> Result<(), LlmError> {
        let url = self.endpoint.url("/api/version");
        let req = self.endpoint.client.get(&url).timeout(timeout);
        let resp = self
            .endpoint
            .send(req, &url, Instant::now() + timeout, timeout)
            .await?;
        let status = resp.status().as_u16();
        if status >= 500 || status == 401 || status == 403 {
            return Err(
                http::error_response(resp, &self.endpoint.shown(&url), "", None, timeout).await,
            );
        }
        Ok(())
    }
}

/// A chat request's `options`: Ollama's names for ragmap's settings.
fn request_options(options: &ChatOptions) -> serde_json::Map<String, serde_json::Value> {
    let mut opts = serde_json::Map::new();
    if let Some(t) = options.temperature {
        opts.insert("temperature".into(), json!(t));
    }
    if let Some(n) = options.max_tokens {
        opts.insert("num_predict".into(), json!(n));
    }
    if let Some(n) = options.context_tokens {
        opts.insert("num_ctx".into(), json!(n));
    }
    for (name, value) in options.sampling.fields() {
        // No DRY sampler in Ollama's options.
        if !name.starts_with("dry_") {
            opts.insert(name.into(), value);
        }
    }
    opts
}

/// Handles one NDJSON line; `true` at the final `"done": true` object.
fn handle_line(line: &str, run: &mut Run<'_, '_>) -> Result<bool, LlmError> {
    run.event();
    let msg: Line = serde_json::from_str(line).map_err(|e| LlmError::Malformed {
        reason: format!(
            "a stream line is not JSON ({e}): {}",
            http::one_line(http::truncate(line, 120))
        ),
        partial: run.partial(),
    })?;
    if let Some(err) = msg.error.filter(|e| !e.is_null()) {
        let info = http::parse_error_body(json!({ "error": err }).to_string().as_bytes());
        return Err(LlmError::Server {
            message: info.message,
            partial: run.partial(),
        });
    }
    if let Some(text) = msg.message.and_then(|m| m.content) {
        run.token(&text);
    }
    if msg.done.unwrap_or(false) {
        run.finish_reason(msg.done_reason);
        run.usage(Usage {
            prompt_tokens: msg.prompt_eval_count,
            completion_tokens: msg.eval_count,
        });
        return Ok(true);
    }
    Ok(false)
}

impl ChatBackend for OllamaBackend {
    fn provider(&self) -> Provider {
        Provider::Ollama
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

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    message: Option<LineMessage>,
    #[serde(default)]
    done: Option<bool>,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct LineMessage {
    #[serde(default)]
    content: Option<String>,
}
