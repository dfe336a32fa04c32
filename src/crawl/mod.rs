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

use crate::config::{self, BlockPrivate, Config};
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
    let fetcher = Fetcher::new(fetch_settings(&config.crawl, opts))?;
    let corpus_dir = config.corpus_dir();
    let (label, markdown) = load_roadmap(&corpus_dir, opts.roadmap.as_deref(), &fetcher).await?;
    let resources = roadmap_resources(&markdown);
    if resources.is_empty() {
        return Err(CrawlError::NoLinks(label));
    }
    prepare_corpus_dir(&corpus_dir)?;
    let report_file = report_path(config);
    let plan = plan(&resources);
    let (jobs, kept) = resume(plan.jobs, &resumable_entries(&report_file), &corpus_dir);

    let ctx = Arc::new(Ctx {
        fetcher,
        corpus_dir,
        max_depth: opts.depth,
    });
    let finished = plan.entries.len() + kept.len();
    let total = finished + jobs.len();
    let mut schedule = Schedule {
        ctx,
        set: JoinSet::new(),
        in_flight: HashMap::new(),
        entries: plan.entries,
        seen: plan.seen,
        per_host: plan.per_host,
        next_index: plan.next_index,
        max_pages_per_host: config.crawl.max_pages_per_host,
        progress: ProgressView::new(opts.progress, finished, total),
    };
    schedule.entries.extend(kept);
    for job in jobs {
        schedule.spawn(job);
    }
    let interrupted = schedule.run().await;
    schedule.progress.finish();

    let mut entries = schedule.entries;
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

/// The fetcher's settings from `[crawl]`; private addresses are refused by
/// default only when links are followed (the roadmap's own links are trusted).
fn fetch_settings(c: &config::Crawl, opts: &CrawlOptions) -> Settings {
    let block_private = match opts.block_private.unwrap_or(c.block_private) {
        BlockPrivate::Always => true,
        BlockPrivate::Never => false,
        BlockPrivate::Auto => opts.depth > 0,
    };
    Settings {
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
    }
}

/// The roadmap's linked resources (its front matter, if any, skipped).
fn roadmap_resources(markdown: &str) -> Vec<roadmap::Resource> {
    let body = corpus::parse(markdown).map(|(_, b)| b).unwrap_or(markdown);
    roadmap::parse(body).resources
}

/// Creates the corpus folder and clears what a killed run left in the crawler's part.
fn prepare_corpus_dir(corpus_dir: &Path) -> Result<(), CrawlError> {
    std::fs::create_dir_all(corpus_dir).map_err(|source| CrawlError::CreateDir {
        path: corpus_dir.to_path_buf(),
        source,
    })?;
    remove_stale_temp_files(&corpus_dir.join(naming::WEB_DIR));
    Ok(())
}

/// The roadmap's resources as jobs, before anything is fetched.
struct Plan {
    /// Resources settled without a request (invalid URLs), by report position.
    entries: Vec<(usize, Entry)>,
    jobs: Vec<Job>,
    /// Fetch URLs already planned: a followed link to one of them is not fetched again.
    seen: HashSet<String>,
    /// Pages planned per host, counted against `max_pages_per_host` by followed links.
    per_host: HashMap<String, usize>,
    /// The report position of the next job.
    next_index: usize,
}

/// One job per distinct fetch URL (fragments are never sent to servers): a
/// resource linked again only adds its sections to the first one's job.
fn plan(resources: &[roadmap::Resource]) -> Plan {
    let mut plan = Plan {
        entries: Vec::new(),
        jobs: Vec::new(),
        seen: HashSet::new(),
        per_host: HashMap::new(),
        next_index: 0,
    };
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for r in resources {
        let index = plan.next_index;
        plan.next_index += 1;
        let parsed = Url::parse(&r.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"));
        let Some(u) = parsed else {
            plan.entries.push((
                index,
                simple_entry(&r.url, Outcome::InvalidUrl, "not a valid http(s) URL"),
            ));
            continue;
        };
        let key = fetch::without_fragment(&u);
        if let Some(&j) = by_key.get(&key) {
            let job = &mut plan.jobs[j];
            for s in &r.sections {
                if !job.sections.contains(s) {
                    job.sections.push(s.clone());
                }
            }
            continue;
        }
        by_key.insert(key.clone(), plan.jobs.len());
        plan.seen.insert(key);
        *plan.per_host.entry(fetch::host_key(&u)).or_insert(0) += 1;
        plan.jobs.push(Job {
            index,
            url: r.url.clone(),
            fetch: u,
            title: r.title.clone(),
            sections: r.sections.clone(),
            depth: 0,
        });
    }
    plan
}

/// The stored documents of the last run when it was interrupted, by URL: the
/// next run keeps them instead of fetching them again.
fn resumable_entries(report_file: &Path) -> HashMap<String, Entry> {
    load_report(report_file)
        .filter(|r| r.interrupted)
        .map(|r| {
            r.entries
                .into_iter()
                .filter(|e| e.outcome.has_document())
                .map(|e| (e.url.clone(), e))
                .collect()
        })
        .unwrap_or_default()
}

/// Splits the jobs into those to fetch and the entries kept from an
/// interrupted run (whose documents still exist).
fn resume(
    jobs: Vec<Job>,
    resumable: &HashMap<String, Entry>,
    corpus_dir: &Path,
) -> (Vec<Job>, Vec<(usize, Entry)>) {
    let mut to_fetch = Vec::with_capacity(jobs.len());
    let mut kept = Vec::new();
    for job in jobs {
        let previous = resumable.get(&job.url).filter(|prev| {
            prev.document
                .as_ref()
                .is_some_and(|d| corpus_dir.join(d).is_file())
        });
        match previous {
            Some(prev) => {
                let mut e = prev.clone();
                e.outcome = Outcome::Kept;
                e.detail = Some("finished before the previous run was interrupted".into());
                e.requests = 0;
                e.elapsed_ms = 0;
                kept.push((job.index, e));
            }
            None => to_fetch.push(job),
        }
    }
    (to_fetch, kept)
}

/// What a job in flight is, for its entry when it panics or is interrupted:
/// report position, URL, depth.
type InFlight = (usize, String, u32);

/// The fetches of one crawl: the jobs in flight, the entries so far, and
/// what followed links may still add.
struct Schedule {
    ctx: Arc<Ctx>,
    set: JoinSet<Done>,
    in_flight: HashMap<tokio::task::Id, InFlight>,
    entries: Vec<(usize, Entry)>,
    seen: HashSet<String>,
    per_host: HashMap<String, usize>,
    next_index: usize,
    max_pages_per_host: usize,
    progress: ProgressView,
}

impl Schedule {
    fn spawn(&mut self, job: Job) {
        let ctx = self.ctx.clone();
        let info = (job.index, job.url.clone(), job.depth);
        let handle = self.set.spawn(async move { process(&ctx, job).await });
        self.in_flight.insert(handle.id(), info);
    }

    /// Runs until every job and followed link is done, or Ctrl-C; returns
    /// whether Ctrl-C stopped it.
    async fn run(&mut self) -> bool {
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                biased;
                _ = &mut ctrl_c => {
                    self.interrupt().await;
                    return true;
                }
                next = self.set.join_next_with_id() => {
                    let Some(next) = next else { return false };
                    let done = self.finished(next);
                    self.record(done);
                }
            }
        }
    }

    /// A finished task's result; a task that panicked becomes an extraction failure.
    fn finished(&mut self, next: Result<(tokio::task::Id, Done), tokio::task::JoinError>) -> Done {
        match next {
            Ok((id, done)) => {
                self.in_flight.remove(&id);
                done
            }
            Err(err) => {
                let (index, url, depth) =
                    self.in_flight
                        .remove(&err.id())
                        .unwrap_or((usize::MAX, String::new(), 0));
                let mut e = simple_entry(
                    &url,
                    Outcome::ExtractFailed,
                    &format!("internal error: {err}"),
                );
                e.depth = depth;
                Done {
                    index,
                    entry: e,
                    links: Vec::new(),
                    sections: Vec::new(),
                }
            }
        }
    }

    /// Shows a finished page, queues the links it allows, and keeps its entry.
    fn record(&mut self, done: Done) {
        self.progress.advance(&done.entry);
        let depth = done.entry.depth;
        for link in done.links {
            self.follow(link, &done.sections, depth + 1);
        }
        self.entries.push((done.index, done.entry));
    }

    /// Queues a same-host link unless it was seen or its host has had its pages.
    fn follow(&mut self, link: Url, sections: &[String], depth: u32) {
        let key = fetch::without_fragment(&link);
        let count = self.per_host.entry(fetch::host_key(&link)).or_insert(0);
        if *count >= self.max_pages_per_host || !self.seen.insert(key) {
            return;
        }
        *count += 1;
        let index = self.next_index;
        self.next_index += 1;
        self.progress.grow();
        self.spawn(Job {
            index,
            url: link.to_string(),
            fetch: link,
            title: String::new(),
            sections: sections.to_vec(),
            depth,
        });
    }

    /// Stops every job in flight; each gets an `interrupted` entry.
    async fn interrupt(&mut self) {
        self.set.abort_all();
        while self.set.join_next().await.is_some() {}
        for (_, (index, url, depth)) in self.in_flight.drain() {
            let mut e = simple_entry(&url, Outcome::Interrupted, "stopped by Ctrl-C");
            e.depth = depth;
            self.entries.push((index, e));
        }
    }
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

/// Progress as the crawl goes: a bar, a line per resource, or nothing.
struct ProgressView {
    mode: Progress,
    bar: Option<indicatif::ProgressBar>,
    done: usize,
    total: usize,
}

impl ProgressView {
    fn new(mode: Progress, done: usize, total: usize) -> ProgressView {
        let bar = (mode == Progress::Bar).then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
            ) {
                b.set_style(style);
            }
            b
        });
        ProgressView {
            mode,
            bar,
            done,
            total,
        }
    }

    /// One more resource to crawl (a followed link).
    fn grow(&mut self) {
        self.total += 1;
        if let Some(b) = &self.bar {
            b.set_length(self.total as u64);
        }
    }

    /// One resource finished with entry `e`.
    fn advance(&mut self, e: &Entry) {
        self.done += 1;
        let (done, total) = (self.done, self.total);
        match self.mode {
            Progress::Bar => {
                if let Some(b) = &self.bar {
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

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
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
    let started = Instant::now();
    let (mut entry, links) = fetch_and_store(ctx, &job).await;
    entry.elapsed_ms = started.elapsed().as_millis() as u64;
    Done {
        index: job.index,
        entry,
        links,
        sections: job.sections,
    }
}

/// The page's report entry, and its same-host links when they are followed.
async fn fetch_and_store(ctx: &Ctx, job: &Job) -> (Entry, Vec<Url>) {
    let rel = naming::document_path(&job.url);
    let path = ctx.corpus_dir.join(&rel);
    let prev = stored_front(&path);
    let mut entry = simple_entry(&job.url, Outcome::Ok, "");
    entry.detail = None;
    entry.depth = job.depth;

    let (resp, raw_title) = match fetch_page(ctx, job, &conditional(prev.as_ref())).await {
        Ok(fetched) => fetched,
        Err(failure) => return (failed_entry(entry, failure), Vec::new()),
    };
    entry.requests = resp.requests;
    entry.http_status = Some(resp.status);
    entry.final_url = Some(resp.final_url.to_string());
    entry.redirects = resp.redirects.clone();
    if resp.status == 304 {
        entry.outcome = Outcome::NotModified;
        entry.document = Some(rel);
        return (entry, Vec::new());
    }

    let follow = job.depth < ctx.max_depth;
    let (title, markdown, links) = match convert(resp.clone(), follow).await {
        Ok(converted) => converted,
        Err((outcome, detail)) => {
            entry.outcome = outcome;
            entry.detail = Some(detail);
            return (entry, Vec::new());
        }
    };
    let final_host = fetch::host_key(&resp.final_url);
    let links: Vec<Url> = links
        .into_iter()
        .filter(|l| fetch::host_key(l) == final_host)
        .collect();
    let front = FrontMatter {
        title: document_title(raw_title, title, &job.title),
        url: Some(job.url.clone()),
        final_url: Some(resp.final_url.to_string()),
        sections: job.sections.clone(),
        fetched_at: Some(now_rfc3339()),
        edited_at: None,
        etag: resp.etag.clone(),
        last_modified: resp.last_modified.clone(),
        content_hash: Some(corpus::content_hash(markdown.as_bytes())),
        status: Some("ok".into()),
    };
    if prev.as_ref().is_some_and(|p| same_document(p, &front)) {
        entry.outcome = Outcome::Unchanged;
        entry.document = Some(rel);
        return (entry, links);
    }
    match corpus::write_atomic(&path, corpus::render(&front, &markdown).as_bytes()) {
        Ok(()) => entry.document = Some(rel),
        Err(e) => {
            entry.outcome = Outcome::WriteFailed;
            entry.detail = Some(format!("{}: {e}", path.display()));
        }
    }
    (entry, links)
}

/// The validators of the stored copy, if it was stored from a good answer.
fn conditional(prev: Option<&FrontMatter>) -> Conditional {
    prev.filter(|p| p.status.as_deref() == Some("ok"))
        .map(|p| Conditional {
            etag: p.etag.clone(),
            last_modified: p.last_modified.clone(),
        })
        .unwrap_or_default()
}

/// The page's answer, and the repository's name when the answer is a GitHub
/// repository's raw markdown (asked for first; the page is the fallback). The
/// requests of both count.
async fn fetch_page(
    ctx: &Ctx,
    job: &Job,
    cond: &Conditional,
) -> Result<(Response, Option<String>), Failure> {
    let mut raw_requests = 0;
    if let Some(raw) = github::raw_url(&job.fetch) {
        match ctx.fetcher.fetch(&raw, cond).await {
            Ok(r)
                if r.status == 304
                    || sniff::classify(r.content_type.as_deref(), r.final_url.path(), &r.body)
                        != sniff::Kind::Html =>
            {
                return Ok((r, github::repo_name(&job.fetch)));
            }
            Ok(r) => raw_requests += r.requests,
            Err(f) => raw_requests += f.requests,
        }
    }
    match ctx.fetcher.fetch(&job.fetch, cond).await {
        Ok(mut r) => {
            r.requests += raw_requests;
            Ok((r, None))
        }
        Err(mut f) => {
            f.requests += raw_requests;
            Err(f)
        }
    }
}

fn failed_entry(mut entry: Entry, f: Failure) -> Entry {
    entry.outcome = f.outcome;
    entry.detail = Some(f.detail);
    entry.http_status = f.status;
    entry.final_url = f.final_url;
    entry.redirects = f.redirects;
    entry.requests = f.requests;
    entry
}

/// The document's title: the extracted one (prefixed with the repository's
/// name for a GitHub README that does not say it), else the roadmap's link text.
fn document_title(
    repo: Option<String>,
    extracted: Option<String>,
    link_text: &str,
) -> Option<String> {
    match (repo, extracted) {
        (Some(repo), Some(h)) if !h.contains(&repo) => Some(format!("{repo}: {h}")),
        (Some(repo), None) => Some(repo),
        (_, t) => t,
    }
    .or_else(|| (!link_text.is_empty()).then(|| link_text.to_string()))
}

/// The stored document says what `new` would: same content, title, sections
/// and URLs (validators and fetch time aside), so it is left untouched.
fn same_document(stored: &FrontMatter, new: &FrontMatter) -> bool {
    stored.content_hash == new.content_hash
        && stored.title == new.title
        && stored.sections == new.sections
        && stored.final_url == new.final_url
        && stored.url == new.url
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
