//! The crawl report: one entry per resource with its outcome, saved as JSON
//! beside the corpus (`crawl-report.json`) and summarised for `ragmap status`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// What happened to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Fetched and stored (new or changed document).
    Ok,
    /// Fetched; same content as the stored document, which was left untouched.
    Unchanged,
    /// The server answered 304 to a conditional request; document left untouched.
    NotModified,
    /// Kept from an interrupted previous run (resumed, not fetched again).
    Kept,
    RobotsDisallowed,
    /// 404 or 410.
    NotFound,
    /// Any other 4xx (or a 5xx that is not retried).
    HttpError,
    /// No answer within the configured timeouts, retries included.
    Timeout,
    /// Larger than `max_bytes`; reading stopped at the limit.
    TooLarge,
    /// Not text, HTML or PDF (also binary bytes labelled as text).
    Binary,
    /// An HTML shell with scripts and no readable content.
    JsOnly,
    /// Readable format but no meaningful text.
    Empty,
    RedirectLoop,
    TooManyRedirects,
    /// 429/5xx/transient errors on every attempt.
    FailedAfterRetries,
    /// DNS failure, connection refused, connect timeout: the host cannot be reached.
    Unreachable,
    /// Resolves to a private or loopback address while `block_private` applies.
    BlockedPrivate,
    /// Not an http(s) URL, or unparsable.
    InvalidUrl,
    /// A redirect led to a page another resource already fetched in this run.
    Duplicate,
    /// Text extraction failed (e.g. a PDF the extractor cannot read).
    ExtractFailed,
    /// The document could not be written.
    WriteFailed,
    /// Ctrl-C arrived before this resource finished.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Unchanged => "unchanged",
            Outcome::NotModified => "not-modified",
            Outcome::Kept => "kept",
            Outcome::RobotsDisallowed => "robots-disallowed",
            Outcome::NotFound => "not-found",
            Outcome::HttpError => "http-error",
            Outcome::Timeout => "timeout",
            Outcome::TooLarge => "too-large",
            Outcome::Binary => "binary",
            Outcome::JsOnly => "js-only",
            Outcome::Empty => "empty",
            Outcome::RedirectLoop => "redirect-loop",
            Outcome::TooManyRedirects => "too-many-redirects",
            Outcome::FailedAfterRetries => "failed-after-retries",
            Outcome::Unreachable => "unreachable",
            Outcome::BlockedPrivate => "blocked-private",
            Outcome::InvalidUrl => "invalid-url",
            Outcome::Duplicate => "duplicate",
            Outcome::ExtractFailed => "extract-failed",
            Outcome::WriteFailed => "write-failed",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// The corpus holds a current document for this resource.
    pub fn has_document(self) -> bool {
        matches!(
            self,
            Outcome::Ok | Outcome::Unchanged | Outcome::NotModified | Outcome::Kept
        )
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One resource (or followed link) of a crawl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The URL as the roadmap wrote it (or the followed link).
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_url: Option<String>,
    pub outcome: Outcome,
    /// Human-readable detail: the error, the status, the limit hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// HTTP requests made for this resource (redirect hops and retries included).
    #[serde(default)]
    pub requests: u32,
    /// Every URL after the first that a redirect led to, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirects: Vec<String>,
    /// Document path relative to the corpus root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// 0 for roadmap links, n for pages found n links away.
    #[serde(default)]
    pub depth: u32,
    #[serde(default)]
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrawlReport {
    pub ragmap_version: String,
    pub started_at: String,
    pub finished_at: String,
    pub elapsed_secs: f64,
    /// The roadmap path or URL crawled.
    pub roadmap: String,
    pub depth: u32,
    /// True when Ctrl-C stopped the run; the next run resumes it.
    pub interrupted: bool,
    pub entries: Vec<Entry>,
}

impl CrawlReport {
    /// Number of entries per outcome.
    pub fn counts(&self) -> BTreeMap<Outcome, usize> {
        let mut m = BTreeMap::new();
        for e in &self.entries {
            *m.entry(e.outcome).or_insert(0) += 1;
        }
        m
    }

    /// Entries that ended up somewhere other than where they started.
    pub fn redirected(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| !e.redirects.is_empty())
            .count()
    }

    /// A few lines: totals, outcomes by reason, where the report is.
    pub fn summary(&self) -> String {
        let counts = self.counts();
        let stored = self
            .entries
            .iter()
            .filter(|e| e.outcome.has_document())
            .count();
        let mut s = format!(
            "crawl{} {}: {} resources in {:.1}s, {} documents current",
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            self.finished_at,
            self.entries.len(),
            self.elapsed_secs,
            stored
        );
        let parts: Vec<String> = counts.iter().map(|(o, n)| format!("{o} {n}")).collect();
        s.push_str("\n  ");
        s.push_str(&parts.join(", "));
        let r = self.redirected();
        if r > 0 {
            s.push_str(&format!(" (redirected {r})"));
        }
        s
    }

    /// Writes the report atomically as pretty JSON.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::corpus::write_atomic(path, &json)
    }
}

/// `<corpus dir's parent>/crawl-report.json`.
pub fn report_path(config: &Config) -> PathBuf {
    let corpus = config.corpus_dir();
    corpus
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
        .join("crawl-report.json")
}

/// The last saved report, if there is a readable one.
pub fn load_report(path: &Path) -> Option<CrawlReport> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// One line for `ragmap status`.
pub fn status_line(report: &CrawlReport) -> String {
    let stored = report
        .entries
        .iter()
        .filter(|e| e.outcome.has_document())
        .count();
    let failed = report.entries.len() - stored;
    format!(
        "last crawl {}{}: {} resources, {} documents, {} not stored",
        report.finished_at,
        if report.interrupted {
            " (interrupted)"
        } else {
            ""
        },
        report.entries.len(),
        stored,
        failed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(url: &str, outcome: Outcome) -> Entry {
        Entry {
            url: url.into(),
            final_url: None,
            outcome,
            detail: None,
            http_status: None,
            requests: 1,
            redirects: vec![],
            document: None,
            depth: 0,
            elapsed_ms: 3,
        }
    }

    #[test]
    fn saves_loads_and_summarises() {
        let dir = tempfile::tempdir().unwrap();
        let report = CrawlReport {
            ragmap_version: "0".into(),
            started_at: "a".into(),
            finished_at: "b".into(),
            elapsed_secs: 1.5,
            roadmap: "r.md".into(),
            depth: 0,
            interrupted: false,
            entries: vec![
                entry("https://a/", Outcome::Ok),
                entry("https://b/", Outcome::Ok),
                entry("https://c/", Outcome::RobotsDisallowed),
            ],
        };
        let p = dir.path().join("crawl-report.json");
        report.save(&p).unwrap();
        let back = load_report(&p).unwrap();
        assert_eq!(back, report);
        assert!(
            back.summary().contains("ok 2, robots-disallowed 1"),
            "{}",
            back.summary()
        );
        assert!(status_line(&back).contains("3 resources, 2 documents, 1 not stored"));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"robots-disallowed\""));
        assert!(load_report(&dir.path().join("missing.json")).is_none());
        std::fs::write(&p, "{not json").unwrap();
        assert!(load_report(&p).is_none());
    }
}
