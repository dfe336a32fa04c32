//! The crawler against ../shared/webcorpus/serve.py (started per test on a free
//! port, killed on drop) and a tiny in-process server for the HTTP corners the
//! mirror does not exercise (304, 429 + Retry-After, Crawl-delay).

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ragmap::config::{BlockPrivate, Config};
use ragmap::corpus;
use ragmap::crawl::{self, CrawlOptions, CrawlReport, Entry, Outcome, Progress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn shared() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/webcorpus");
    if p.join("serve.py").is_file() {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("../shared/webcorpus is required when CI=true");
    }
    eprintln!("skipping: ../shared/webcorpus not found");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// serve.py on a free port, with a request log; killed on drop.
struct Mirror {
    child: Child,
    port: u16,
    log: PathBuf,
    site: PathBuf,
    _dir: tempfile::TempDir,
}

#[derive(Debug, Clone)]
struct LogLine {
    path: String,
    status: u64,
    ua: String,
    bytes: u64,
    start: f64,
    end: f64,
    aborted: bool,
}

impl Mirror {
    fn start() -> Option<Mirror> {
        let shared = shared()?;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("python3")
                .arg(shared.join("serve.py"))
                .arg(port.to_string())
                .arg("--log")
                .arg(&log)
                .args(["--max-seconds", "300"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 runs serve.py");
            let mut m = Mirror {
                child,
                port,
                log: log.clone(),
                site: shared.join("site"),
                _dir: tempfile::TempDir::new().unwrap(),
            };
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    m._dir = dir;
                    return Some(m);
                }
                if let Ok(Some(_)) = m.child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("serve.py did not start");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<LogLine> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                let end = v["ts"].as_f64().unwrap();
                LogLine {
                    path: v["path"].as_str().unwrap().to_string(),
                    status: v["status"].as_u64().unwrap(),
                    ua: v["ua"].as_str().unwrap_or("").to_string(),
                    bytes: v["bytes"].as_u64().unwrap_or(0),
                    start: end - v["ms"].as_f64().unwrap() / 1000.0,
                    end,
                    aborted: v["aborted"].as_bool().unwrap_or(false),
                }
            })
            .collect()
    }

    /// The mirrored file behind a URL path (for known-content checks).
    fn file(&self, path: &str) -> Vec<u8> {
        std::fs::read(self.site.join(path.trim_start_matches('/'))).unwrap()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A workspace with a small-delay config and a roadmap of the given links.
struct Workspace {
    dir: tempfile::TempDir,
    config: Config,
}

impl Workspace {
    fn new(links: &[(&str, String)]) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            workspace: dir.path().to_path_buf(),
            ..Default::default()
        };
        let c = &mut config.crawl;
        c.per_host_delay_ms = 100;
        c.connect_timeout_secs = 2.0;
        c.read_timeout_secs = 1.0;
        c.total_timeout_secs = 4.0;
        c.max_retries = 3;
        c.retry_base_delay_ms = 50;
        c.max_bytes = 4 * 1024 * 1024;
        c.block_private = BlockPrivate::Never;
        let mut md = String::from("# Test roadmap\n\n## Stage › with arrow\n\n### Topic\n\n");
        for (title, url) in links {
            md.push_str(&format!("- [{title}](<{url}>)\n"));
        }
        std::fs::write(dir.path().join("roadmap.md"), md).unwrap();
        Workspace { dir, config }
    }

    fn opts(&self) -> CrawlOptions {
        CrawlOptions {
            roadmap: Some(self.dir.path().join("roadmap.md").display().to_string()),
            depth: 0,
            progress: Progress::Quiet,
            block_private: None,
        }
    }

    fn corpus(&self) -> PathBuf {
        self.config.corpus_dir()
    }

    fn doc(&self, e: &Entry) -> (corpus::FrontMatter, String) {
        let rel = e
            .document
            .as_ref()
            .unwrap_or_else(|| panic!("no document for {e:?}"));
        let text = std::fs::read_to_string(self.corpus().join(rel)).unwrap();
        let (f, b) = corpus::parse(&text).unwrap();
        (f, b.to_string())
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn entry<'a>(r: &'a CrawlReport, url_suffix: &str) -> &'a Entry {
    r.entries
        .iter()
        .find(|e| e.url.ends_with(url_suffix))
        .unwrap_or_else(|| panic!("no entry for {url_suffix}"))
}

fn gbk_known_text(bytes: &[u8]) -> (String, String) {
    let (html, _, _) = encoding_rs::GBK.decode(bytes);
    let doc = scraper::Html::parse_document(&html);
    let h1 = scraper::Selector::parse("h1").unwrap();
    let p = scraper::Selector::parse("p").unwrap();
    let heading: String = doc.select(&h1).next().unwrap().text().collect();
    let para: String = doc
        .select(&p)
        .next()
        .unwrap()
        .text()
        .collect::<String>()
        .chars()
        .take(20)
        .collect();
    (heading, para)
}

#[test]
fn fault_pages_end_with_the_right_outcomes() {
    let Some(m) = Mirror::start() else { return };
    let links: Vec<(&str, String)> = vec![
        ("private", m.url("/private/internal-notes.html")),
        (
            "flaky",
            m.url("/www.promptingguide.ai/zh/research/rag.html"),
        ),
        (
            "chain",
            m.url("/huggingface.co/learn/nlp-course/chapter1/1"),
        ),
        ("loop", m.url("/www.langchain.asia/")),
        (
            "gbk header",
            m.url("/legacy-gbk/promptingguide/zh-techniques-fewshot.html"),
        ),
        (
            "gbk meta",
            m.url("/legacy-gbk/promptingguide/zh-techniques-zeroshot.html"),
        ),
        ("big", m.url("/big/dataset-dump.html")),
        ("binary", m.url("/downloads/checkpoint.html")),
        ("gzip", m.url("/github.com/microsoft/graphrag/index.html")),
        (
            "pdf",
            m.url("/github.com/deepseek-ai/DeepSeek-R1/blob/main/DeepSeek_R1.pdf"),
        ),
        (
            "bilibili",
            m.url("/www.bilibili.com/video/BV1hccSeJEUD/index.html"),
        ),
        ("zhihu", m.url("/zhuanlan.zhihu.com/p/675509396/index.html")),
        (
            "markdown",
            m.url("/raw.githubusercontent.com/jiangnanboy/llm_corpus_quality/master/README.md"),
        ),
        ("dead", m.url("/tech.dewu.com/article-109.html")),
        (
            "chinese path",
            m.url(
                "/datawhalechina.github.io/handy-ollama/C1/1.%20Ollama%20%E4%BB%8B%E7%BB%8D.html",
            ),
        ),
        (
            "same page again, with a fragment",
            m.url("/www.promptingguide.ai/zh/research/rag.html#top"),
        ),
    ];
    let ws = Workspace::new(&links);
    let t0 = Instant::now();
    let report = rt().block_on(crawl::crawl(&ws.config, &ws.opts())).unwrap();
    let wall = t0.elapsed();
    let log = m.requests();
    let outcome = |s: &str| entry(&report, s).outcome;

    // robots.txt: read once, honoured, the canary never requested.
    assert_eq!(
        outcome("/private/internal-notes.html"),
        Outcome::RobotsDisallowed
    );
    assert!(
        log.iter().all(|l| !l.path.starts_with("/private/")),
        "private page requested"
    );
    assert_eq!(log.iter().filter(|l| l.path == "/robots.txt").count(), 1);
    // Every request names ragmap and its version.
    let ua = format!("ragmap/{}", env!("CARGO_PKG_VERSION"));
    assert!(
        log.iter().all(|l| l.ua.starts_with(&ua)),
        "{:?}",
        log.iter().map(|l| &l.ua).collect::<Vec<_>>()
    );

    // Flaky: 500, 500, then 200 — stored after retries.
    let flaky = entry(&report, "/zh/research/rag.html");
    assert_eq!(flaky.outcome, Outcome::Ok, "{flaky:?}");
    assert_eq!(flaky.requests, 3);
    let statuses: Vec<u64> = log
        .iter()
        .filter(|l| l.path == "/www.promptingguide.ai/zh/research/rag.html")
        .map(|l| l.status)
        .collect();
    assert_eq!(statuses, vec![500, 500, 200]);
    // The fragment variant is the same fetch: one job, one document.
    assert_eq!(
        report
            .entries
            .iter()
            .filter(|e| e.url.contains("/zh/research/rag.html"))
            .count(),
        1
    );

    // Redirect chain followed to the page; loop stopped.
    let chain = entry(&report, "/nlp-course/chapter1/1");
    assert_eq!(chain.outcome, Outcome::Ok, "{chain:?}");
    assert_eq!(chain.redirects.len(), 2, "{chain:?}");
    assert!(chain
        .final_url
        .as_deref()
        .unwrap()
        .ends_with("/huggingface.co/learn/llm-course/en/chapter1/1.html"));
    let (front, body) = ws.doc(chain);
    assert!(front.final_url.unwrap().ends_with("/en/chapter1/1.html"));
    assert!(body.len() > 1000);
    let looped = entry(&report, "/www.langchain.asia/");
    assert_eq!(looped.outcome, Outcome::RedirectLoop, "{looped:?}");
    assert!(
        log.iter()
            .filter(|l| l.path.contains("langchain.asia"))
            .count()
            <= 3
    );

    // GBK pages decode: the heading and the first paragraph read right.
    for path in [
        "/legacy-gbk/promptingguide/zh-techniques-fewshot.html",
        "/legacy-gbk/promptingguide/zh-techniques-zeroshot.html",
    ] {
        let e = entry(&report, path);
        assert_eq!(e.outcome, Outcome::Ok, "{e:?}");
        let (heading, para) = gbk_known_text(&m.file(path));
        let (front, body) = ws.doc(e);
        assert!(
            body.contains(&heading) && body.contains(&para),
            "{path}: {body}"
        );
        assert!(front.title.unwrap().contains(&heading));
        assert!(
            !body.contains('\u{fffd}'),
            "replacement characters in {path}"
        );
    }

    // 20 MB page: refused at the cap; the server did not get to send it all.
    let big = entry(&report, "/big/dataset-dump.html");
    assert_eq!(big.outcome, Outcome::TooLarge, "{big:?}");
    let big_log = log
        .iter()
        .find(|l| l.path == "/big/dataset-dump.html")
        .unwrap();
    assert!(
        big_log.aborted || big_log.bytes < 20 * 1024 * 1024,
        "{big_log:?}"
    );

    assert_eq!(outcome("/downloads/checkpoint.html"), Outcome::Binary);
    assert_eq!(
        outcome("/tech.dewu.com/article-109.html"),
        Outcome::NotFound
    );
    for js in ["/BV1hccSeJEUD/index.html", "/p/675509396/index.html"] {
        let e = entry(&report, js);
        assert_eq!(e.outcome, Outcome::JsOnly, "{e:?}");
        assert!(e.document.is_none());
    }

    // gzip: decoded and extracted.
    let gz = entry(&report, "/microsoft/graphrag/index.html");
    assert_eq!(gz.outcome, Outcome::Ok, "{gz:?}");
    let (front, body) = ws.doc(gz);
    assert!(
        body.starts_with("# GraphRAG"),
        "{}",
        &body[..body.len().min(200)]
    );
    assert!(front.title.unwrap().contains("graphrag"));

    // PDF: text extracted.
    let pdf = entry(&report, "DeepSeek_R1.pdf");
    assert_eq!(pdf.outcome, Outcome::Ok, "{pdf:?}");
    let (_, body) = ws.doc(pdf);
    assert!(
        body.contains("DeepSeek-R1") && body.contains("reinforcement learning"),
        "{}",
        &body[..body.len().min(500)]
    );

    // text/markdown: kept as served.
    let md = entry(&report, "/master/README.md");
    assert_eq!(md.outcome, Outcome::Ok);
    let served = String::from_utf8(
        m.file("/raw.githubusercontent.com/jiangnanboy/llm_corpus_quality/master/README.md"),
    )
    .unwrap();
    let (_, body) = ws.doc(md);
    assert_eq!(body.trim(), served.replace("\r\n", "\n").trim());

    // Chinese, percent-encoded path.
    assert_eq!(
        outcome("1.%20Ollama%20%E4%BB%8B%E7%BB%8D.html"),
        Outcome::Ok
    );

    // Every stored document carries its provenance.
    for e in report.entries.iter().filter(|e| e.outcome == Outcome::Ok) {
        let (f, body) = ws.doc(e);
        assert_eq!(f.url.as_deref(), Some(e.url.as_str()));
        assert!(
            f.final_url.is_some() && f.fetched_at.is_some() && f.status.as_deref() == Some("ok")
        );
        assert_eq!(f.sections, vec!["Stage › with arrow › Topic".to_string()]);
        assert_eq!(
            f.content_hash.as_deref(),
            Some(corpus::content_hash(body.as_bytes()).as_str())
        );
        assert!(f.title.is_some_and(|t| !t.is_empty()));
        assert!(e.document.as_ref().unwrap().starts_with("web/127.0.0.1_"));
    }

    // No URL answered twice with content in one run (retries of failures aside).
    let mut ok_per_path: HashMap<&str, usize> = HashMap::new();
    for l in log.iter().filter(|l| l.status == 200) {
        *ok_per_path.entry(l.path.as_str()).or_insert(0) += 1;
    }
    assert!(ok_per_path.values().all(|&n| n == 1), "{ok_per_path:?}");

    // Politeness: one request at a time on this host, with the delay between them.
    let mut timeline: Vec<&LogLine> = log
        .iter()
        .filter(|l| !l.aborted && !l.path.starts_with("/slow/") && !l.path.starts_with("/big/"))
        .collect();
    timeline.sort_by(|a, b| a.start.partial_cmp(&b.start).unwrap());
    for w in timeline.windows(2) {
        let gap = w[1].start - w[0].end;
        assert!(
            gap >= 0.08,
            "requests {} and {} only {gap:.3}s apart",
            w[0].path,
            w[1].path
        );
    }

    // Report saved beside the corpus, and loadable.
    let saved = crawl::load_report(&crawl::report_path(&ws.config)).unwrap();
    assert_eq!(saved.entries.len(), report.entries.len());
    assert!(crawl::status_line(&saved).contains("resources"));
    assert!(wall < Duration::from_secs(60), "{wall:?}");
}

#[test]
fn slow_page_times_out_within_the_configured_limits() {
    let Some(m) = Mirror::start() else { return };
    let ws = Workspace::new(&[("slow", m.url("/slow/llamaindex-primer.html"))]);
    let t0 = Instant::now();
    let report = rt().block_on(crawl::crawl(&ws.config, &ws.opts())).unwrap();
    let wall = t0.elapsed();
    let slow = &report.entries[0];
    assert_eq!(slow.outcome, Outcome::Timeout, "{slow:?}");
    assert_eq!(slow.requests, 4, "first try + 3 retries");
    // 4 attempts × 1 s read timeout + backoff (50/100/200 ms + jitter) + robots.txt + delays:
    // well under the server's 8 s for a single answer.
    assert!(wall >= Duration::from_secs(4), "{wall:?}");
    assert!(wall < Duration::from_millis(6500), "{wall:?}");
}

#[test]
fn a_redirect_onto_a_page_another_link_fetched_is_not_fetched_twice() {
    let Some(m) = Mirror::start() else { return };
    let ws = Workspace::new(&[
        (
            "direct",
            m.url("/huggingface.co/learn/llm-course/en/chapter1/1.html"),
        ),
        (
            "old name",
            m.url("/huggingface.co/learn/nlp-course/chapter1/1"),
        ),
    ]);
    let report = rt().block_on(crawl::crawl(&ws.config, &ws.opts())).unwrap();
    assert_eq!(report.entries[0].outcome, Outcome::Ok);
    let dup = &report.entries[1];
    assert_eq!(dup.outcome, Outcome::Duplicate, "{dup:?}");
    assert!(dup
        .detail
        .as_deref()
        .unwrap()
        .contains("/en/chapter1/1.html"));
    let hits = m
        .requests()
        .iter()
        .filter(|l| l.path.ends_with("/en/chapter1/1.html"))
        .count();
    assert_eq!(hits, 1);
}

#[test]
fn size_cap_applies_while_streaming_decoded_bytes() {
    let Some(m) = Mirror::start() else { return };
    let mut ws = Workspace::new(&[("gzip", m.url("/github.com/microsoft/graphrag/index.html"))]);
    // The compressed body is small; the decoded page is ~19 KB.
    ws.config.crawl.max_bytes = 10_000;
    let report = rt().block_on(crawl::crawl(&ws.config, &ws.opts())).unwrap();
    let e = &report.entries[0];
    assert_eq!(e.outcome, Outcome::TooLarge, "{e:?}");
    assert!(
        e.detail.as_deref().unwrap().contains("stopped reading"),
        "{e:?}"
    );
}

#[test]
fn second_run_leaves_unchanged_documents_alone_and_rewrites_changed_ones() {
    let Some(m) = Mirror::start() else { return };
    let ws = Workspace::new(&[
        ("a", m.url("/www.promptingguide.ai/zh/techniques/cot.html")),
        (
            "b",
            m.url("/raw.githubusercontent.com/jiangnanboy/llm_corpus_quality/master/README.md"),
        ),
        (
            "c",
            m.url("/jalammar.github.io/illustrated-transformer/index.html"),
        ),
    ]);
    let rt = rt();
    let first = rt.block_on(crawl::crawl(&ws.config, &ws.opts())).unwrap();
    assert!(
        first.entries.iter().all(|e| e.outcome == Outcome::Ok),
        "{first:?}"
    );
    let paths: Vec<PathBuf> = first
        .entries
        .iter()
        .map(|e| ws.corpus().join(e.document.as_ref().unwrap()))
        .collect();
    let before: Vec<(std::time::SystemTime, Vec<u8>)> = paths
        .iter()
        .map(|p| {
            (
                std::fs::metadata(p).unwrap().modified().unwrap(),
                std::fs::read(p).unwrap(),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1100));

    // Edit one stored document behind the crawler's back: it must be restored.
    let tampered = &paths[2];
    let text = std::fs::read_to_string(tampered).unwrap();
    let (mut front, body) = corpus::parse(&text).unwrap();
    front.content_hash = Some("stale".into());
    let body = body.to_string();
    corpus::write_atomic(tampered, corpus::render(&front, &body).as_bytes()).unwrap();

    let second = rt.block_on(crawl::crawl(&ws.config, &ws.opts())).unwrap();
    let outcomes: Vec<Outcome> = second.entries.iter().map(|e| e.outcome).collect();
    assert_eq!(
        outcomes,
        vec![Outcome::Unchanged, Outcome::Unchanged, Outcome::Ok]
    );
    for (i, p) in paths.iter().enumerate().take(2) {
        assert_eq!(
            std::fs::metadata(p).unwrap().modified().unwrap(),
            before[i].0,
            "mtime changed: {}",
            p.display()
        );
        assert_eq!(std::fs::read(p).unwrap(), before[i].1);
    }
    let restored = std::fs::read_to_string(tampered).unwrap();
    assert!(!restored.contains("\"stale\""));
    // No leftovers from atomic writes.
    for e in std::fs::read_dir(paths[0].parent().unwrap()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.starts_with(".tmp-"), "{name}");
    }
}

#[test]
fn interrupted_run_resumes_without_refetching_finished_pages() {
    let Some(m) = Mirror::start() else { return };
    let ws = Workspace::new(&[
        ("a", m.url("/www.promptingguide.ai/zh/techniques/cot.html")),
        (
            "b",
            m.url("/jalammar.github.io/illustrated-gpt2/index.html"),
        ),
    ]);
    let rt = rt();
    let mut first = rt.block_on(crawl::crawl(&ws.config, &ws.opts())).unwrap();
    // Pretend Ctrl-C arrived before the second page finished.
    first.interrupted = true;
    first.entries[1].outcome = Outcome::Interrupted;
    first.entries[1].document = None;
    first.save(&crawl::report_path(&ws.config)).unwrap();
    let served_before = m.requests().len();

    let second = rt.block_on(crawl::crawl(&ws.config, &ws.opts())).unwrap();
    assert!(!second.interrupted);
    assert_eq!(second.entries[0].outcome, Outcome::Kept);
    assert!(
        second.entries[1].outcome.has_document(),
        "{:?}",
        second.entries[1]
    );
    let new_paths: Vec<String> = m.requests()[served_before..]
        .iter()
        .map(|l| l.path.clone())
        .collect();
    assert!(
        !new_paths.iter().any(|p| p.contains("cot.html")),
        "{new_paths:?}"
    );
    assert!(new_paths.iter().any(|p| p.contains("illustrated-gpt2")));
}

#[test]
fn following_links_stays_on_the_host_and_respects_the_page_cap() {
    let Some(m) = Mirror::start() else { return };
    let mut ws = Workspace::new(&[("guide", m.url("/www.promptingguide.ai/zh/index.html"))]);
    ws.config.crawl.max_pages_per_host = 4;
    let mut opts = ws.opts();
    opts.depth = 1;
    let report = rt().block_on(crawl::crawl(&ws.config, &opts)).unwrap();
    assert_eq!(report.entries.len(), 4, "{:#?}", report.entries);
    let followed: Vec<&Entry> = report.entries.iter().filter(|e| e.depth == 1).collect();
    assert_eq!(followed.len(), 3);
    for e in &followed {
        assert!(e.url.starts_with(&m.url("/")), "{}", e.url);
        if e.outcome == Outcome::Ok {
            let (f, _) = ws.doc(e);
            assert_eq!(
                f.sections,
                vec!["Stage › with arrow › Topic".to_string()],
                "inherits the sections"
            );
        }
    }
    // With block_private left at "auto", following links refuses loopback addresses.
    ws.config.crawl.block_private = BlockPrivate::Auto;
    let blocked = rt().block_on(crawl::crawl(&ws.config, &opts)).unwrap();
    assert_eq!(blocked.entries.len(), 1);
    assert_eq!(blocked.entries[0].outcome, Outcome::BlockedPrivate);
}

#[test]
fn unreachable_hosts_fail_fast() {
    let refused = free_port(); // nothing listens there
    let links = vec![
        (
            "dns a",
            "https://ragmap-test-nonexistent.invalid/a".to_string(),
        ),
        (
            "dns b",
            "https://ragmap-test-nonexistent.invalid/b".to_string(),
        ),
        (
            "dns c",
            "http://another-nonexistent-host.invalid/".to_string(),
        ),
        ("refused", format!("http://127.0.0.1:{refused}/x")),
        ("refused again", format!("http://127.0.0.1:{refused}/y")),
    ];
    let mut ws = Workspace::new(&links);
    ws.config.crawl.per_host_delay_ms = 1000;
    let t0 = Instant::now();
    let report = rt().block_on(crawl::crawl(&ws.config, &ws.opts())).unwrap();
    assert!(
        report
            .entries
            .iter()
            .all(|e| e.outcome == Outcome::Unreachable),
        "{:#?}",
        report.entries
    );
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    // The second link of a dead host is not tried again.
    let again = entry(&report, "/b");
    assert_eq!(again.requests, 0, "{again:?}");
    assert!(report.summary().contains("unreachable 5"));
}

// ---------------------------------------------------------------- in-process server

/// Requests seen by the in-process server: (path, arrival time).
type Seen = Arc<Mutex<Vec<(String, Instant)>>>;

type Handler = dyn Fn(&str, &HashMap<String, String>, usize) -> (u16, Vec<(String, String)>, Vec<u8>)
    + Send
    + Sync;

/// A minimal HTTP/1.1 server: one response per connection. The handler gets
/// the path, the lower-cased request headers and the request count for that
/// path (1 for the first), and returns status, headers and body. Every
/// request is recorded as (path, time).
fn mini_server(rt: &tokio::runtime::Runtime, handler: Arc<Handler>) -> (u16, Seen) {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    rt.spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let mut lines = head.split("\r\n");
                let path = lines
                    .next()
                    .unwrap_or("")
                    .split(' ')
                    .nth(1)
                    .unwrap_or("/")
                    .to_string();
                let headers: HashMap<String, String> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let n = {
                    let mut s = seen.lock().unwrap();
                    s.push((path.clone(), Instant::now()));
                    s.iter().filter(|(p, _)| *p == path).count()
                };
                let (status, extra, body) = handler(&path, &headers, n);
                let mut resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in extra {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (port, seen)
}

const PAGE: &str = "<html><head><title>Mini page</title></head><body><main><h1>Mini page</h1>\
    <p>Enough words in this paragraph to count as real content for the extractor to keep.</p></main></body></html>";

#[test]
fn conditional_requests_get_not_modified() {
    let rt = rt();
    let handler: Arc<Handler> = Arc::new(|path, headers, _| match path {
        "/robots.txt" => (404, vec![], vec![]),
        _ if headers.get("if-none-match").map(String::as_str) == Some("\"v1\"") => {
            (304, vec![], vec![])
        }
        _ => (
            200,
            vec![
                ("Content-Type".into(), "text/html".into()),
                ("ETag".into(), "\"v1\"".into()),
            ],
            PAGE.as_bytes().to_vec(),
        ),
    });
    let (port, _) = mini_server(&rt, handler);
    let ws = Workspace::new(&[("p", format!("http://127.0.0.1:{port}/page"))]);
    let first = rt.block_on(crawl::crawl(&ws.config, &ws.opts())).unwrap();
    assert_eq!(first.entries[0].outcome, Outcome::Ok);
    let (front, _) = ws.doc(&first.entries[0]);
    assert_eq!(front.etag.as_deref(), Some("\"v1\""));
    let path = ws
        .corpus()
        .join(first.entries[0].document.as_ref().unwrap());
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let second = rt.block_on(crawl::crawl(&ws.config, &ws.opts())).unwrap();
    assert_eq!(second.entries[0].outcome, Outcome::NotModified);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
}

#[test]
fn retry_after_and_crawl_delay_are_honoured() {
    let rt = rt();
    let handler: Arc<Handler> = Arc::new(|path, _, n| match path {
        "/robots.txt" => (200, vec![], b"User-agent: *\nCrawl-delay: 1\n".to_vec()),
        "/busy" if n == 1 => (429, vec![("Retry-After".into(), "2".into())], vec![]),
        "/down" => (503, vec![], vec![]),
        _ => (
            200,
            vec![("Content-Type".into(), "text/html".into())],
            PAGE.as_bytes().to_vec(),
        ),
    });
    let (port, seen) = mini_server(&rt, handler);
    let mut ws = Workspace::new(&[
        ("busy", format!("http://127.0.0.1:{port}/busy")),
        ("down", format!("http://127.0.0.1:{port}/down")),
    ]);
    ws.config.crawl.max_retries = 1;
    let report = rt.block_on(crawl::crawl(&ws.config, &ws.opts())).unwrap();
    let busy = entry(&report, "/busy");
    assert_eq!(busy.outcome, Outcome::Ok, "{busy:?}");
    let down = entry(&report, "/down");
    assert_eq!(down.outcome, Outcome::FailedAfterRetries, "{down:?}");
    assert_eq!(down.requests, 2);
    let seen = seen.lock().unwrap();
    let times: Vec<&Instant> = seen
        .iter()
        .filter(|(p, _)| p == "/busy")
        .map(|(_, t)| t)
        .collect();
    assert!(
        *times[1] - *times[0] >= Duration::from_millis(1950),
        "Retry-After: 2 not honoured"
    );
    // Crawl-delay: 1 s between any two requests to the host (robots.txt included).
    for w in seen.windows(2) {
        assert!(
            w[1].1 - w[0].1 >= Duration::from_millis(950),
            "{:?} → {:?} too close",
            w[0].0,
            w[1].0
        );
    }
}

#[test]
fn roadmap_can_be_a_url_and_missing_roadmap_is_an_error() {
    let rt = rt();
    let ws = Workspace::new(&[]);
    let mut opts = ws.opts();
    opts.roadmap = Some(ws.dir.path().join("nope.md").display().to_string());
    let err = rt
        .block_on(crawl::crawl(&ws.config, &opts))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.md"), "{err}");

    let port = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let p2 = port.clone();
    let handler: Arc<Handler> = Arc::new(move |path, _, _| match path {
        "/roadmap.md" => {
            let port = p2.load(std::sync::atomic::Ordering::SeqCst);
            let md =
                format!("# R\n\n## 阶段 › 学习资源\n\n- [页面](http://127.0.0.1:{port}/page)\n");
            (
                200,
                vec![("Content-Type".into(), "text/markdown; charset=utf-8".into())],
                md.into_bytes(),
            )
        }
        "/robots.txt" => (404, vec![], vec![]),
        _ => (
            200,
            vec![("Content-Type".into(), "text/html".into())],
            PAGE.as_bytes().to_vec(),
        ),
    });
    let (p, _) = mini_server(&rt, handler);
    port.store(p, std::sync::atomic::Ordering::SeqCst);
    opts.roadmap = Some(format!("http://127.0.0.1:{p}/roadmap.md"));
    let report = rt.block_on(crawl::crawl(&ws.config, &opts)).unwrap();
    assert_eq!(report.entries.len(), 1);
    assert_eq!(report.entries[0].outcome, Outcome::Ok);
    let (front, _) = ws.doc(&report.entries[0]);
    assert_eq!(front.sections, vec!["阶段 › 学习资源".to_string()]);
}

/// Ctrl-C on the real binary: finished documents stay, the report says
/// "interrupted", and the next run resumes without fetching them again.
#[cfg(unix)]
#[test]
fn ctrl_c_keeps_finished_documents_and_the_next_run_resumes() {
    use std::io::{BufRead, BufReader};
    let Some(m) = Mirror::start() else { return };
    let pages = [
        "/www.promptingguide.ai/zh/techniques/cot.html",
        "/www.promptingguide.ai/techniques/cot.html",
        "/www.promptingguide.ai/techniques/tot.html",
        "/www.promptingguide.ai/zh/techniques/react.html",
        "/www.promptingguide.ai/zh/techniques/rag.html",
        "/www.promptingguide.ai/zh/risks/adversarial.html",
        "/www.promptingguide.ai/zh/introduction/elements.html",
        "/www.promptingguide.ai/introduction/settings.html",
        "/jalammar.github.io/illustrated-transformer/index.html",
        "/jalammar.github.io/illustrated-gpt2/index.html",
    ];
    let links: Vec<(&str, String)> = pages.iter().map(|p| ("page", m.url(p))).collect();
    let ws = Workspace::new(&links);
    std::fs::write(
        ws.dir.path().join("config.toml"),
        "[crawl]\nper_host_delay_ms = 400\nblock_private = \"never\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ragmap"))
        .arg("-C")
        .arg(ws.dir.path())
        .args(["crawl", "--plain", "--roadmap"])
        .arg(ws.dir.path().join("roadmap.md"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut finished = 0;
    for line in stderr.lines() {
        let line = line.unwrap();
        if line.contains(" ok ") {
            finished += 1;
        }
        if finished == 3 {
            let status = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            break;
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    let config = Config::load(ws.dir.path()).unwrap();
    let report = crawl::load_report(&crawl::report_path(&config)).unwrap();
    assert!(report.interrupted);
    let done: Vec<&Entry> = report
        .entries
        .iter()
        .filter(|e| e.outcome == Outcome::Ok)
        .collect();
    assert!(
        done.len() >= 3 && done.len() < pages.len(),
        "{:#?}",
        report.entries
    );
    for e in &done {
        assert!(config
            .corpus_dir()
            .join(e.document.as_ref().unwrap())
            .is_file());
    }
    assert!(report
        .entries
        .iter()
        .any(|e| e.outcome == Outcome::Interrupted));

    let before = m.requests().len();
    let second = rt().block_on(crawl::crawl(&config, &ws.opts())).unwrap();
    assert!(!second.interrupted);
    let kept = second
        .entries
        .iter()
        .filter(|e| e.outcome == Outcome::Kept)
        .count();
    assert_eq!(kept, done.len());
    assert!(
        second.entries.iter().all(|e| e.outcome.has_document()),
        "{:#?}",
        second.entries
    );
    let refetched: Vec<String> = m.requests()[before..]
        .iter()
        .map(|l| l.path.clone())
        .collect();
    for e in &done {
        let path = e.url.split(&format!(":{}", m.port)).nth(1).unwrap();
        assert!(!refetched.iter().any(|p| p == path), "{path} fetched again");
    }
}
