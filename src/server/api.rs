//! ragmap's own endpoints: `GET /health` and `POST /api/search`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::{Admitted, Shared};
use crate::config::RetrieveMode;
use crate::query::Query;
use crate::retrieve::Hit;

pub(super) async fn health(State(shared): State<Arc<Shared>>) -> Response {
    match shared.catalogue_status() {
        Ok(status) => Json(status).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchRequest {
    query: String,
    #[serde(default)]
    k: Option<usize>,
    #[serde(default)]
    mode: Option<RetrieveMode>,
    /// The query in the other language, searched as well (the CLI sends the
    /// translation it got from its model).
    #[serde(default)]
    translation: Option<String>,
    /// Widen hits with their neighbouring chunks, as prompts are built.
    #[serde(default)]
    passages: bool,
}

/// Most passages one search returns.
const MAX_K: usize = 100;

/// `{"query", "k", "mode"}` → `{"results": [...], "generation"}`: the items of
/// `ragmap search --json`.
pub(super) async fn search(
    State(shared): State<Arc<Shared>>,
    Admitted {
        ticket: _ticket,
        request,
    }: Admitted<SearchRequest>,
) -> Result<Json<Found>, ApiError> {
    Ok(Json(run_search(&shared, request).await?))
}

/// Serialized from the hits themselves (not through `serde_json::Value`, which
/// would widen every f32 score): byte for byte what `search --json` prints.
#[derive(Serialize)]
pub(super) struct Found {
    results: Vec<Hit>,
    generation: String,
}

async fn run_search(shared: &Shared, request: SearchRequest) -> Result<Found, ApiError> {
    let question = request.query.trim();
    if question.is_empty() {
        return Err(ApiError::bad_request("\"query\" is empty"));
    }
    let max = shared.config.server.max_question_chars;
    if question.chars().count() > max {
        return Err(ApiError::bad_request(format!(
            "\"query\" is longer than {max} characters ([server] max_question_chars)"
        )));
    }
    let mut settings = shared.config.retrieve.clone();
    if let Some(k) = request.k {
        if k == 0 || k > MAX_K {
            return Err(ApiError::bad_request(format!("\"k\" is 1 to {MAX_K}")));
        }
        settings.top_k = k;
    }
    if let Some(mode) = request.mode {
        settings.mode = mode;
    }
    let query = Query::new(question).with_translation(
        request
            .translation
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty()),
    );
    let passages = request.passages;
    let (hits, generation) = shared
        .workers
        .run(move |r| {
            r.search_with(&query, &settings, passages)
                .map(|h| (h, r.generation()))
        })
        .await?
        .map_err(|e| ApiError::internal(format!("search failed: {e}")))?;
    Ok(Found {
        results: hits,
        generation,
    })
}
