//! The crawler: roadmap links → one corpus document per resource under
//! `<corpus>/web/`, plus `crawl-report.json` beside the corpus.
//!
//! Stages, one module each: [`fetch`] (politeness, robots.txt, retries,
//! redirects, limits), [`sniff`] (content type, charset), [`extract`]
//! (HTML/PDF → markdown), [`naming`] (URL → file name), [`report`] (outcomes).
//! Re-runs are incremental: stored validators make conditional requests and
//! unchanged documents are not rewritten. Ctrl-C keeps every finished
//! document; the next run resumes where the interrupted one stopped.

pub mod extract;
pub mod fetch;
mod github;
pub mod naming;
pub mod report;
pub mod sniff;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use url::Url;

use crate::config::{BlockPrivate, Config};
use crate::corpus::{self, now_rfc3339, FrontMatter};
use crate::roadmap;
use fetch::{Conditional, Failure, Fetcher, Response, Settings};
pub use report::{load_report, report_path, status_line, CrawlReport, Entry, Outcome};

/// How progress is shown while crawling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// An indicatif bar (for terminals).
    Bar,
    /// One plain line per finished resource on stderr.
    Lines,
    Quiet,
}

#[derive(Debug, Clone)]
pub struct CrawlOptions {
    /// A markdown file or an http(s) URL; `None`: `<corpus>/roadmap.md`.
    pub roadmap: Option<String>,
    /// Follow links this many hops from each roadmap page (same host only).
    pub depth: u32,
    pub progress: Progress,
    /// Overrides `crawl.block_private` from the config.
    pub block_private: Option<BlockPrivate>,
}

impl Default for CrawlOptions {
    fn default() -> Self {
        CrawlOptions {
            roadmap: None,
            depth: 0,
            progress: Progress::Quiet,
            block_private: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    #[error("cannot read the roadmap {path}: {source}")]
    ReadRoadmap {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot fetch the roadmap {url}: {detail}")]
    FetchRoadmap { url: String, detail: String },
    #[error("the roadmap {0} has no http(s) links")]
    NoLinks(String),
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the crawl report {path}: {source}")]
    WriteReport {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// One page to fetch.
#[derive(Debug, Clone)]
struct Job {
    index: usize,
    /// As written in the roadmap (or the followed link).
    url: String,
    fetch: Url,
    title: String,
    sections: Vec<String>,
    depth: u32,
}

/// What a finished job hands back.
struct Done {
    index: usize,
    entry: Entry,
    /// Same-host links to follow (only when depth allows).
    links: Vec<Url>,
    sections: Vec<String>,
}

struct Ctx {
    fetcher: Fetcher,
    corpus_dir: PathBuf,
    max_depth: u32,
}

/// Crawls every resource of the roadmap into the corpus. Per-resource
/// failures are outcomes in the report, not errors; errors are reserved for
/// a missing roadmap, an unwritable corpus and the like.
pub async fn crawl(config: &Config, opts: &CrawlOptions) -> Result<CrawlReport, CrawlError> {
    let started = Instant::now();
    let started_at = now_rfc3339();
    let c = &config.crawl;
    let block_private = match opts.block_private.unwrap_or(c.block_private) {
        BlockPrivate::Always => true,
        BlockPrivate::Never => false,
        BlockPrivate::Auto => opts.depth > 0,
    };
    let settings = Settings {
        concurrency: c.concurrency.max(1),
        host_delay: Duration::from_millis(c.per_host_delay_ms),
        connect_timeout: secs(c.connect_timeout_secs),
        read_timeout: secs(c.read_timeout_secs),
        total_timeout: secs(c.total_timeout_secs),
        max_retries: c.max_retries,
        retry_base: Duration::from_millis(c.retry_base_delay_ms),
        max_bytes: c.max_bytes,
        max_redirects: c.max_redirects,
        block_private,
    };
    let fetcher = Fetcher::new(settings)?;
    let corpus_dir = config.corpus_dir();
    let (label, markdown) = load_roadmap(&corpus_dir, opts.roadmap.as_deref(), &fetcher).await?;
    let body = corpus::parse(&markdown)
        .map(|(_, b)| b)
        .unwrap_or(&markdown);
    let map = roadmap::parse(body);
    if map.resources.is_empty() {
        return Err(CrawlError::NoLinks(label));
    }
    std::fs::create_dir_all(&corpus_dir).map_err(|source| CrawlError::CreateDir {
        path: corpus_dir.clone(),
        source,
    })?;
    remove_stale_temp_files(&corpus_dir.join(naming::WEB_DIR));
    let report_file = report_path(config);
    let resumable: HashMap<String, Entry> = load_report(&report_file)
        .filter(|r| r.interrupted)
        .map(|r| {
            r.entries
                .into_iter()
                .filter(|e| e.outcome.has_document())
                .map(|e| (e.url.clone(), e))
                .collect()
        })
        .unwrap_or_default();

    // Jobs: one per distinct fetch URL (fragments are never sent to servers).
    let mut entries: Vec<(usize, Entry)> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut per_host: HashMap<String, usize> = HashMap::new();
    let mut next_index = 0usize;
    for r in &map.resources {
        let index = next_index;
        next_index += 1;
        let parsed = Url::parse(&r.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"));
        let Some(u) = parsed else {
            entries.push((
                index,
                simple_entry(&r.url, Outcome::InvalidUrl, "not a valid http(s) URL"),
            ));
            continue;
        };
        let key = fetch::without_fragment(&u);
        if let Some(&j) = by_key.get(&key) {
            let job: &mut Job = &mut jobs[j];
            for s in &r.sections {
                if !job.sections.contains(s) {
                    job.sections.push(s.clone());
                }
            }
            continue;
        }
        by_key.insert(key.clone(), jobs.len());
        seen.insert(key);
        *per_host.entry(fetch::host_key(&u)).or_insert(0) += 1;
        jobs.push(Job {
            index,
            url: r.url.clone(),
            fetch: u,
            title: r.title.clone(),
            sections: r.sections.clone(),
            depth: 0,
        });
    }

    let ctx = Arc::new(Ctx {
        fetcher,
        corpus_dir: corpus_dir.clone(),
        max_depth: opts.depth,
    });
    let mut total = entries.len() + jobs.len();
    let bar = match opts.progress {
        Progress::Bar => {
            let b = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
            ) {
                b.set_style(style);
            }
            Some(b)
        }
        _ => None,
    };
    let mut done_count = entries.len();
    let mut set: JoinSet<Done> = JoinSet::new();
    let mut pending: HashMap<tokio::task::Id, (usize, String, u32)> = HashMap::new();
    let spawn = |set: &mut JoinSet<Done>, pending: &mut HashMap<_, _>, job: Job| {
        let ctx = ctx.clone();
        let info = (job.index, job.url.clone(), job.depth);
        let handle = set.spawn(async move { process(&ctx, job).await });
        pending.insert(handle.id(), info);
    };
    for job in jobs {
        if let Some(prev) = resumable.get(&job.url) {
            let doc_exists = prev
                .document
                .as_ref()
                .is_some_and(|d| corpus_dir.join(d).is_file());
            if doc_exists {
                let mut e = prev.clone();
                e.outcome = Outcome::Kept;
                e.detail = Some("finished before the previous run was interrupted".into());
                e.requests = 0;
                e.elapsed_ms = 0;
                entries.push((job.index, e));
                done_count += 1;
                continue;
            }
        }
        spawn(&mut set, &mut pending, job);
    }

    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    loop {
        tokio::select! {
            biased;
            _ = &mut ctrl_c => {
                interrupted = true;
                break;
            }
            next = set.join_next_with_id() => {
                let Some(next) = next else { break };
                let done = match next {
                    Ok((id, done)) => {
                        pending.remove(&id);
                        done
                    }
                    Err(err) => {
                        let (index, url, depth) = pending.remove(&err.id()).unwrap_or((usize::MAX, String::new(), 0));
                        let mut e = simple_entry(&url, Outcome::ExtractFailed, &format!("internal error: {err}"));
                        e.depth = depth;
                        Done { index, entry: e, links: Vec::new(), sections: Vec::new() }
                    }
                };
                done_count += 1;
                show_progress(opts.progress, bar.as_ref(), done_count, total, &done.entry);
                let depth = done.entry.depth;
                for link in done.links {
                    let key = fetch::without_fragment(&link);
                    let host = fetch::host_key(&link);
                    let count = per_host.entry(host).or_insert(0);
                    if *count >= config.crawl.max_pages_per_host || !seen.insert(key) {
                        continue;
                    }
                    *count += 1;
                    let index = next_index;
                    next_index += 1;
                    total += 1;
                    if let Some(b) = &bar {
                        b.set_length(total as u64);
                    }
                    let job = Job {
                        index,
                        url: link.to_string(),
                        fetch: link,
                        title: String::new(),
                        sections: done.sections.clone(),
                        depth: depth + 1,
                    };
                    spawn(&mut set, &mut pending, job);
                }
                entries.push((done.index, done.entry));
            }
        }
    }
    if interrupted {
        set.abort_all();
        while set.join_next().await.is_some() {}
        for (_, (index, url, depth)) in pending.drain() {
            let mut e = simple_entry(&url, Outcome::Interrupted, "stopped by Ctrl-C");
            e.depth = depth;
            entries.push((index, e));
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    entries.sort_by_key(|(i, _)| *i);
    let report = CrawlReport {
        ragmap_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        finished_at: now_rfc3339(),
        elapsed_secs: started.elapsed().as_secs_f64(),
        roadmap: label,
        depth: opts.depth,
        interrupted,
        entries: entries.into_iter().map(|(_, e)| e).collect(),
    };
    report
        .save(&report_file)
        .map_err(|source| CrawlError::WriteReport {
            path: report_file.clone(),
            source,
        })?;
    Ok(report)
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.001)).unwrap_or(Duration::from_secs(60))
}

fn simple_entry(url: &str, outcome: Outcome, detail: &str) -> Entry {
    Entry {
        url: url.to_string(),
        final_url: None,
        outcome,
        detail: Some(detail.to_string()),
        http_status: None,
        requests: 0,
        redirects: Vec::new(),
        document: None,
        depth: 0,
        elapsed_ms: 0,
    }
}

fn show_progress(
    mode: Progress,
    bar: Option<&indicatif::ProgressBar>,
    done: usize,
    total: usize,
    e: &Entry,
) {
    match mode {
        Progress::Bar => {
            if let Some(b) = bar {
                b.set_position(done as u64);
                b.set_message(format!("{} {}", e.outcome, e.url));
            }
        }
        Progress::Lines => {
            let detail = match (&e.detail, e.outcome.has_document()) {
                (Some(d), false) => format!(" ({d})"),
                _ => String::new(),
            };
            eprintln!(
                "[{done}/{total}] {:<18} {}{detail}",
                e.outcome.as_str(),
                e.url
            );
        }
        Progress::Quiet => {}
    }
}

/// The roadmap's markdown and a label for the report. A URL is fetched (an
/// HTML page is converted to markdown first); a path is read.
async fn load_roadmap(
    corpus_dir: &Path,
    source: Option<&str>,
    fetcher: &Fetcher,
) -> Result<(String, String), CrawlError> {
    let source = source.map(str::trim).filter(|s| !s.is_empty());
    if let Some(src) = source.filter(|s| roadmap::is_http_url(s)) {
        let fail = |detail: String| CrawlError::FetchRoadmap {
            url: src.to_string(),
            detail,
        };
        let url = Url::parse(src).map_err(|e| fail(e.to_string()))?;
        let resp = fetcher
            .fetch(&url, &Conditional::default())
            .await
            .map_err(|f| fail(format!("{}: {}", f.outcome, f.detail)))?;
        let host = resp.final_url.host_str().unwrap_or("").to_string();
        let kind = sniff::classify(
            resp.content_type.as_deref(),
            resp.final_url.path(),
            &resp.body,
        );
        let text = match kind {
            sniff::Kind::Text => {
                sniff::decode(&resp.body, resp.content_type.as_deref(), false, &host).0
            }
            sniff::Kind::Html => {
                let html = sniff::decode(&resp.body, resp.content_type.as_deref(), true, &host).0;
                extract::html_to_markdown(&html, &resp.final_url).markdown
            }
            _ => return Err(fail("not markdown or HTML".into())),
        };
        return Ok((src.to_string(), text));
    }
    let path = match source {
        Some(p) => PathBuf::from(p),
        None => corpus_dir.join("roadmap.md"),
    };
    let bytes = std::fs::read(&path).map_err(|source| CrawlError::ReadRoadmap {
        path: path.clone(),
        source,
    })?;
    let text = sniff::decode(&bytes, None, false, "").0;
    Ok((path.display().to_string(), text))
}

/// Deletes the `.tmp-*.partial` files that a killed run (SIGKILL, power loss)
/// left behind in the crawler's own folder. They were never indexed (not
/// `.md`), but would pile up. Callers hold the crawl lock, so no live write
/// is in progress there.
fn remove_stale_temp_files(web: &Path) {
    for entry in walkdir::WalkDir::new(web).into_iter().flatten() {
        let name = entry.file_name().to_string_lossy();
        if entry.file_type().is_file() && name.starts_with(".tmp-") && name.ends_with(".partial") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Reads the stored document's front matter, if the document exists and parses.
fn stored_front(path: &Path) -> Option<FrontMatter> {
    let text = std::fs::read_to_string(path).ok()?;
    corpus::parse(&text).ok().map(|(f, _)| f)
}

/// Fetches, extracts and stores one page.
async fn process(ctx: &Ctx, job: Job) -> Done {
    let t0 = Instant::now();
    let rel = naming::document_path(&job.url);
    let path = ctx.corpus_dir.join(&rel);
    let prev = stored_front(&path);
    let cond = prev
        .as_ref()
        .filter(|p| p.status.as_deref() == Some("ok"))
        .map(|p| Conditional {
            etag: p.etag.clone(),
            last_modified: p.last_modified.clone(),
        })
        .unwrap_or_default();

    let mut entry = simple_entry(&job.url, Outcome::Ok, "");
    entry.detail = None;
    entry.depth = job.depth;
    let finish = |mut entry: Entry, links: Vec<Url>| {
        entry.elapsed_ms = t0.elapsed().as_millis() as u64;
        Done {
            index: job.index,
            entry,
            links,
            sections: job.sections.clone(),
        }
    };

    // GitHub repositories and files: their raw markdown first.
    let mut requests = 0;
    let mut raw_title: Option<String> = None;
    let mut fetched: Option<Response> = None;
    if let Some(raw) = github::raw_url(&job.fetch) {
        match ctx.fetcher.fetch(&raw, &cond).await {
            Ok(r)
                if r.status == 304
                    || sniff::classify(r.content_type.as_deref(), r.final_url.path(), &r.body)
                        != sniff::Kind::Html =>
            {
                raw_title = github::repo_name(&job.fetch);
                fetched = Some(r);
            }
            Ok(r) => requests += r.requests,
            Err(f) => requests += f.requests,
        }
    }
    let resp = match fetched {
        Some(r) => r,
        None => match ctx.fetcher.fetch(&job.fetch, &cond).await {
            Ok(r) => r,
            Err(f) => {
                let Failure {
                    outcome,
                    detail,
                    status,
                    final_url,
                    redirects,
                    requests: n,
                } = f;
                entry.outcome = outcome;
                entry.detail = Some(detail);
                entry.http_status = status;
                entry.final_url = final_url;
                entry.redirects = redirects;
                entry.requests = requests + n;
                return finish(entry, Vec::new());
            }
        },
    };
    entry.requests = requests + resp.requests;
    entry.http_status = Some(resp.status);
    entry.final_url = Some(resp.final_url.to_string());
    entry.redirects = resp.redirects.clone();
    if resp.status == 304 {
        entry.outcome = Outcome::NotModified;
        entry.document = Some(rel);
        return finish(entry, Vec::new());
    }

    let follow = job.depth < ctx.max_depth;
    let converted = convert(resp.clone(), follow).await;
    let (title, markdown, links) = match converted {
        Ok(x) => x,
        Err((outcome, detail)) => {
            entry.outcome = outcome;
            entry.detail = Some(detail);
            return finish(entry, Vec::new());
        }
    };
    let final_host = fetch::host_key(&resp.final_url);
    let links: Vec<Url> = links
        .into_iter()
        .filter(|l| fetch::host_key(l) == final_host)
        .collect();
    let title = match (raw_title, title) {
        (Some(repo), Some(h)) if !h.contains(&repo) => Some(format!("{repo}: {h}")),
        (Some(repo), None) => Some(repo),
        (_, t) => t,
    }
    .or_else(|| (!job.title.is_empty()).then(|| job.title.clone()));
    let hash = corpus::content_hash(markdown.as_bytes());
    let final_url = resp.final_url.to_string();
    if let Some(p) = &prev {
        if p.content_hash.as_deref() == Some(hash.as_str())
            && p.title == title
            && p.sections == job.sections
            && p.final_url.as_deref() == Some(final_url.as_str())
            && p.url.as_deref() == Some(job.url.as_str())
        {
            entry.outcome = Outcome::Unchanged;
            entry.document = Some(rel);
            return finish(entry, links);
        }
    }
    let front = FrontMatter {
        title,
        url: Some(job.url.clone()),
        final_url: Some(final_url),
        sections: job.sections.clone(),
        fetched_at: Some(now_rfc3339()),
        edited_at: None,
        etag: resp.etag.clone(),
        last_modified: resp.last_modified.clone(),
        content_hash: Some(hash),
        status: Some("ok".into()),
    };
    let text = corpus::render(&front, &markdown);
    match corpus::write_atomic(&path, text.as_bytes()) {
        Ok(()) => {
            entry.document = Some(rel);
        }
        Err(e) => {
            entry.outcome = Outcome::WriteFailed;
            entry.detail = Some(format!("{}: {e}", path.display()));
        }
    }
    finish(entry, links)
}

type Converted = (Option<String>, String, Vec<Url>);

/// Body → (title, markdown, links) on a blocking thread (parsing is CPU work).
async fn convert(resp: Response, want_links: bool) -> Result<Converted, (Outcome, String)> {
    let ct = resp.content_type.clone();
    let kind = sniff::classify(ct.as_deref(), resp.final_url.path(), &resp.body);
    let host = resp.final_url.host_str().unwrap_or("").to_string();
    let media = sniff::media_type(ct.as_deref()).unwrap_or_else(|| "no content type".into());
    match kind {
        sniff::Kind::Binary => Err((Outcome::Binary, format!("binary content ({media})"))),
        sniff::Kind::Pdf => {
            let text = extract::pdf_to_text(resp.body)
                .await
                .map_err(|e| (Outcome::ExtractFailed, e))?;
            if extract::meaningful_chars(&text) < extract::MIN_MEANINGFUL_CHARS {
                return Err((Outcome::Empty, "PDF without extractable text".into()));
            }
            Ok((None, text, Vec::new()))
        }
        sniff::Kind::Text => {
            let (text, _) = sniff::decode(&resp.body, ct.as_deref(), false, &host);
            let md = extract::text_document(&text);
            if extract::meaningful_chars(&md) < extract::MIN_MEANINGFUL_CHARS {
                return Err((Outcome::Empty, "no meaningful text".into()));
            }
            let title = first_heading(&md);
            Ok((title, md, Vec::new()))
        }
        sniff::Kind::Html => {
            let base = resp.final_url.clone();
            let joined = tokio::task::spawn_blocking(move || {
                let (html, _) = sniff::decode(&resp.body, ct.as_deref(), true, &host);
                let ex = extract::html_to_markdown(&html, &base);
                let meaningful = extract::meaningful_chars(&ex.markdown);
                let scripts = extract::has_scripts(&html);
                let links = if want_links {
                    extract::links(&html, &base)
                } else {
                    Vec::new()
                };
                (ex, meaningful, scripts, links)
            })
            .await;
            let (ex, meaningful, scripts, links) =
                joined.map_err(|e| (Outcome::ExtractFailed, format!("extraction failed: {e}")))?;
            if meaningful < extract::MIN_MEANINGFUL_CHARS {
                return Err(if scripts {
                    (
                        Outcome::JsOnly,
                        format!("only {meaningful} characters without JavaScript"),
                    )
                } else {
                    (
                        Outcome::Empty,
                        format!("only {meaningful} characters of text"),
                    )
                });
            }
            Ok((ex.title, ex.markdown, links))
        }
    }
}

/// The text of the first `#` heading of a markdown document.
fn first_heading(md: &str) -> Option<String> {
    md.lines().find_map(|l| {
        let t = l.trim_start();
        let h = t.strip_prefix("# ")?.trim();
        (!h.is_empty()).then(|| h.to_string())
    })
}
