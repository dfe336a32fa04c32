//! The OpenAI-compatible endpoints: `GET /v1/models`, `POST /v1/chat/completions`
//! (streamed as Server-Sent Events or whole) and `POST /v1/embeddings`.
//!
//! A chat request is answered exactly as `ragmap ask` / `ragmap chat` answer:
//! the last user message is the question, earlier user/assistant pairs are
//! the conversation (the follow-up is rewritten to stand alone, then
//! translated), the prompt numbers the passages and the model cites them.
//! The sources travel with the answer as a `sources` array on the last chunk
//! (and on the whole response), which plain OpenAI clients keep as an extra
//! field; `ragmap.sources_footer` (or `[server] sources_footer`) also writes
//! them into the text for clients that show only text.
//!
//! An answer the stream guard stopped for repeating itself is no error here:
//! the reply holds what was kept, with `finish_reason` `"length"` (the value
//! every OpenAI client knows for an answer cut short) and `ragmap.stopped`
//! saying what repeated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::{Admitted, Shared};
use crate::answer::{Preparation, Prepared, Turn};
use crate::cite::{source_lines, Citations};
use crate::llm::{self, ChatOutcome, LlmError};
use crate::prompt::Source;
use crate::query::Query;

/// The model id clients pick.
pub const MODEL_ID: &str = "ragmap";

pub async fn models(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": MODEL_ID,
            "object": "model",
            "created": shared.started_unix,
            "owned_by": "ragmap",
        }],
    }))
}

#[derive(Deserialize)]
pub(super) struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    ragmap: Options,
}

/// ragmap's own request options, beside OpenAI's.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Options {
    sources_footer: Option<bool>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Content,
}

/// A message's content: a string, or OpenAI's list of parts (text parts are read).
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
    #[default]
    Null,
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
            Content::Null => String::new(),
        }
    }
}

/// The question (the last user message) and the conversation before it.
fn conversation(messages: &[Message], max_chars: usize) -> Result<(String, Vec<Turn>), ApiError> {
    let Some(last) = messages.last() else {
        return Err(ApiError::bad_request(
            "`messages` is empty: send at least one user message",
        ));
    };
    if last.role != "user" {
        return Err(ApiError::bad_request(format!(
            "the last message must be the user's question, not {:?}",
            last.role
        )));
    }
    let question = last.content.text().trim().to_string();
    if question.is_empty() {
        return Err(ApiError::bad_request(
            "the question (the last user message) is empty",
        ));
    }
    if question.chars().count() > max_chars {
        return Err(ApiError::bad_request(format!(
            "the question is longer than {max_chars} characters ([server] max_question_chars)"
        )));
    }
    // Earlier turns: each user message with the assistant reply after it.
    // System messages are left out: ragmap's own prompt governs the answer.
    let mut history = Vec::new();
    let mut pending: Option<String> = None;
    for m in &messages[..messages.len() - 1] {
        match m.role.as_str() {
            "user" => pending = Some(m.content.text()),
            "assistant" => {
                if let Some(question) = pending.take() {
                    history.push(Turn {
                        question,
                        answer: m.content.text(),
                    });
                }
            }
            _ => {}
        }
    }
    Ok((question, history))
}

pub(super) async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    Admitted { ticket, request }: Admitted<ChatRequest>,
) -> Result<Response, ApiError> {
    let (question, history) =
        conversation(&request.messages, shared.config.server.max_question_chars)?;
    let model = request
        .model
        .clone()
        .unwrap_or_else(|| MODEL_ID.to_string());
    let footer = request
        .ragmap
        .sources_footer
        .unwrap_or(shared.config.server.sources_footer);
    let timeout = shared.request_timeout();
    let prepare = prepare(&shared, &question, &history);
    let mut prepared = tokio::time::timeout(timeout, prepare)
        .await
        .map_err(|_| ApiError::timeout(timeout.as_secs_f64()))??;
    let reply = Reply {
        id: format!("chatcmpl-{}", super::random_id()),
        created: super::unix_now(),
        model,
        footer,
    };
    if request.stream {
        return Ok(stream_answer(shared, prepared, history, reply, ticket).await);
    }
    let answering = whole_answer(&shared, &mut prepared, &history);
    let outcome = tokio::time::timeout(timeout, answering)
        .await
        .map_err(|_| ApiError::timeout(timeout.as_secs_f64()))?
        .map_err(|e| ApiError::upstream(&e))?;
    Ok(Json(reply.whole(&prepared, &outcome)).into_response())
}

/// The query (rewritten and translated with the model), its passages, the
/// prompt; 502 when the model did not answer meanwhile.
async fn prepare(shared: &Shared, question: &str, history: &[Turn]) -> Result<Prepared, ApiError> {
    let passages = async |query: &Query| shared.workers.passages(query).await;
    match shared.answerer.prepare(history, question, passages).await? {
        Preparation::Ready(prepared) => Ok(prepared),
        Preparation::NoModel(_, e) => Err(ApiError::upstream(&e)),
    }
}

/// The whole answer; a loop the guard stopped is the text it kept.
async fn whole_answer(
    shared: &Shared,
    prepared: &mut Prepared,
    history: &[Turn],
) -> Result<ChatOutcome, LlmError> {
    let started = Instant::now();
    let mut sink = |_: &str| {};
    let answered = shared.answerer.answer(prepared, history, &mut sink).await;
    llm::guard::kept(answered, started)
}

/// What one answer's chunks and response share.
struct Reply {
    id: String,
    created: u64,
    model: String,
    footer: bool,
}

impl Reply {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        })
    }

    /// The last chunk: finish reason, sources and what was searched.
    fn last_chunk(&self, prepared: &Prepared, outcome: &ChatOutcome) -> Value {
        let mut chunk = self.chunk(json!({}), Some(finish_reason(outcome)));
        chunk["sources"] = sources_json(&prepared.prompt.sources);
        chunk["ragmap"] = ragmap_json(prepared, outcome);
        if let Some(usage) = usage_json(outcome) {
            chunk["usage"] = usage;
        }
        chunk
    }

    fn whole(&self, prepared: &Prepared, outcome: &ChatOutcome) -> Value {
        let mut text = outcome.text.clone();
        if self.footer {
            text.push_str(&footer(&outcome.text, &prepared.prompt.sources));
        }
        let mut response = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason(outcome),
            }],
            "sources": sources_json(&prepared.prompt.sources),
            "ragmap": ragmap_json(prepared, outcome),
        });
        if let Some(usage) = usage_json(outcome) {
            response["usage"] = usage;
        }
        response
    }
}

/// What the answering task sends to the response stream. The end carries
/// the prompt the model answered (refitted, when the server refused the
/// first as too long), whose sources the last chunk lists.
enum Piece {
    Delta(String),
    Done(Result<ChatOutcome, LlmError>, Box<Prepared>),
}

/// Streams the answer as `chat.completion.chunk` events. The response starts
/// when the model's first token (or its failure) arrives, so a model that
/// fails before answering gets its proper 502/504 status; a failure after
/// that is an `error` event. A client that goes away drops the stream, which
/// ends the answering task and with it the model's request.
async fn stream_answer(
    shared: Arc<Shared>,
    prepared: Prepared,
    history: Vec<Turn>,
    reply: Reply,
    ticket: super::workers::Ticket,
) -> Response {
    let timeout = shared.request_timeout();
    let (tx, mut rx) = mpsc::unbounded_channel::<Piece>();
    let answering = {
        let shared = shared.clone();
        let mut prepared = Box::new(prepared);
        async move {
            let tokens = tx.clone();
            let mut sink = move |t: &str| {
                let _ = tokens.send(Piece::Delta(t.to_string()));
            };
            let started = Instant::now();
            let answer = shared.answerer.answer(&mut prepared, &history, &mut sink);
            tokio::select! {
                result = tokio::time::timeout(timeout, answer) => {
                    let result = result.unwrap_or_else(|_| Err(LlmError::FirstTokenTimeout {
                        url: "ragmap serve".into(),
                        after: timeout,
                    }));
                    let _ = tx.send(Piece::Done(llm::guard::kept(result, started), prepared));
                }
                _ = tx.closed() => {}
            }
        }
    };
    tokio::spawn(answering);
    let first = match rx.recv().await {
        Some(Piece::Done(Err(e), _)) => return ApiError::upstream(&e).into_response(),
        Some(first) => first,
        None => return ApiError::internal("the answer ended before it began").into_response(),
    };
    let reply = Arc::new(reply);
    let opening = reply.chunk(json!({"role": "assistant", "content": ""}), None);
    let rest = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
    let events = stream::iter([first])
        .chain(rest)
        .flat_map({
            let reply = reply.clone();
            move |piece| stream::iter(events_of(&reply, piece))
        })
        .map(|value| Event::default().data(value.to_string()));
    let events = stream::iter([Event::default().data(opening.to_string())])
        .chain(events)
        .chain(stream::iter([Event::default().data("[DONE]")]))
        .map(move |event| {
            // The ticket leaves with the stream.
            let _held = &ticket;
            Ok::<_, std::convert::Infallible>(event)
        });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn events_of(reply: &Reply, piece: Piece) -> Vec<Value> {
    match piece {
        Piece::Delta(text) => vec![reply.chunk(json!({"content": text}), None)],
        Piece::Done(Ok(outcome), prepared) => {
            let mut out = Vec::new();
            if reply.footer {
                let footer = footer(&outcome.text, &prepared.prompt.sources);
                out.push(reply.chunk(json!({"content": footer}), None));
            }
            out.push(reply.last_chunk(&prepared, &outcome));
            out
        }
        Piece::Done(Err(e), _) => vec![ApiError::upstream(&e).body()],
    }
}

/// The server's reason; `length` for an answer the guard stopped, cut
/// short as one cut by `max_tokens` is.
fn finish_reason(outcome: &ChatOutcome) -> &str {
    match outcome.stopped {
        Some(_) => "length",
        None => outcome.finish_reason.as_deref().unwrap_or("stop"),
    }
}

fn usage_json(outcome: &ChatOutcome) -> Option<Value> {
    let usage = outcome.usage?;
    let (prompt, completion) = (usage.prompt_tokens?, usage.completion_tokens?);
    Some(json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }))
}

/// A source as the API returns it: `url` for web pages, `path` always.
pub fn source_json(s: &Source) -> Value {
    let is_url = s.location.starts_with("http://") || s.location.starts_with("https://");
    json!({
        "n": s.number,
        "title": s.title,
        "url": is_url.then_some(&s.location),
        "path": s.path,
        "heading": s.heading,
        "snippet": crate::term::snippet(&s.text, 240),
        "text": s.text,
    })
}

fn sources_json(sources: &[Source]) -> Value {
    Value::Array(sources.iter().map(source_json).collect())
}

/// What ragmap adds: what was searched for and, for an answer the guard
/// stopped, what repeated.
fn ragmap_json(prepared: &Prepared, outcome: &ChatOutcome) -> Value {
    let mut value = json!({
        "search": prepared.query.search(),
        "translation": prepared.query.translation(),
    });
    if let Some(what) = &outcome.stopped {
        value["stopped"] = json!(format!("the answer kept repeating itself: {what}"));
    }
    value
}

/// The cited sources (all of them when none is cited) as text lines.
fn footer(answer: &str, sources: &[Source]) -> String {
    let mut out = String::from("\n\nSources:");
    for line in source_lines(Citations::of(answer, sources).listed(sources), false) {
        let s = line.source;
        out.push_str(&format!("\n{} {} — {}", line.label(), s.title, s.location));
    }
    out
}

#[derive(Deserialize)]
pub(super) struct EmbeddingsRequest {
    input: Input,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    /// ragmap's own: `passage` embeds with e5's `passage: ` prefix instead of `query: `.
    #[serde(default)]
    input_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

/// Inputs one embeddings request may carry.
const MAX_INPUTS: usize = 256;

pub(super) async fn embeddings(
    State(shared): State<Arc<Shared>>,
    Admitted {
        ticket: _ticket,
        request,
    }: Admitted<EmbeddingsRequest>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(embed(&shared, request).await?))
}

async fn embed(shared: &Shared, request: EmbeddingsRequest) -> Result<Value, ApiError> {
    // The official clients ask for base64 (little-endian f32s) by default.
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "\"encoding_format\" is \"float\" or \"base64\", not {other:?}"
            )))
        }
    };
    let passages = match request.input_type.as_deref() {
        None | Some("query") => false,
        Some("passage") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "\"input_type\" is \"query\" or \"passage\", not {other:?}"
            )))
        }
    };
    let inputs = match request.input {
        Input::One(s) => vec![s],
        Input::Many(v) => v,
    };
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(ApiError::bad_request(format!(
            "\"input\" holds 1 to {MAX_INPUTS} strings"
        )));
    }
    if inputs.iter().any(|s| s.trim().is_empty()) {
        return Err(ApiError::bad_request("an \"input\" string is empty"));
    }
    let (vectors, tokens) = shared
        .workers
        .run(move |r| {
            let embedder = r
                .embedder()
                .ok_or_else(|| "no embedding model is loaded".to_string())?;
            embedder
                .embed_as(&inputs, passages)
                .map_err(|e| e.to_string())
        })
        .await?
        .map_err(ApiError::internal)?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                json!(base64_f32(&v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": request.model.unwrap_or_else(|| shared.embedding_model.clone()),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

fn base64_f32(v: &[f32]) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_embeddings_are_little_endian_f32s() {
        // 1.0f32 is 00 00 80 3f; -2.0 is 00 00 00 c0.
        assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
    }

    fn msg(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: Content::Text(content.into()),
        }
    }

    #[test]
    fn the_last_user_message_is_the_question_and_pairs_before_it_the_history() {
        let messages = [
            msg("system", "be brief"),
            msg("user", "what is RAG?"),
            msg("assistant", "retrieval [1]"),
            msg("user", "and GraphRAG?"),
        ];
        let (q, history) = conversation(&messages, 100).unwrap();
        assert_eq!(q, "and GraphRAG?");
        assert_eq!(
            history,
            vec![Turn {
                question: "what is RAG?".into(),
                answer: "retrieval [1]".into()
            }]
        );
    }

    #[test]
    fn bad_conversations_are_400_naming_the_problem() {
        let too_long = [msg("user", &"字".repeat(11))];
        for (messages, needle) in [
            (&[][..], "empty"),
            (&[msg("assistant", "hi")][..], "last message"),
            (&[msg("user", "  ")][..], "empty"),
            (&too_long[..], "longer than 10"),
        ] {
            let e = conversation(messages, 10).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(
                e.body().to_string().contains(needle),
                "{needle}: {}",
                e.body()
            );
        }
    }

    #[test]
    fn content_parts_are_joined() {
        let parsed: Message = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"},{"type":"text","text":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(parsed.content.text(), "a\nb");
    }
}
