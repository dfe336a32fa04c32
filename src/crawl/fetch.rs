//! HTTP with manners: one request at a time per host with a pause between
//! them, a global cap on requests in flight, robots.txt (with Crawl-delay),
//! timeouts on connect / silence / whole response, retries with exponential
//! backoff and jitter on 429, 5xx and timeouts (honouring Retry-After),
//! redirects followed by hand (each hop checked against robots.txt and
//! politeness, loops detected), and a size cap enforced while streaming.
//!
//! Hosts that cannot be reached (DNS failure, connection refused, connect
//! timeout) are remembered for the run, so their other links fail at once.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
    LOCATION, RETRY_AFTER,
};
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;
use url::Url;

use super::report::Outcome;
use super::sniff;
use crate::term;

/// Product token matched against robots.txt `User-agent` lines.
pub const ROBOTS_AGENT: &str = "ragmap";

/// Longest Crawl-delay honoured; a robots.txt asking for more gets this.
const MAX_CRAWL_DELAY: Duration = Duration::from_secs(60);
/// A Retry-After longer than this ends the retries for the resource.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);
/// robots.txt files are read up to this size (RFC 9309 asks for at least 500 KiB).
const ROBOTS_MAX_BYTES: u64 = 512 * 1024;
const ROBOTS_MAX_REDIRECTS: usize = 5;

/// `ragmap/<version> (+https://github.com/ragmap)`.
pub fn user_agent() -> String {
    format!(
        "ragmap/{} (+https://github.com/ragmap)",
        env!("CARGO_PKG_VERSION")
    )
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub concurrency: usize,
    pub host_delay: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub total_timeout: Duration,
    pub max_retries: u32,
    pub retry_base: Duration,
    pub max_bytes: u64,
    pub max_redirects: usize,
    pub block_private: bool,
}

/// Validators of the stored copy, sent so an unchanged page costs a 304.
#[derive(Debug, Clone, Default)]
pub struct Conditional {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// A final (non-redirect) successful answer: 2xx with its body, or 304.
#[derive(Debug, Clone)]
pub struct Response {
    pub final_url: Url,
    pub redirects: Vec<String>,
    pub status: u16,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub body: Vec<u8>,
    pub requests: u32,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub outcome: Outcome,
    pub detail: String,
    pub status: Option<u16>,
    pub final_url: Option<String>,
    pub redirects: Vec<String>,
    pub requests: u32,
}

impl Failure {
    fn new(outcome: Outcome, detail: impl Into<String>) -> Failure {
        Failure {
            outcome,
            detail: detail.into(),
            status: None,
            final_url: None,
            redirects: Vec::new(),
            requests: 0,
        }
    }
    fn status(mut self, s: u16) -> Failure {
        self.status = Some(s);
        self
    }
}

/// One HTTP exchange.
#[derive(Clone)]
enum Attempt {
    Done {
        status: u16,
        content_type: Option<String>,
        etag: Option<String>,
        last_modified: Option<String>,
        body: Vec<u8>,
    },
    Redirect {
        location: String,
    },
    Retryable {
        detail: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
        timeout: bool,
    },
    Fatal(Failure),
}

struct HostState {
    /// When the last request to the host finished; the next may start `delay` later.
    last_end: Option<Instant>,
    delay: Duration,
    down: Option<String>,
}

struct Host {
    gate: tokio::sync::Mutex<HostState>,
}

enum Robots {
    Rules(Box<texting_robots::Robot>),
    AllowAll,
    DisallowAll(String),
    Failed(Failure),
}

#[derive(Debug, thiserror::Error)]
#[error("refusing to connect to a private or loopback address ({0})")]
pub struct PrivateAddress(pub IpAddr);

pub struct Fetcher {
    client: reqwest::Client,
    s: Settings,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    robots: Mutex<HashMap<String, Arc<OnceCell<Robots>>>>,
    /// Each robots.txt URL's answer, requested once per run: the robots.txt
    /// of `http://h` often redirects to that of `https://h`, which the pages
    /// of `https://h` need too, and the first pages of both may ask at once.
    robots_files: Mutex<HashMap<String, Arc<OnceCell<Attempt>>>>,
    global: Semaphore,
    claimed: Mutex<HashSet<String>>,
}

impl Fetcher {
    pub fn new(s: Settings) -> Result<Fetcher, reqwest::Error> {
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static(
                "text/html,application/xhtml+xml,text/markdown;q=0.9,text/plain;q=0.9,application/pdf;q=0.8,*/*;q=0.5",
            ),
        );
        let mut builder = reqwest::Client::builder()
            .user_agent(user_agent())
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(s.connect_timeout)
            .read_timeout(s.read_timeout)
            .gzip(true)
            .brotli(true)
            .pool_idle_timeout(Duration::from_secs(30));
        if s.block_private {
            builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        Ok(Fetcher {
            client: builder.build()?,
            global: Semaphore::new(s.concurrency.max(1)),
            s,
            hosts: Mutex::new(HashMap::new()),
            robots: Mutex::new(HashMap::new()),
            robots_files: Mutex::new(HashMap::new()),
            claimed: Mutex::new(HashSet::new()),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.s
    }

    /// Fetches `start`, following redirects. A 304 comes back as a `Response`
    /// with status 304 and an empty body.
    pub async fn fetch(&self, start: &Url, cond: &Conditional) -> Result<Response, Failure> {
        let mut chain = Redirects::from(start);
        loop {
            let url = chain.url.clone();
            self.check_url(&url).map_err(|f| chain.fail(f))?;
            if let Err(f) = self.robots_allow(&url).await {
                return Err(chain.fail(f));
            }
            if !self.claim(&url) && !chain.followed.is_empty() {
                let f = Failure::new(
                    Outcome::Duplicate,
                    format!("redirects to {url}, already fetched in this run"),
                );
                return Err(chain.fail(f));
            }
            let (attempt, n) = self.with_retries(&url, cond, self.s.max_bytes).await;
            chain.requests += n;
            match attempt {
                Attempt::Done {
                    status,
                    content_type,
                    etag,
                    last_modified,
                    body,
                } => {
                    return Ok(Response {
                        final_url: url,
                        redirects: chain.followed,
                        status,
                        content_type,
                        etag,
                        last_modified,
                        body,
                        requests: chain.requests,
                    })
                }
                Attempt::Redirect { location } => {
                    let followed = chain.follow(&location, self.s.max_redirects);
                    followed.map_err(|f| chain.fail(f))?;
                }
                Attempt::Retryable { detail, .. } => {
                    let f = Failure::new(Outcome::FailedAfterRetries, detail);
                    return Err(chain.fail(f));
                }
                Attempt::Fatal(f) => return Err(chain.fail(f)),
            }
        }
    }

    /// Scheme and literal-address checks before any request.
    fn check_url(&self, url: &Url) -> Result<(), Failure> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Failure::new(
                Outcome::InvalidUrl,
                format!("unsupported scheme {}", url.scheme()),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Failure::new(Outcome::InvalidUrl, "no host"));
        }
        if self.s.block_private && is_private_host(url) {
            return Err(Failure::new(
                Outcome::BlockedPrivate,
                format!(
                    "{} is a private or loopback address",
                    url.host_str().unwrap_or("")
                ),
            ));
        }
        Ok(())
    }

    /// Records that `url` is being fetched; false when it already was in this run.
    fn claim(&self, url: &Url) -> bool {
        let mut c = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        c.insert(without_fragment(url))
    }

    fn host(&self, url: &Url) -> Arc<Host> {
        let key = host_key(url);
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Host {
                    gate: tokio::sync::Mutex::new(HostState {
                        last_end: None,
                        delay: self.s.host_delay,
                        down: None,
                    }),
                })
            })
            .clone()
    }

    /// One URL, retried on 429/5xx/timeouts. Returns the last attempt (never
    /// `Retryable`) and the number of requests made.
    async fn with_retries(&self, url: &Url, cond: &Conditional, cap: u64) -> (Attempt, u32) {
        let host = self.host(url);
        let mut requests = 0u32;
        let mut attempt_no = 0u32;
        loop {
            let attempt = {
                let mut st = host.gate.lock().await;
                if let Some(d) = &st.down {
                    let f = Failure::new(
                        Outcome::Unreachable,
                        format!("host unreachable earlier in this run: {d}"),
                    );
                    return (Attempt::Fatal(f), requests);
                }
                if let Some(t) = st.last_end {
                    tokio::time::sleep_until(t + st.delay).await;
                }
                let attempt = {
                    let _permit = self.global.acquire().await;
                    requests += 1;
                    self.attempt(url, cond, cap).await
                };
                st.last_end = Some(Instant::now());
                if let Attempt::Fatal(f) = &attempt {
                    if f.outcome == Outcome::Unreachable {
                        st.down = Some(f.detail.clone());
                    }
                }
                attempt
            };
            match attempt {
                Attempt::Retryable {
                    detail,
                    status,
                    retry_after,
                    timeout,
                } => {
                    let exhausted = attempt_no >= self.s.max_retries;
                    let wait =
                        retry_after.unwrap_or_else(|| backoff(self.s.retry_base, attempt_no));
                    if exhausted || wait > MAX_RETRY_WAIT {
                        let why = if exhausted {
                            format!("{detail} ({} attempts)", attempt_no + 1)
                        } else {
                            format!("{detail}; server asked to wait {}s", wait.as_secs())
                        };
                        let outcome = if timeout {
                            Outcome::Timeout
                        } else {
                            Outcome::FailedAfterRetries
                        };
                        let mut f = Failure::new(outcome, why);
                        f.status = status;
                        return (Attempt::Fatal(f), requests);
                    }
                    attempt_no += 1;
                    tokio::time::sleep(wait).await;
                }
                other => return (other, requests),
            }
        }
    }

    /// A single request with its timeouts and size cap.
    async fn attempt(&self, url: &Url, cond: &Conditional, cap: u64) -> Attempt {
        let deadline = Instant::now() + self.s.total_timeout;
        let resp = match self.send(url, cond).await {
            Ok(resp) => resp,
            Err(attempt) => return attempt,
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if let Some(settled) = settled_by_status(status, &headers) {
            return settled;
        }
        let content_type = header(&headers, reqwest::header::CONTENT_TYPE);
        let etag = header(&headers, ETAG);
        let last_modified = header(&headers, LAST_MODIFIED);
        let body = if status == 304 {
            Vec::new()
        } else {
            let announced = resp.content_length();
            if let Some(refused) =
                refused_body(status, announced, &headers, content_type.as_deref(), cap)
            {
                return refused;
            }
            match self.read_body(resp, deadline, cap, status).await {
                Ok(body) => body,
                Err(attempt) => return attempt,
            }
        };
        Attempt::Done {
            status,
            content_type,
            etag,
            last_modified,
            body,
        }
    }

    /// Sends the request with the stored copy's validators; waits for the
    /// response's head no longer than the read (and total) timeout.
    async fn send(&self, url: &Url, cond: &Conditional) -> Result<reqwest::Response, Attempt> {
        let mut req = self.client.get(url.clone());
        if let Some(e) = &cond.etag {
            req = req.header(IF_NONE_MATCH, e);
        }
        if let Some(lm) = &cond.last_modified {
            req = req.header(IF_MODIFIED_SINCE, lm);
        }
        let first_wait = self.s.read_timeout.min(self.s.total_timeout);
        match tokio::time::timeout(first_wait, req.send()).await {
            Err(_) => Err(timeout_attempt(format!(
                "no response within {:.1}s",
                first_wait.as_secs_f64()
            ))),
            Ok(Err(e)) => Err(error_attempt(&e)),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// The body, read chunk by chunk: each chunk within the read timeout, the
    /// whole by `deadline`, never more than `cap` bytes.
    async fn read_body(
        &self,
        mut resp: reqwest::Response,
        deadline: Instant,
        cap: u64,
        status: u16,
    ) -> Result<Vec<u8>, Attempt> {
        let mut body: Vec<u8> = Vec::new();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(timeout_attempt(format!(
                    "response not complete within {:.1}s",
                    self.s.total_timeout.as_secs_f64()
                )));
            }
            let wait = self.s.read_timeout.min(deadline - now);
            match tokio::time::timeout(wait, resp.chunk()).await {
                Err(_) => {
                    return Err(timeout_attempt(format!(
                        "body stalled or exceeded the time limit after {} bytes",
                        body.len()
                    )))
                }
                Ok(Err(e)) => return Err(error_attempt(&e)),
                Ok(Ok(None)) => return Ok(body),
                Ok(Ok(Some(chunk))) => {
                    if body.len() as u64 + chunk.len() as u64 > cap {
                        return Err(Attempt::Fatal(
                            Failure::new(
                                Outcome::TooLarge,
                                format!("stopped reading at the {cap}-byte limit"),
                            )
                            .status(status),
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
            }
        }
    }

    /// Whether robots.txt of `url`'s origin lets us fetch it. The file is
    /// fetched once per origin per run; its Crawl-delay slows the host down.
    async fn robots_allow(&self, url: &Url) -> Result<(), Failure> {
        let origin = url.origin().ascii_serialization();
        let cell = {
            let mut m = self.robots.lock().unwrap_or_else(|e| e.into_inner());
            m.entry(origin).or_default().clone()
        };
        let robots = cell.get_or_init(|| self.load_robots(url)).await;
        match robots {
            Robots::AllowAll => Ok(()),
            Robots::Rules(r) => {
                if r.allowed(url.as_str()) {
                    Ok(())
                } else {
                    Err(Failure::new(
                        Outcome::RobotsDisallowed,
                        "disallowed by robots.txt",
                    ))
                }
            }
            Robots::DisallowAll(why) => Err(Failure::new(Outcome::RobotsDisallowed, why.clone())),
            Robots::Failed(f) => Err(f.clone()),
        }
    }

    /// The answer to one robots.txt request, fetched (with retries) by the
    /// first caller; later and concurrent callers get the same answer.
    async fn robots_file(&self, robots_url: &Url) -> Attempt {
        let cell = {
            let mut m = self.robots_files.lock().unwrap_or_else(|e| e.into_inner());
            m.entry(without_fragment(robots_url)).or_default().clone()
        };
        cell.get_or_init(|| async {
            self.claim(robots_url);
            self.with_retries(robots_url, &Conditional::default(), ROBOTS_MAX_BYTES)
                .await
                .0
        })
        .await
        .clone()
    }

    async fn load_robots(&self, url: &Url) -> Robots {
        let Ok(mut robots_url) = url.join("/robots.txt") else {
            return Robots::AllowAll;
        };
        for _ in 0..=ROBOTS_MAX_REDIRECTS {
            if robots_url.scheme() != url.scheme()
                && !matches!(robots_url.scheme(), "http" | "https")
            {
                return Robots::AllowAll;
            }
            match self.robots_file(&robots_url).await {
                Attempt::Done { body, status, .. } => {
                    if status != 200 && body.is_empty() {
                        return Robots::AllowAll;
                    }
                    return match texting_robots::Robot::new(ROBOTS_AGENT, &body) {
                        Ok(r) => {
                            if let Some(d) = crawl_delay(r.delay) {
                                let host = self.host(url);
                                let mut st = host.gate.lock().await;
                                st.delay = st.delay.max(d);
                            }
                            Robots::Rules(Box::new(r))
                        }
                        Err(_) => Robots::AllowAll,
                    };
                }
                Attempt::Redirect { location } => match robots_url.join(&location) {
                    Ok(next) => robots_url = next,
                    Err(_) => return Robots::AllowAll,
                },
                Attempt::Retryable { detail, .. } => {
                    return Robots::DisallowAll(format!("robots.txt unavailable: {detail}"))
                }
                Attempt::Fatal(f) => {
                    return match f.outcome {
                        // RFC 9309: a server error means "assume complete disallow".
                        Outcome::FailedAfterRetries => {
                            Robots::DisallowAll(format!("robots.txt unavailable: {}", f.detail))
                        }
                        Outcome::Unreachable | Outcome::BlockedPrivate | Outcome::Timeout => {
                            Robots::Failed(f)
                        }
                        _ => Robots::AllowAll,
                    };
                }
            }
        }
        Robots::AllowAll
    }
}

fn header(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(str::to_string)
}

/// What a status alone decides: a redirect, a retry (429, 5xx but 501), not
/// found, or another error. `None` for 2xx and 304, whose body is wanted.
fn settled_by_status(status: u16, headers: &HeaderMap) -> Option<Attempt> {
    if (300..400).contains(&status) && status != 304 {
        return Some(match header(headers, LOCATION) {
            Some(location) => Attempt::Redirect { location },
            None => Attempt::Fatal(
                Failure::new(
                    Outcome::HttpError,
                    format!("HTTP {status} without Location"),
                )
                .status(status),
            ),
        });
    }
    if status == 429 || (500..600).contains(&status) && status != 501 {
        return Some(Attempt::Retryable {
            detail: format!("HTTP {status}"),
            status: Some(status),
            retry_after: header(headers, RETRY_AFTER).and_then(|v| parse_retry_after(&v)),
            timeout: false,
        });
    }
    let outcome = match status {
        404 | 410 => Outcome::NotFound,
        200..=299 | 304 => return None,
        _ => Outcome::HttpError,
    };
    Some(Attempt::Fatal(
        Failure::new(outcome, format!("HTTP {status}")).status(status),
    ))
}

/// A body refused before reading it: larger than `cap` by its announced
/// length, or of a binary media type.
fn refused_body(
    status: u16,
    announced: Option<u64>,
    headers: &HeaderMap,
    content_type: Option<&str>,
    cap: u64,
) -> Option<Attempt> {
    if let Some(len) = announced {
        // Content-Length counts encoded bytes; a compressed body may still grow
        // past the cap, which the streaming check in read_body catches.
        if len > cap && headers.get(reqwest::header::CONTENT_ENCODING).is_none() {
            return Some(Attempt::Fatal(
                Failure::new(
                    Outcome::TooLarge,
                    format!("{len} bytes announced, limit {cap}"),
                )
                .status(status),
            ));
        }
    }
    let media = sniff::media_type(content_type)?;
    sniff::binary_media_type(&media).then(|| {
        Attempt::Fatal(
            Failure::new(Outcome::Binary, format!("content type {media}")).status(status),
        )
    })
}

fn timeout_attempt(detail: String) -> Attempt {
    Attempt::Retryable {
        detail,
        status: None,
        retry_after: None,
        timeout: true,
    }
}

fn error_attempt(e: &reqwest::Error) -> Attempt {
    if let Some(p) = find_source::<PrivateAddress>(e) {
        return Attempt::Fatal(Failure::new(Outcome::BlockedPrivate, p.to_string()));
    }
    if e.is_connect() {
        return Attempt::Fatal(Failure::new(Outcome::Unreachable, term::one_line(e)));
    }
    if e.is_timeout() {
        return timeout_attempt(term::one_line(e));
    }
    if e.is_decode() {
        return Attempt::Fatal(Failure::new(Outcome::FailedAfterRetries, term::one_line(e)));
    }
    Attempt::Retryable {
        detail: term::one_line(e),
        status: None,
        retry_after: None,
        timeout: false,
    }
}

fn find_source<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

/// A robots.txt Crawl-delay as a pause, capped at [`MAX_CRAWL_DELAY`]; nonsense
/// values (negative, NaN, infinite) are ignored.
fn crawl_delay(v: Option<f32>) -> Option<Duration> {
    let d = v.filter(|d| d.is_finite() && *d > 0.0)?;
    // Clamp before converting: a huge value would overflow Duration.
    Some(Duration::from_secs_f32(
        d.min(MAX_CRAWL_DELAY.as_secs_f32()),
    ))
}

/// `base * 2^n` plus up to `base` of jitter.
pub(crate) fn backoff(base: Duration, n: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << n.min(16));
    let jitter = rand::rng().random_range(0..=base.as_millis().min(u64::MAX as u128) as u64);
    exp + Duration::from_millis(jitter)
}

/// `Retry-After: <seconds>` or `Retry-After: <HTTP-date>`.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let when = time::PrimitiveDateTime::parse(v, &format)
        .ok()?
        .assume_utc();
    let now = time::OffsetDateTime::now_utc();
    let secs = (when - now).whole_seconds().max(0);
    Some(Duration::from_secs(secs as u64))
}

/// `host:port`: the unit of politeness.
pub fn host_key(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

pub fn without_fragment(url: &Url) -> String {
    let mut u = url.clone();
    u.set_fragment(None);
    u.to_string()
}

/// Literal private/loopback addresses and `localhost` names.
pub fn is_private_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => is_private_ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_private_ip(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        None => false,
    }
}

pub fn is_private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_ip(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

/// DNS resolution that refuses names pointing at private addresses (so a
/// public-looking link or redirect cannot reach the local network).
struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| is_private_ip(a.ip())) {
                return Err(
                    Box::new(PrivateAddress(bad.ip())) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The redirects one fetch has followed so far.
struct Redirects {
    start: Url,
    /// Where the next request goes.
    url: Url,
    /// The URLs redirected to, in order.
    followed: Vec<String>,
    /// Every URL of the chain without its fragment, to notice a loop.
    seen: HashSet<String>,
    requests: u32,
}

impl Redirects {
    fn from(start: &Url) -> Redirects {
        Redirects {
            start: start.clone(),
            url: start.clone(),
            followed: Vec::new(),
            seen: HashSet::from([without_fragment(start)]),
            requests: 0,
        }
    }

    /// Moves on to `location` (relative to the current URL), unless it is
    /// malformed, already seen, or one redirect too many.
    fn follow(&mut self, location: &str, max_redirects: usize) -> Result<(), Failure> {
        let next = self.url.join(location).map_err(|e| {
            Failure::new(
                Outcome::HttpError,
                format!("bad redirect target {location:?}: {e}"),
            )
        })?;
        if !self.seen.insert(without_fragment(&next)) {
            self.followed.push(next.to_string());
            return Err(Failure::new(
                Outcome::RedirectLoop,
                format!(
                    "redirect loop: {} → {}",
                    self.start,
                    self.followed.join(" → ")
                ),
            ));
        }
        if self.followed.len() >= max_redirects {
            return Err(Failure::new(
                Outcome::TooManyRedirects,
                format!("more than {max_redirects} redirects"),
            ));
        }
        self.followed.push(next.to_string());
        self.url = next;
        Ok(())
    }

    /// `f` with where the chain ended and what it cost.
    fn fail(&self, mut f: Failure) -> Failure {
        f.final_url = Some(self.url.to_string());
        f.redirects = self.followed.clone();
        f.requests += self.requests;
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(120);
        let fmt = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let s = later.format(&fmt).unwrap();
        let d = parse_retry_after(&s).unwrap();
        assert!((118..=120).contains(&d.as_secs()), "{d:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn crawl_delay_is_capped_and_sane() {
        assert_eq!(crawl_delay(Some(2.5)), Some(Duration::from_millis(2500)));
        assert_eq!(crawl_delay(Some(1e30)), Some(MAX_CRAWL_DELAY));
        assert_eq!(crawl_delay(Some(f32::INFINITY)), None);
        assert_eq!(crawl_delay(Some(f32::NAN)), None);
        assert_eq!(crawl_delay(Some(-1.0)), None);
        assert_eq!(crawl_delay(None), None);
        let r = texting_robots::Robot::new(
            ROBOTS_AGENT,
            b"User-agent: *\nCrawl-delay: 99999999999999\n",
        )
        .unwrap();
        assert_eq!(crawl_delay(r.delay), Some(MAX_CRAWL_DELAY));
    }

    #[test]
    fn backoff_grows_with_jitter() {
        let base = Duration::from_millis(100);
        for n in 0..4 {
            let d = backoff(base, n);
            let lo = base * (1 << n);
            assert!(d >= lo && d <= lo + base, "{n}: {d:?}");
        }
    }

    #[test]
    fn private_addresses() {
        for u in [
            "http://127.0.0.1:8719/",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://[::1]/",
            "http://localhost/",
            "http://169.254.169.254/latest",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
        ] {
            assert!(is_private_host(&Url::parse(u).unwrap()), "{u}");
        }
        for u in [
            "https://github.com/",
            "http://8.8.8.8/",
            "http://[2606:4700::1111]/",
        ] {
            assert!(!is_private_host(&Url::parse(u).unwrap()), "{u}");
        }
    }

    #[test]
    fn user_agent_names_ragmap_and_version() {
        let ua = user_agent();
        assert!(ua.starts_with("ragmap/") && ua.contains(env!("CARGO_PKG_VERSION")));
    }
}
