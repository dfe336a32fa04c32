//! What model servers send, as [`Reply`]s and stream pieces for the scripted
//! server: OpenAI-compatible chat completions (SSE), Ollama's chat (NDJSON),
//! their errors and their model lists; and passages to prompt them with.

use super::Reply;

/// The head of an OpenAI-style event stream: 200, chunked, `text/event-stream`.
pub fn sse_reply() -> Reply {
    Reply::new(200)
        .chunked()
        .header("Content-Type", "text/event-stream; charset=utf-8")
}

/// One `chat.completion.chunk` event carrying a content delta, as OpenAI sends it.
pub fn openai_delta(text: &str) -> String {
    format!(
        "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n",
        serde_json::to_string(text).unwrap()
    )
}

/// The event that ends an answer: an empty delta with `finish_reason: stop`.
pub const OPENAI_STOP: &str =
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";

pub const OPENAI_DONE: &str = "data: [DONE]\n\n";

/// A complete streamed answer: one event a piece (one chunk each), then
/// `finish_reason: stop` and `[DONE]`.
pub fn openai_stream(pieces: &[&str]) -> Reply {
    pieces
        .iter()
        .fold(sse_reply(), |reply, piece| reply.body(openai_delta(piece)))
        .body(OPENAI_STOP)
        .body(OPENAI_DONE)
}

/// An OpenAI-style error body with this status and message.
pub fn openai_error(status: u16, message: &str) -> Reply {
    let body = serde_json::json!({
        "error": {"code": status, "message": message, "type": "server_error"}
    });
    Reply::json(status, &body.to_string())
}

/// `GET /v1/models`.
pub fn openai_models(ids: &[&str]) -> Reply {
    let data: Vec<_> = ids
        .iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "owned_by": "scripted"}))
        .collect();
    Reply::json(
        200,
        &serde_json::json!({"object": "list", "data": data}).to_string(),
    )
}

/// The head of an Ollama stream: 200, chunked, `application/x-ndjson`.
pub fn ndjson_reply() -> Reply {
    Reply::new(200)
        .chunked()
        .header("Content-Type", "application/x-ndjson")
}

/// One line of Ollama's `/api/chat` stream carrying content.
pub fn ollama_line(text: &str) -> String {
    format!(
        "{{\"model\":\"qwen\",\"created_at\":\"2025-01-01T00:00:00Z\",\"message\":{{\"role\":\"assistant\",\"content\":{}}},\"done\":false}}\n",
        serde_json::to_string(text).unwrap()
    )
}

/// The line that ends an Ollama answer, with its counts.
pub const OLLAMA_DONE: &str = "{\"model\":\"qwen\",\"created_at\":\"2025-01-01T00:00:01Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\",\"done\":true,\"total_duration\":1000,\"prompt_eval_count\":26,\"eval_count\":4}\n";

/// A complete Ollama answer: one line a piece (one chunk each), then the done line.
pub fn ollama_stream(pieces: &[&str]) -> Reply {
    pieces
        .iter()
        .fold(ndjson_reply(), |reply, piece| {
            reply.body(ollama_line(piece))
        })
        .body(OLLAMA_DONE)
}

/// `GET /api/tags`.
pub fn ollama_tags(names: &[&str]) -> Reply {
    let models: Vec<_> = names
        .iter()
        .map(|name| serde_json::json!({"name": name, "model": name, "size": 1}))
        .collect();
    Reply::json(200, &serde_json::json!({"models": models}).to_string())
}

/// `n` retrieved passages about LoRA, each `sentences` sentences long, as
/// retrieval would hand them to the answering step.
pub fn lora_passages(n: usize, sentences: usize) -> Vec<ragmap::retrieve::Hit> {
    const SENTENCE: &str = "LoRA freezes the pretrained weights of a model and trains two small low-rank matrices per layer instead, so fine-tuning needs far less memory. ";
    (0..n)
        .map(|i| ragmap::retrieve::Hit {
            chunk: ragmap::index::ChunkRow {
                id: i as i64,
                doc_id: i as i64,
                ordinal: 0,
                start: 0,
                end: 0,
                heading: "LoRA".into(),
                text: SENTENCE.repeat(sentences),
                title: format!("LoRA notes {i}"),
                source: format!("https://example.com/lora/{i}"),
                path: format!("web/lora-{i}.md"),
            },
            score: 1.0,
            similarity: None,
            vector_rank: None,
            lexical_rank: None,
        })
        .collect()
}
