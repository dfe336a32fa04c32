//! The crawler against ../shared/webcorpus/serve.py (started per test on a free
//! port, killed on drop) and the scripted server for the HTTP corners the
//! mirror does not exercise (304, 429 + Retry-After, Crawl-delay).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ragmap::config::{BlockPrivate, Config};
use ragmap::corpus;
use ragmap::crawl::{self, CrawlReport, Entry, Outcome};

/// A workspace whose roadmap links `links` under "Stage › with arrow ›
/// Topic", and a config with delays, timeouts and retries short enough for
/// the fault pages to end in seconds (loopback hosts allowed).
fn quick_workspace(links: &[(&str, String)]) -> (Workspace, Config) {
    let ws = Workspace::new("");
    ws.write_roadmap(
        "# Test roadmap\n\n## Stage › with arrow\n\n### Topic",
        links,
    );
    let mut config = ws.config();
    let c = &mut config.crawl;
    c.per_host_delay_ms = 100;
    c.connect_timeout_secs = 2.0;
    c.read_timeout_secs = 1.0;
    c.total_timeout_secs = 4.0;
    c.max_retries = 3;
    c.retry_base_delay_ms = 50;
    c.max_bytes = 4 * 1024 * 1024;
    c.block_private = BlockPrivate::Never;
    (ws, config)
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
    let (ws, config) = quick_workspace(&links);
    let t0 = Instant::now();
    let report = block_on(crawl::crawl(&config, &ws.crawl_options(0))).unwrap();
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
    let (front, body) = ws.document(chain);
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
        let (front, body) = ws.document(e);
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
    let (front, body) = ws.document(gz);
    assert!(
        body.starts_with("# GraphRAG"),
        "{}",
        &body[..body.len().min(200)]
    );
    assert!(front.title.unwrap().contains("graphrag"));

    // PDF: text extracted.
    let pdf = entry(&report, "DeepSeek_R1.pdf");
    assert_eq!(pdf.outcome, Outcome::Ok, "{pdf:?}");
    let (_, body) = ws.document(pdf);
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
    let (_, body) = ws.document(md);
    assert_eq!(body.trim(), served.replace("\r\n", "\n").trim());

    // Chinese, percent-encoded path.
    assert_eq!(
        outcome("1.%20Ollama%20%E4%BB%8B%E7%BB%8D.html"),
        Outcome::Ok
    );

    // Every stored document carries its provenance.
    for e in report.entries.iter().filter(|e| e.outcome == Outcome::Ok) {
        let (f, body) = ws.document(e);
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

    // No URL answered twice with content in one run (retries of failures aside:
    // on a loaded machine the 20 MB page can time out before the cap and be
    // retried; a response cut off by us is not an answer).
    let mut ok_per_path: HashMap<&str, usize> = HashMap::new();
    for l in log.iter().filter(|l| l.status == 200 && !l.aborted) {
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
    let saved = crawl::load_report(&crawl::report_path(&config)).unwrap();
    assert_eq!(saved.entries.len(), report.entries.len());
    assert!(crawl::status_line(&saved).contains("resources"));
    assert!(wall < Duration::from_secs(60), "{wall:?}");
}

#[test]
fn slow_page_times_out_within_the_configured_limits() {
    let Some(m) = Mirror::start() else { return };
    let (ws, config) = quick_workspace(&[("slow", m.url("/slow/llamaindex-primer.html"))]);
    let t0 = Instant::now();
    let report = block_on(crawl::crawl(&config, &ws.crawl_options(0))).unwrap();
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
    let (ws, config) = quick_workspace(&[
        (
            "direct",
            m.url("/huggingface.co/learn/llm-course/en/chapter1/1.html"),
        ),
        (
            "old name",
            m.url("/huggingface.co/learn/nlp-course/chapter1/1"),
        ),
    ]);
    let report = block_on(crawl::crawl(&config, &ws.crawl_options(0))).unwrap();
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
    let (ws, mut config) =
        quick_workspace(&[("gzip", m.url("/github.com/microsoft/graphrag/index.html"))]);
    // The compressed body is small; the decoded page is ~19 KB.
    config.crawl.max_bytes = 10_000;
    let report = block_on(crawl::crawl(&config, &ws.crawl_options(0))).unwrap();
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
    let (ws, config) = quick_workspace(&[
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
    let first = block_on(crawl::crawl(&config, &ws.crawl_options(0))).unwrap();
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

    let second = block_on(crawl::crawl(&config, &ws.crawl_options(0))).unwrap();
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
    let (ws, config) = quick_workspace(&[
        ("a", m.url("/www.promptingguide.ai/zh/techniques/cot.html")),
        (
            "b",
            m.url("/jalammar.github.io/illustrated-gpt2/index.html"),
        ),
    ]);
    let mut first = block_on(crawl::crawl(&config, &ws.crawl_options(0))).unwrap();
    // Pretend Ctrl-C arrived before the second page finished.
    first.interrupted = true;
    first.entries[1].outcome = Outcome::Interrupted;
    first.entries[1].document = None;
    first.save(&crawl::report_path(&config)).unwrap();
    let served_before = m.requests().len();

    let second = block_on(crawl::crawl(&config, &ws.crawl_options(0))).unwrap();
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
    let (ws, mut config) =
        quick_workspace(&[("guide", m.url("/www.promptingguide.ai/zh/index.html"))]);
    config.crawl.max_pages_per_host = 4;
    let mut opts = ws.crawl_options(0);
    opts.depth = 1;
    let report = block_on(crawl::crawl(&config, &opts)).unwrap();
    assert_eq!(report.entries.len(), 4, "{:#?}", report.entries);
    let followed: Vec<&Entry> = report.entries.iter().filter(|e| e.depth == 1).collect();
    assert_eq!(followed.len(), 3);
    for e in &followed {
        assert!(e.url.starts_with(&m.url("/")), "{}", e.url);
        if e.outcome == Outcome::Ok {
            let (f, _) = ws.document(e);
            assert_eq!(
                f.sections,
                vec!["Stage › with arrow › Topic".to_string()],
                "inherits the sections"
            );
        }
    }
    // With block_private left at "auto", following links refuses loopback addresses.
    config.crawl.block_private = BlockPrivate::Auto;
    let blocked = block_on(crawl::crawl(&config, &opts)).unwrap();
    assert_eq!(blocked.entries.len(), 1);
    assert_eq!(blocked.entries[0].outcome, Outcome::BlockedPrivate);
}

#[test]
fn unreachable_hosts_fail_fast() {
    let refused = closed_port(); // nothing listens there
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
    let (ws, mut config) = quick_workspace(&links);
    config.crawl.per_host_delay_ms = 1000;
    let t0 = Instant::now();
    let report = block_on(crawl::crawl(&config, &ws.crawl_options(0))).unwrap();
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

// ---------------------------------------------------------------- scripted server

const PAGE: &str = "<html><head><title>Mini page</title></head><body><main><h1>Mini page</h1>\
    <p>Enough words in this paragraph to count as real content for the extractor to keep.</p></main></body></html>";

#[test]
fn conditional_requests_get_not_modified() {
    let server = ScriptedServer::start(|req| match req.path.as_str() {
        "/robots.txt" => Reply::new(404),
        _ if req.header("if-none-match") == Some("\"v1\"") => Reply::new(304),
        _ => Reply::with_body(200, "text/html", PAGE).header("ETag", "\"v1\""),
    });
    let (ws, config) = quick_workspace(&[("p", server.url("/page"))]);
    let first = block_on(crawl::crawl(&config, &ws.crawl_options(0))).unwrap();
    assert_eq!(first.entries[0].outcome, Outcome::Ok);
    let (front, _) = ws.document(&first.entries[0]);
    assert_eq!(front.etag.as_deref(), Some("\"v1\""));
    let path = ws
        .corpus()
        .join(first.entries[0].document.as_ref().unwrap());
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let second = block_on(crawl::crawl(&config, &ws.crawl_options(0))).unwrap();
    assert_eq!(second.entries[0].outcome, Outcome::NotModified);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
}

#[test]
fn retry_after_and_crawl_delay_are_honoured() {
    let server = ScriptedServer::start(|req| match req.path.as_str() {
        "/robots.txt" => Reply::new(200).body("User-agent: *\nCrawl-delay: 1\n"),
        "/busy" if req.nth == 1 => Reply::new(429).header("Retry-After", "2"),
        "/down" => Reply::new(503),
        _ => Reply::with_body(200, "text/html", PAGE),
    });
    let (ws, mut config) =
        quick_workspace(&[("busy", server.url("/busy")), ("down", server.url("/down"))]);
    config.crawl.max_retries = 1;
    let report = block_on(crawl::crawl(&config, &ws.crawl_options(0))).unwrap();
    let busy = entry(&report, "/busy");
    assert_eq!(busy.outcome, Outcome::Ok, "{busy:?}");
    let down = entry(&report, "/down");
    assert_eq!(down.outcome, Outcome::FailedAfterRetries, "{down:?}");
    assert_eq!(down.requests, 2);
    let seen = server.requests();
    let times: Vec<Instant> = seen
        .iter()
        .filter(|r| r.path == "/busy")
        .map(|r| r.received)
        .collect();
    assert!(
        times[1] - times[0] >= Duration::from_millis(1950),
        "Retry-After: 2 not honoured"
    );
    // Crawl-delay: 1 s between any two requests to the host (robots.txt included).
    for w in seen.windows(2) {
        assert!(
            w[1].received - w[0].received >= Duration::from_millis(950),
            "{:?} → {:?} too close",
            w[0].path,
            w[1].path
        );
    }
}

#[test]
fn roadmap_can_be_a_url_and_missing_roadmap_is_an_error() {
    let (ws, config) = quick_workspace(&[]);
    let mut opts = ws.crawl_options(0);
    opts.roadmap = Some(ws.path().join("nope.md").display().to_string());
    let err = block_on(crawl::crawl(&config, &opts))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.md"), "{err}");

    let server = ScriptedServer::start(|req| match req.path.as_str() {
        "/roadmap.md" => {
            let host = req.header("host").unwrap();
            let md = format!("# R\n\n## 阶段 › 学习资源\n\n- [页面](http://{host}/page)\n");
            Reply::with_body(200, "text/markdown; charset=utf-8", md)
        }
        "/robots.txt" => Reply::new(404),
        _ => Reply::with_body(200, "text/html", PAGE),
    });
    opts.roadmap = Some(server.url("/roadmap.md"));
    let report = block_on(crawl::crawl(&config, &opts)).unwrap();
    assert_eq!(report.entries.len(), 1);
    assert_eq!(report.entries[0].outcome, Outcome::Ok);
    let (front, _) = ws.document(&report.entries[0]);
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
    let (ws, _) = quick_workspace(&links);
    std::fs::write(
        ws.path().join("config.toml"),
        "[crawl]\nper_host_delay_ms = 400\nblock_private = \"never\"\n",
    )
    .unwrap();
    let mut child = ws
        .command(&["crawl", "--plain", "--roadmap", &ws.roadmap()])
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
    let config = ws.config();
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
    let second = block_on(crawl::crawl(&config, &ws.crawl_options(0))).unwrap();
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

#[test]
fn robots_txt_is_requested_once_when_one_origin_redirects_to_another() {
    // B is the site; A an alias (think http:// of an https:// site) whose
    // robots.txt and pages all redirect to B. The first pages of both start
    // together.
    let b = ScriptedServer::start(|req| match req.path.as_str() {
        "/robots.txt" => Reply::new(200).body("User-agent: *\nDisallow: /private/\n"),
        _ => Reply::with_body(200, "text/html", PAGE),
    });
    let b_root = b.url("");
    let a = ScriptedServer::start(move |req| {
        Reply::new(301).header("Location", &format!("{b_root}{}", req.path))
    });
    let links = [
        ("a one", a.url("/one")),
        ("a two", a.url("/two")),
        ("b three", b.url("/three")),
        ("b four", b.url("/four")),
        ("b private", b.url("/private/x")),
    ];
    let (ws, config) = quick_workspace(&links);
    let report = block_on(crawl::crawl(&config, &ws.crawl_options(0))).unwrap();
    assert_eq!(entry(&report, "/one").outcome, Outcome::Ok);
    assert_eq!(entry(&report, "/four").outcome, Outcome::Ok);
    assert_eq!(
        entry(&report, "/private/x").outcome,
        Outcome::RobotsDisallowed
    );
    let robots = |s: &ScriptedServer| {
        s.requests()
            .iter()
            .filter(|r| r.path == "/robots.txt")
            .count()
    };
    assert_eq!(robots(&a), 1, "A's robots.txt");
    assert_eq!(robots(&b), 1, "B's robots.txt, reached from both origins");
}
