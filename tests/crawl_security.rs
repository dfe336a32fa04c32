//! Hostile roadmaps and pages: names stay inside corpus/web, only http(s) is
//! ever fetched, and following links refuses private addresses unless the
//! config says otherwise. A tiny in-process server answers every path with a
//! page, so even hostile paths produce documents.

mod common;

use std::path::Path;

use common::*;
use ragmap::config::Config;
use ragmap::crawl::{self, Outcome};

const PAGE: &str = "<html><head><title>Served page</title></head><body><article>\
<h1>Served page</h1><p>Retrieval augmented generation splits documents into chunks, \
embeds them and answers from the best passages. 检索增强生成。</p>\
<a href=\"/linked-1.html\">one</a> <a href=\"/linked-2.html\">two</a> \
<a href=\"file:///etc/passwd\">passwd</a> <a href=\"javascript:alert(1)\">js</a> \
<a href=\"data:text/html,hi\">data</a> <a href=\"ftp://127.0.0.1/x\">ftp</a>\
</article></body></html>";

/// Answers every GET with [`PAGE`] (robots.txt: 404); records request paths.
fn any_path_server() -> ScriptedServer {
    ScriptedServer::start(|req| match req.path.as_str() {
        "/robots.txt" => Reply::new(404),
        _ => Reply::html(PAGE),
    })
}

fn config(ws: &Workspace) -> Config {
    let mut c = ws.config();
    c.crawl.per_host_delay_ms = 0;
    c.crawl.max_retries = 0;
    c
}

fn write_roadmap(ws: &Workspace, links: &[String]) {
    let titled: Vec<(String, &String)> = links
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("link {i}"), l))
        .collect();
    ws.write_roadmap("# Hostile roadmap\n\n## Links", &titled);
}

/// Every file in the workspace, relative, with `/`.
fn all_files(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| ragmap::corpus::rel_path(root, e.path()))
        .collect()
}

#[test]
fn hostile_urls_are_stored_inside_corpus_web() {
    let server = any_path_server();
    let base = server.url("");
    let hostile = [
        "/../../../../etc/passwd".to_string(),
        "/%2F..%2F..%2F..%2Fescape".to_string(),
        "/..%2f..%2fescape2".to_string(),
        "/%2e%2e/%2e%2e/escape3".to_string(),
        "/..%5C..%5Cwindows".to_string(),
        "/a%00b".to_string(),
        "/CON".to_string(),
        "/nul.txt".to_string(),
        "/LPT9.txt".to_string(),
        "/com1".to_string(),
        format!("/{}", "a".repeat(10_000)),
        format!("/{}", "长".repeat(3_000)),
        "/?q=/../../x".to_string(),
        "/#/../../frag".to_string(),
    ];
    let links: Vec<String> = hostile.iter().map(|h| format!("{base}{h}")).collect();
    let ws = Workspace::new("");
    write_roadmap(&ws, &links);
    let report = block_on(crawl::crawl(&config(&ws), &ws.crawl_options(0))).unwrap();
    assert!(!server.requests().is_empty());
    let docs: Vec<&String> = report
        .entries
        .iter()
        .filter_map(|e| e.document.as_ref())
        .collect();
    assert!(docs.len() >= 10, "{:#?}", report.entries);

    let web = ws.corpus().join("web").canonicalize().unwrap();
    for d in &docs {
        let p = ws.corpus().join(d).canonicalize().unwrap();
        assert!(p.starts_with(&web), "{d} escapes corpus/web");
    }
    for f in all_files(ws.path()) {
        if ["config.toml", "roadmap.md", "crawl-report.json"].contains(&f.as_str()) {
            continue;
        }
        let parts: Vec<&str> = f.split('/').collect();
        assert_eq!(parts.len(), 4, "unexpected file {f}");
        assert_eq!(&parts[..2], &["corpus", "web"], "{f}");
        for part in &parts[2..] {
            assert!(part.len() <= 255, "{f}");
            assert!(!part.contains('\0') && *part != ".." && *part != ".");
            let stem = part.split('.').next().unwrap().to_ascii_lowercase();
            assert!(
                !["con", "nul", "prn", "aux", "lpt9", "com1"].contains(&stem.as_str()),
                "Windows reserved name {f}"
            );
        }
    }
}

#[test]
fn only_http_links_are_fetched_and_no_local_file_is_read() {
    let server = any_path_server();
    let port = server.port();
    let ws = Workspace::new("");
    let links = vec![
        "file:///etc/passwd".to_string(),
        "FILE:///etc/hostname".to_string(),
        "javascript:alert(document.cookie)".to_string(),
        "data:text/html,<h1>root:x:0:0</h1>".to_string(),
        format!("ftp://127.0.0.1:{port}/pub"),
        format!("http://127.0.0.1:{port}/ok.html"),
    ];
    write_roadmap(&ws, &links);
    // Depth 1 with block_private = never: the page's file:/javascript:/data:/ftp:
    // links are not followed either.
    let mut c = config(&ws);
    c.crawl.block_private = ragmap::config::BlockPrivate::Never;
    let report = block_on(crawl::crawl(&c, &ws.crawl_options(1))).unwrap();
    for e in &report.entries {
        assert!(
            e.url.starts_with("http://"),
            "non-http resource crawled: {e:?}"
        );
    }
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "/linked-1.html",
            "/linked-2.html",
            "/ok.html",
            "/robots.txt"
        ],
        "{paths:?}"
    );
    for f in all_files(&ws.corpus()) {
        let text = std::fs::read_to_string(ws.corpus().join(&f)).unwrap();
        assert!(!text.contains("root:x:0"), "{f} holds a local file");
    }

    // A roadmap with nothing but non-http links is an error naming it.
    write_roadmap(&ws, &links[..4]);
    let out = ws.run(&["crawl", "--plain", "--roadmap", &ws.roadmap()]);
    assert_clean_failure(&out, 1, "has no http(s) links");
}

#[test]
fn following_links_refuses_loopback_unless_configured() {
    let server = any_path_server();
    let url = server.url("/start.html");

    let crawl_depth_1 = |config_toml: &str| {
        let ws = Workspace::new(config_toml);
        write_roadmap(&ws, std::slice::from_ref(&url));
        let roadmap = ws.roadmap();
        let out = ws.run(&["crawl", "--plain", "--depth", "1", "--roadmap", &roadmap]);
        assert!(out.status.success(), "{}", stderr(&out));
        (ws, out)
    };

    // Default config (block_private = "auto"), --depth 1: refused and reported.
    let (ws, out) = crawl_depth_1("[crawl]\nper_host_delay_ms = 0\n");
    assert!(
        stdout(&out).contains("blocked-private 1"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("blocked-private"), "{}", stderr(&out));
    assert!(server.requests().is_empty(), "a blocked host was contacted");
    let report = crawl::load_report(&crawl::report_path(&ws.config())).unwrap();
    assert_eq!(report.entries.len(), 1);
    assert_eq!(report.entries[0].outcome, Outcome::BlockedPrivate);

    // block_private = "never": the same crawl follows the page's links.
    let (ws, _) = crawl_depth_1("[crawl]\nper_host_delay_ms = 0\nblock_private = \"never\"\n");
    let report = crawl::load_report(&crawl::report_path(&ws.config())).unwrap();
    let followed: Vec<_> = report.entries.iter().filter(|e| e.depth == 1).collect();
    assert_eq!(followed.len(), 2, "{:#?}", report.entries);
    assert!(followed.iter().all(|e| e.outcome == Outcome::Ok));
}
