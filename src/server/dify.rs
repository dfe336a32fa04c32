//! Dify's External Knowledge API: `POST /retrieval` with `{knowledge_id,
//! query, retrieval_setting: {top_k, score_threshold}, metadata_condition?}`
//! → `{"records": [{content, score, title, metadata}]}`, so a Dify app can
//! use the workspace as an external knowledge base (External Knowledge ID
//! [`KNOWLEDGE_ID`]).
//!
//! - The key comes as Dify sends it, `Authorization: Bearer KEY`; errors
//!   have Dify's shape `{"error_code", "error_msg"}`: 1001 (no Bearer
//!   header, 403), 1002 (wrong key, 403), 2001 (no such knowledge, 404);
//!   other failures carry their HTTP status as the code.
//! - Scores are in [0, 1] so that `score_threshold` means something: each
//!   passage's fused score divided by the best one's (the best passage is 1;
//!   in hybrid mode a passage both retrievers ranked near the top keeps
//!   about 0.9, one found by a single retriever about half).
//! - Contents are passages as prompts get them (widened with neighbours).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::{key_matches, Admitted, Shared};
use crate::query::Query;
use crate::retrieve::Hit;

/// The External Knowledge ID to enter in Dify.
pub const KNOWLEDGE_ID: &str = "ragmap";

/// Most records one request returns.
const MAX_TOP_K: usize = 100;

#[derive(Deserialize)]
pub(super) struct RetrievalRequest {
    knowledge_id: String,
    query: String,
    retrieval_setting: Setting,
    #[serde(default)]
    metadata_condition: Option<MetadataCondition>,
}

#[derive(Deserialize)]
struct Setting {
    top_k: usize,
    #[serde(default)]
    score_threshold: f32,
}

#[derive(Deserialize)]
struct MetadataCondition {
    #[serde(default)]
    logical_operator: Option<String>,
    conditions: Vec<Condition>,
}

#[derive(Deserialize)]
struct Condition {
    /// One field name (Dify's current docs) or a list of them (older ones).
    name: Names,
    comparison_operator: String,
    #[serde(default)]
    value: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Names {
    One(String),
    Many(Vec<String>),
}

/// An error as Dify documents it.
struct DifyError {
    status: StatusCode,
    code: u16,
    message: String,
}

impl DifyError {
    fn new(status: StatusCode, code: u16, message: impl Into<String>) -> DifyError {
        DifyError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> DifyError {
        Self::new(StatusCode::BAD_REQUEST, 400, message)
    }
}

impl From<ApiError> for DifyError {
    fn from(e: ApiError) -> DifyError {
        Self::new(e.status, e.status.as_u16(), e.message())
    }
}

impl IntoResponse for DifyError {
    fn into_response(self) -> Response {
        let body = json!({"error_code": self.code, "error_msg": self.message});
        (self.status, Json(body)).into_response()
    }
}

pub(super) async fn retrieval(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    admitted: Result<Admitted<RetrievalRequest>, ApiError>,
) -> Response {
    match answer(&shared, &headers, admitted).await {
        Ok(records) => Json(json!({ "records": records })).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The records for an admitted request: the key is checked first, so a
/// client without one learns that before anything about its request.
async fn answer(
    shared: &Shared,
    headers: &HeaderMap,
    admitted: Result<Admitted<RetrievalRequest>, ApiError>,
) -> Result<Vec<Value>, DifyError> {
    authorize(shared, headers)?;
    let Admitted {
        ticket: _ticket,
        request,
    } = admitted?;
    if request.knowledge_id != KNOWLEDGE_ID {
        return Err(DifyError::new(
            StatusCode::NOT_FOUND,
            2001,
            format!(
                "the knowledge {:?} does not exist: this server's External Knowledge ID is {KNOWLEDGE_ID:?}",
                request.knowledge_id
            ),
        ));
    }
    let question = request.query.trim();
    if question.is_empty() {
        return Err(DifyError::bad_request("\"query\" is empty"));
    }
    let max = shared.config.server.max_question_chars;
    if question.chars().count() > max {
        return Err(DifyError::bad_request(format!(
            "\"query\" is longer than {max} characters ([server] max_question_chars)"
        )));
    }
    let top_k = request.retrieval_setting.top_k.min(MAX_TOP_K);
    let filter = request.metadata_condition.as_ref();
    if let Some(condition) = filter {
        check_condition(condition)?;
    }
    if top_k == 0 {
        return Ok(Vec::new());
    }
    let mut settings = shared.config.retrieve.clone();
    // Conditions drop passages after retrieval: retrieve more to keep top_k.
    settings.top_k = if filter.is_some() {
        (top_k * 4).min(MAX_TOP_K)
    } else {
        top_k
    };
    let query = Query::new(question);
    let hits = shared
        .workers
        .run(move |r| r.search_with(&query, &settings, true))
        .await?
        .map_err(|e| ApiError::internal(format!("retrieval failed: {e}")))?;
    let threshold = request.retrieval_setting.score_threshold;
    let best = hits.first().map_or(1.0, |h| h.score);
    Ok(hits
        .iter()
        .filter(|h| filter.is_none_or(|c| matches(c, h)))
        .map(|h| (h, relative_score(h.score, best)))
        .filter(|(_, score)| *score >= threshold)
        .take(top_k)
        .map(|(h, score)| record(h, score))
        .collect())
}

/// 1001 without `Authorization: Bearer …`, 1002 with a wrong key; any
/// request passes when the server has no key.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), DifyError> {
    let Some(expected) = &shared.api_key_digest else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            DifyError::new(
                StatusCode::FORBIDDEN,
                1001,
                "Invalid Authorization header format. Expected 'Bearer <api-key>' format.",
            )
        })?;
    if !key_matches(given, expected) {
        return Err(DifyError::new(
            StatusCode::FORBIDDEN,
            1002,
            "Authorization failed: wrong API key",
        ));
    }
    Ok(())
}

/// `score / best` within [0, 1]; every passage is 1 when the best scored nothing.
fn relative_score(score: f32, best: f32) -> f32 {
    if best > 0.0 {
        (score / best).clamp(0.0, 1.0)
    } else {
        1.0
    }
}

fn record(hit: &Hit, score: f32) -> Value {
    let c = &hit.chunk;
    let mut metadata = Map::new();
    if c.source.starts_with("http://") || c.source.starts_with("https://") {
        metadata.insert("url".into(), json!(c.source));
    }
    metadata.insert("path".into(), json!(c.path));
    metadata.insert("heading".into(), json!(c.heading));
    metadata.insert("id".into(), json!(c.id.to_string()));
    metadata.insert("ragmap_score".into(), json!(hit.score));
    json!({
        "content": c.text,
        "score": score,
        "title": c.title,
        "metadata": metadata,
    })
}

/// The metadata fields a condition may name.
const FIELDS: [&str; 4] = ["title", "url", "path", "heading"];
/// The comparisons on text that ragmap's fields support.
const OPERATORS: [&str; 10] = [
    "contains",
    "not contains",
    "start with",
    "end with",
    "is",
    "is not",
    "in",
    "not in",
    "empty",
    "not empty",
];

fn names(c: &Condition) -> Vec<&str> {
    match &c.name {
        Names::One(n) => vec![n.as_str()],
        Names::Many(v) => v.iter().map(String::as_str).collect(),
    }
}

/// A condition on a field ragmap has not, or a numeric or date comparison, is 400.
fn check_condition(condition: &MetadataCondition) -> Result<(), DifyError> {
    if let Some(op) = condition
        .logical_operator
        .as_deref()
        .filter(|op| !matches!(*op, "and" | "or"))
    {
        return Err(DifyError::bad_request(format!(
            "logical_operator is \"and\" or \"or\", not {op:?}"
        )));
    }
    for c in &condition.conditions {
        if let Some(name) = names(c).into_iter().find(|n| !FIELDS.contains(n)) {
            return Err(DifyError::bad_request(format!(
                "no metadata field {name:?}: the fields are {}",
                FIELDS.join(", ")
            )));
        }
        if !OPERATORS.contains(&c.comparison_operator.as_str()) {
            return Err(DifyError::bad_request(format!(
                "comparison_operator {:?} is not supported on text fields: use one of {}",
                c.comparison_operator,
                OPERATORS.join(", ")
            )));
        }
    }
    Ok(())
}

fn matches(condition: &MetadataCondition, hit: &Hit) -> bool {
    let mut each = condition.conditions.iter().map(|c| {
        names(c)
            .into_iter()
            .any(|n| compare(field(hit, n), &c.comparison_operator, c.value.as_ref()))
    });
    match condition.logical_operator.as_deref() {
        Some("or") => each.any(|m| m),
        _ => each.all(|m| m),
    }
}

fn field<'h>(hit: &'h Hit, name: &str) -> &'h str {
    let c = &hit.chunk;
    match name {
        "title" => &c.title,
        "url" if c.source.starts_with("http") => &c.source,
        "path" => &c.path,
        "heading" => &c.heading,
        _ => "",
    }
}

fn compare(text: &str, operator: &str, value: Option<&Value>) -> bool {
    let values: Vec<&str> = match value {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let one = values.first().copied().unwrap_or("");
    match operator {
        "contains" => text.contains(one),
        "not contains" => !text.contains(one),
        "start with" => text.starts_with(one),
        "end with" => text.ends_with(one),
        "is" => text == one,
        "is not" => text != one,
        "in" => values.contains(&text),
        "not in" => !values.contains(&text),
        "empty" => text.is_empty(),
        "not empty" => !text.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_relative_to_the_best_within_zero_and_one() {
        assert_eq!(relative_score(0.03, 0.03), 1.0);
        assert!((relative_score(0.015, 0.03) - 0.5).abs() < 1e-6);
        assert_eq!(relative_score(-1.0, 0.5), 0.0);
        assert_eq!(relative_score(0.2, 0.0), 1.0);
    }

    #[test]
    fn text_comparisons() {
        let url = "https://example.com/rag";
        assert!(compare(url, "contains", Some(&json!("example"))));
        assert!(compare(url, "start with", Some(&json!("https://"))));
        assert!(!compare(url, "end with", Some(&json!("lora"))));
        assert!(compare(url, "in", Some(&json!(["x", url]))));
        assert!(compare("", "empty", None));
        assert!(compare(url, "is not", Some(&json!("other"))));
    }
}
