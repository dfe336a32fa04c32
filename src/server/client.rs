//! The command line's side of a running server: retrieval sent to
//! `POST /api/search` of the workspace's `ragmap serve`, so a one-shot
//! `search`, `ask` or `chat` skips loading the embedding model. Any failure
//! (no server, a stale discovery file, a busy or broken server) is reported
//! as a [`ClientError`] and the caller retrieves in-process instead.

use std::time::Duration;

use super::discovery;
use crate::config::{Config, Retrieve};
use crate::query::Query;
use crate::retrieve::Hit;

/// The header a server answers with: its instance id from the discovery file.
pub const INSTANCE_HEADER: &str = "x-ragmap-instance";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the server at {url} did not answer: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("another process answers at {0} (not this workspace's server)")]
    NotOurs(String),
    #[error("the server answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
}

pub struct Client {
    url: String,
    instance: String,
    key: Option<String>,
    http: reqwest::Client,
}

#[derive(serde::Deserialize)]
struct SearchResponse {
    results: Vec<Hit>,
}

impl Client {
    /// The workspace's running server, when its discovery file is live.
    pub fn for_workspace(config: &Config) -> Option<Client> {
        let running = discovery::find(config)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(60))
            .no_proxy()
            .build()
            .ok()?;
        let key = std::env::var(&config.server.api_key_env)
            .ok()
            .filter(|k| !k.trim().is_empty());
        Some(Client {
            url: running.url,
            instance: running.instance,
            key,
            http,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// What `Retriever::search` (or, with `passages`, `Retriever::passages`)
    /// returns for the query with `settings`' mode and top_k, computed by the
    /// server.
    pub async fn search(
        &self,
        query: &Query,
        settings: &Retrieve,
        passages: bool,
    ) -> Result<Vec<Hit>, ClientError> {
        let body = serde_json::json!({
            "query": query.search(),
            "translation": query.translation(),
            "k": settings.top_k,
            "mode": settings.mode,
            "passages": passages,
        });
        let mut request = self
            .http
            .post(format!("{}/api/search", self.url))
            .json(&body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: self.url.clone(),
            reason: e.to_string(),
        };
        let response = request.send().await.map_err(unreachable)?;
        let ours = response
            .headers()
            .get(INSTANCE_HEADER)
            .is_some_and(|v| v.as_bytes() == self.instance.as_bytes());
        if !ours {
            return Err(ClientError::NotOurs(self.url.clone()));
        }
        let status = response.status();
        if !status.is_success() {
            let message = response.text().await.unwrap_or_default();
            return Err(ClientError::Status {
                status: status.as_u16(),
                message: crate::term::snippet(&message, 200),
            });
        }
        let parsed: SearchResponse = response.json().await.map_err(unreachable)?;
        Ok(parsed.results)
    }
}
