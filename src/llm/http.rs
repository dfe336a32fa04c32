//! HTTP plumbing shared by the backends: client construction, error classification,
//! error bodies, and reading a streamed body under the first-token / idle deadlines.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use serde_json::Value;

use super::{LlmError, Timeouts};
use crate::term;

/// Error bodies are read up to this size (the rest is ignored).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// A non-streamed JSON answer larger than this is refused.
pub(crate) const MAX_JSON_BODY: usize = 16 * 1024 * 1024;
/// Longest server message kept in an error.
const MAX_MESSAGE_CHARS: usize = 300;

/// A secret that never shows in `Debug` output.
#[derive(Clone)]
pub(crate) struct ApiKey(String);

impl ApiKey {
    pub(crate) fn new(key: String) -> Self {
        ApiKey(key)
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Removes the key from text a server sent back (some echo credentials in errors).
pub(crate) fn redact(text: &str, key: Option<&ApiKey>) -> String {
    match key {
        Some(k) if !k.0.is_empty() => text.replace(&k.0, "***"),
        _ => text.to_string(),
    }
}

/// A validated base URL and a client configured for it.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub base: String,
    /// `base` without user:password, for messages.
    pub shown: String,
    pub host: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub timeouts: Timeouts,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &self.shown)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub(crate) fn new(base: &str, timeouts: Timeouts) -> Result<Self, LlmError> {
        let base = base.trim().trim_end_matches('/').to_string();
        let shown = hide_userinfo(&base);
        let invalid = |reason: &str| LlmError::InvalidUrl {
            url: shown.clone(),
            reason: reason.to_string(),
        };
        let url = url::Url::parse(&base).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("no host"))?
            .to_string();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| invalid("no port"))?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .tcp_nodelay(true)
            .user_agent(concat!("ragmap/", env!("CARGO_PKG_VERSION")));
        let loopback = host == "localhost"
            || host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            // A proxy from the environment must not capture a local model server.
            builder = builder.no_proxy();
        }
        let client = builder.build().map_err(|e| LlmError::Connect {
            url: shown.clone(),
            reason: format!("cannot create an HTTP client: {}", error_chain(&e)),
        })?;
        Ok(Endpoint {
            base,
            shown,
            host,
            port,
            client,
            timeouts,
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A URL of this endpoint as shown in messages (no credentials).
    pub(crate) fn shown(&self, url: &str) -> String {
        match url.strip_prefix(&self.base) {
            Some(path) => format!("{}{}", self.shown, path),
            None => hide_userinfo(url),
        }
    }

    /// Sends a request, waiting for the response headers until `deadline`.
    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<reqwest::Response, LlmError> {
        let url = &self.shown(url);
        // A kept-alive connection that the server closed just as the request
        // went out ends without an answer: the request goes once more, on a
        // new connection (seen with llama-server under load).
        let again = request.try_clone();
        let mut sent = tokio::time::timeout_at(deadline.into(), request.send()).await;
        if let (Ok(Err(e)), Some(again)) = (&sent, again) {
            if closed_unanswered(e) {
                sent = tokio::time::timeout_at(deadline.into(), again.send()).await;
            }
        }
        match sent {
            Err(_) => Err(LlmError::FirstTokenTimeout {
                url: url.to_string(),
                after: timeout,
            }),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.classify_send_error(&e, url).await),
        }
    }

    async fn classify_send_error(&self, e: &reqwest::Error, url: &str) -> LlmError {
        let url = url.to_string();
        let io_kind = io_error_kind(e);
        if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
            return LlmError::ConnectionRefused { url };
        }
        if e.is_timeout() || io_kind == Some(std::io::ErrorKind::TimedOut) {
            return LlmError::ConnectTimeout {
                url,
                after: self.timeouts.connect,
            };
        }
        let chain = error_chain(e);
        if e.is_connect() {
            let lower = chain.to_ascii_lowercase();
            if lower.contains("dns error")
                || lower.contains("lookup address")
                || self.unresolvable().await
            {
                return LlmError::UnknownHost {
                    url,
                    host: self.host.clone(),
                };
            }
            return LlmError::Connect { url, reason: chain };
        }
        // Sent but no usable response: the server closed the connection, spoke
        // something other than HTTP, …
        LlmError::Connect { url, reason: chain }
    }

    /// Whether the host name does not resolve (checked only after a connect error).
    async fn unresolvable(&self) -> bool {
        let host = self.host.trim_matches(|c| c == '[' || c == ']');
        if host.parse::<std::net::IpAddr>().is_ok() {
            return false;
        }
        let lookup = tokio::net::lookup_host((host, self.port));
        match tokio::time::timeout(self.timeouts.connect, lookup).await {
            Ok(Ok(mut addrs)) => addrs.next().is_none(),
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }
}

/// Whether the connection closed before any of the response came (and not
/// while connecting, nor from a timeout).
fn closed_unanswered(e: &reqwest::Error) -> bool {
    !e.is_connect()
        && !e.is_timeout()
        && error_chain(e).contains("connection closed before message completed")
}

impl Endpoint {
    /// Sends `request` for a small JSON document (a model list, a model's
    /// details), all of it within `timeout`.
    pub(crate) async fn fetch_json(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        key: Option<&ApiKey>,
        timeout: Duration,
    ) -> Result<Value, LlmError> {
        let deadline = Instant::now() + timeout;
        let mut resp = self.send(request, url, deadline, timeout).await?;
        let shown = self.shown(url);
        if !resp.status().is_success() {
            return Err(error_response(resp, &shown, "", key, timeout).await);
        }
        let mut body = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline.into(), resp.chunk()).await {
                Err(_) => {
                    return Err(LlmError::FirstTokenTimeout {
                        url: shown,
                        after: timeout,
                    })
                }
                Ok(Err(e)) => {
                    return Err(LlmError::Cut {
                        reason: error_chain(&e),
                        partial: String::new(),
                    })
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => body.extend_from_slice(&c),
            }
            if body.len() > MAX_JSON_BODY {
                return Err(LlmError::Malformed {
                    reason: format!("{shown} sent more than {MAX_JSON_BODY} bytes"),
                    partial: String::new(),
                });
            }
        }
        serde_json::from_slice(&body).map_err(|e| LlmError::Malformed {
            reason: format!("{shown} did not answer JSON ({e})"),
            partial: String::new(),
        })
    }
}

/// The strings at `list[].field` of a JSON document, in order, without repeats.
pub(crate) fn names(doc: &Value, list: &str, fields: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in doc
        .get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = fields
            .iter()
            .find_map(|f| item.get(*f).and_then(Value::as_str));
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            if !out.iter().any(|n| n == name) {
                out.push(name.to_string());
            }
        }
    }
    out
}

fn io_error_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

/// An error and its sources on one line, without repeats, credentials or escapes,
/// bounded in length.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    one_line(&scrub_urls(&term::one_line(e)))
}

/// Collapses whitespace and control characters, and bounds the length.
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::new();
    for word in text.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.chars().count() > MAX_MESSAGE_CHARS {
        out = out.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
    }
    out
}

/// `scheme://user:pass@host/…` → `scheme://***@host/…`: credentials in a URL stay
/// out of messages.
pub(crate) fn hide_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let hidden = format!("***{}{}", &authority[at..], tail);
    match scheme {
        Some(s) => format!("{s}://{hidden}"),
        None => hidden,
    }
}

/// [`hide_userinfo`] for every URL inside a free text (e.g. reqwest's error messages).
pub(crate) fn scrub_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| matches!(c, '/' | '?' | '#' | ')' | '"' | '\'') || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The first `max` characters of `s`.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// What an error body said.
#[derive(Debug, Default)]
pub(crate) struct ErrorInfo {
    pub message: String,
    /// `error.type` / `error.code` when the body was JSON.
    pub kind: Option<String>,
    pub code: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub context_tokens: Option<u64>,
}

/// Understands `{"error":{"message":..}}`, `{"error":".."}`, `{"message":..}`,
/// `{"detail":..}` and plain text.
pub(crate) fn parse_error_body(body: &[u8]) -> ErrorInfo {
    let text = String::from_utf8_lossy(body);
    let Ok(v) = serde_json::from_str::<Value>(text.trim()) else {
        return ErrorInfo {
            message: one_line(&text),
            ..Default::default()
        };
    };
    let mut info = ErrorInfo::default();
    let err = v.get("error").unwrap_or(&v);
    let str_of = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    info.message = match err {
        Value::String(s) => s.clone(),
        _ => str_of(err.get("message"))
            .or_else(|| str_of(v.get("message")))
            .or_else(|| str_of(v.get("detail")))
            .unwrap_or_else(|| v.to_string()),
    };
    info.message = one_line(&info.message);
    info.kind = str_of(err.get("type"));
    info.code = str_of(err.get("code"));
    info.prompt_tokens = err.get("n_prompt_tokens").and_then(Value::as_u64);
    info.context_tokens = err.get("n_ctx").and_then(Value::as_u64);
    info
}

/// Turns an error status and body into the error a caller can act on.
pub(crate) fn status_error(url: &str, status: u16, info: ErrorInfo, model: &str) -> LlmError {
    let lower = info.message.to_ascii_lowercase();
    let is = |s: &str| info.kind.as_deref() == Some(s) || info.code.as_deref() == Some(s);
    let message = if info.message.is_empty() {
        format!("HTTP {status} with an empty body")
    } else {
        info.message.clone()
    };
    if is("exceed_context_size_error")
        || is("context_length_exceeded")
        || lower.contains("context length")
        || lower.contains("context size")
        || lower.contains("context window")
        || lower.contains("`inputs` tokens + `max_new_tokens`")
    {
        let said = super::Refusal::from_message(&info.message);
        return LlmError::ContextExceeded {
            message,
            prompt_tokens: info.prompt_tokens.or(said.prompt_tokens.map(|n| n as u64)),
            context_tokens: info
                .context_tokens
                .or(said.context_tokens.map(|n| n as u64)),
        };
    }
    // Only a message about the model counts: llama.cpp answers a wrong path with a JSON
    // 404 too ("File Not Found"), which is a base URL problem, not a model problem.
    let mentions_model = lower.contains("model");
    let says_unknown_model = is("model_not_found")
        || (mentions_model
            && (lower.contains("not found")
                || lower.contains("does not exist")
                || lower.contains("unknown")
                || status == 404));
    if says_unknown_model {
        return LlmError::UnknownModel {
            model: model.to_string(),
            message,
        };
    }
    let message = if status == 404 {
        format!(
            "{message} (is the base URL right? it should end where the API paths start, e.g. …/v1)"
        )
    } else {
        message
    };
    LlmError::Http {
        url: url.to_string(),
        status,
        message,
    }
}

/// Reads an error response's body (bounded in size and time) and classifies it.
pub(crate) async fn error_response(
    mut resp: reqwest::Response,
    url: &str,
    model: &str,
    key: Option<&ApiKey>,
    timeout: Duration,
) -> LlmError {
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout.min(Duration::from_secs(10));
    while body.len() < MAX_ERROR_BODY {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(c))) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    let mut info = parse_error_body(&body);
    info.message = redact(&info.message, key);
    status_error(url, status, info, model)
}

pub(crate) fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Where an answer stands, for the deadline of the next read (a `Send` snapshot: the
/// token callback inside `Run` is not `Sync`).
pub(crate) struct Progress<'a> {
    pub got_token: bool,
    pub last_event: Instant,
    pub text: &'a str,
}

/// A response body read chunk by chunk under the first-token and idle deadlines.
pub(crate) struct Body {
    resp: reqwest::Response,
    url: String,
    timeouts: Timeouts,
    deadline_first: Instant,
}

impl Body {
    pub(crate) fn new(
        resp: reqwest::Response,
        url: &str,
        timeouts: Timeouts,
        start: Instant,
    ) -> Self {
        Body {
            resp,
            url: url.to_string(),
            timeouts,
            deadline_first: start + timeouts.first_token,
        }
    }

    /// The next chunk, `None` at a clean end of the body.
    pub(crate) async fn next(
        &mut self,
        run: Progress<'_>,
    ) -> Result<Option<bytes::Bytes>, LlmError> {
        let got_token = run.got_token;
        let deadline = if got_token {
            run.last_event + self.timeouts.idle
        } else {
            self.deadline_first
        };
        match tokio::time::timeout_at(deadline.into(), self.resp.chunk()).await {
            Err(_) if got_token => Err(LlmError::Stalled {
                after: self.timeouts.idle,
                partial: run.text.to_string(),
            }),
            Err(_) => Err(LlmError::FirstTokenTimeout {
                url: self.url.clone(),
                after: self.timeouts.first_token,
            }),
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(e)) => Err(LlmError::Cut {
                reason: format!("connection lost: {}", error_chain(&e)),
                partial: run.text.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_one_line_messages() {
        let i = parse_error_body(
            br#"{"error":{"code":400,"message":"bad\nthing","type":"invalid_request_error"}}"#,
        );
        assert_eq!(i.message, "bad thing");
        assert_eq!(i.kind.as_deref(), Some("invalid_request_error"));
        assert_eq!(
            parse_error_body(br#"{"error":"model \"x\" not found"}"#).message,
            "model \"x\" not found"
        );
        assert_eq!(parse_error_body(br#"{"detail":"nope"}"#).message, "nope");
        let plain = parse_error_body(b"<html>\n<h1>502 Bad Gateway</h1>\n</html>");
        assert_eq!(plain.kind, None);
        assert_eq!(plain.message, "<html> <h1>502 Bad Gateway</h1> </html>");
        let long = "x".repeat(1000);
        assert!(parse_error_body(long.as_bytes()).message.chars().count() <= MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn statuses_are_classified() {
        let e = |status, body: &[u8]| status_error("u", status, parse_error_body(body), "m");
        assert!(matches!(
            e(
                404,
                br#"{"error":"model \"m\" not found, try pulling it first"}"#
            ),
            LlmError::UnknownModel { .. }
        ));
        assert!(matches!(
            e(
                400,
                br#"{"error":{"message":"The model `m` does not exist","code":"model_not_found"}}"#
            ),
            LlmError::UnknownModel { .. }
        ));
        assert!(matches!(
            e(404, b"404 page not found"),
            LlmError::Http { status: 404, .. }
        ));
        let ctx = e(400, br#"{"error":{"code":400,"message":"request (5000 tokens) exceeds the available context size (2048 tokens)","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":2048}}"#);
        assert_eq!(
            ctx,
            LlmError::ContextExceeded {
                message: "request (5000 tokens) exceeds the available context size (2048 tokens)"
                    .into(),
                prompt_tokens: Some(5000),
                context_tokens: Some(2048)
            }
        );
        assert!(matches!(
            e(429, br#"{"error":{"message":"slow down"}}"#),
            LlmError::Http { status: 429, .. }
        ));
    }

    #[test]
    fn credentials_in_urls_are_hidden() {
        assert_eq!(
            hide_userinfo("http://u:pw@h:1/v1?x=@"),
            "http://***@h:1/v1?x=@"
        );
        assert_eq!(hide_userinfo("http://h:1/v1"), "http://h:1/v1");
        assert_eq!(hide_userinfo("u:pw@h"), "***@h");
        assert_eq!(
            scrub_urls("error for url (http://u:pw@h/v1) then https://x.example/a@b and ftp://k@z"),
            "error for url (http://***@h/v1) then https://x.example/a@b and ftp://***@z"
        );
        let e = Endpoint::new(
            "http://me:hunter2@127.0.0.1:9/v1",
            super::super::Timeouts::default(),
        )
        .unwrap();
        assert_eq!(
            e.shown(&e.url("/models")),
            "http://***@127.0.0.1:9/v1/models"
        );
        let bad =
            Endpoint::new("ftp://me:hunter2@h/v1", super::super::Timeouts::default()).unwrap_err();
        assert!(!bad.to_string().contains("hunter2"), "{bad}");
    }

    #[test]
    fn api_key_is_redacted_and_hidden_from_debug() {
        let k = ApiKey::new("sk-secret-123".into());
        assert_eq!(redact("bad key sk-secret-123!", Some(&k)), "bad key ***!");
        assert!(!format!("{k:?}").contains("secret"));
    }
}
