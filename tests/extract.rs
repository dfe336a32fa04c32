//! Extraction quality on the mirrored pages of ../shared/webcorpus (read at run
//! time, never copied). For every HTML page the test splits the body into
//! "chrome" — the page furniture, located by selectors picked by hand after
//! reading each page family (GitHub, nextra, Hugging Face, docsify, Mintlify,
//! jekyll, the legacy GBK blog) — and "content" (the rest). Then:
//!
//! * recall: share of the content's text passages (≥ 20 characters) found in the markdown;
//! * leaks: chrome text passages (≥ 6 characters, not also in the content) found in it.
//!
//! `compare_methods` prints the numbers for the three strategies (run with
//! `--nocapture`); `chosen_extractor_keeps_content_and_drops_chrome` holds the
//! crawler's extractor to them.

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::webcorpus;

use ragmap::crawl::extract::{self, Method};
use ragmap::crawl::sniff;
use scraper::{ElementRef, Html, Node, Selector};
use url::Url;

/// The synthetic chrome of the mirror's page families (and the real sites' furniture).
const CHROME: &str = ".cookie-banner, .cookie-tip, #cookie-consent, #cookieTip, header.AppHeader, header.border-b, \
    #site_header, nav, footer, aside, \
    #repository-container-header, .file-navigation, table.Box, .Layout-sidebar, .nextra-nav-container, \
    .nextra-sidebar-container, .nextra-toc, .nx-mb-8, .docs-sidebar, .app-nav, .sidebar, .masthead, .page__footer, \
    .wrapper-masthead, .sidebar-archive, .wrapper-footer, #navbar, #sidebar, .feedback-toolbar, #footer, #top, \
    td.left, .postDesc, #comment_form, #foot, .bmc, #disqus_thread, .preloader, .mobile-header, .search, \
    .sidebar-toggle-button, .show-on-focus, .flash, #ajax-error-message, .BorderGrid, .pagehead-actions, .UnderlineNav";

struct Page {
    path: String,
    html: String,
}

fn pages(dir: &Path) -> Vec<Page> {
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).unwrap();
    let mut out = Vec::new();
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let path = cols[0];
        if !path.ends_with(".html") {
            continue;
        }
        let decoded = percent_decode(path);
        let bytes = std::fs::read(dir.join("site").join(decoded.trim_start_matches('/'))).unwrap();
        let (html, _) = sniff::decode(&bytes, None, true, "");
        out.push(Page {
            path: path.to_string(),
            // Parse as a browser would once `<iframe … />` is closed (see close_self_closed).
            html: extract::close_self_closed(&html),
        });
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// Collapses whitespace and drops markdown punctuation so HTML text and
/// markdown compare.
fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '\\' | '*' | '_' | '`' | '#' | '>' | '|' | '[' | ']'))
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Text passages of the page: (content passages, chrome passages).
fn passages(html: &str) -> (Vec<String>, Vec<String>) {
    let doc = Html::parse_document(html);
    let chrome_sel = Selector::parse(CHROME).unwrap();
    let chrome_ids: HashSet<_> = doc.select(&chrome_sel).map(|e| e.id()).collect();
    let body_sel = Selector::parse("body").unwrap();
    let Some(body) = doc.select(&body_sel).next() else {
        return (vec![], vec![]);
    };
    let mut content = Vec::new();
    let mut content_all = String::new();
    let mut chrome = Vec::new();
    for node in body.descendants() {
        let Node::Text(t) = node.value() else {
            continue;
        };
        let mut in_chrome = false;
        let mut skip = false;
        for a in node.ancestors() {
            if chrome_ids.contains(&a.id()) {
                in_chrome = true;
            }
            if let Some(el) = ElementRef::wrap(a) {
                if matches!(
                    el.value().name(),
                    "script" | "style" | "noscript" | "template" | "svg" | "button" | "textarea"
                ) {
                    skip = true;
                }
            }
        }
        if skip {
            continue;
        }
        let text = norm(t);
        if in_chrome {
            if text.chars().count() >= 6 {
                chrome.push(text);
            }
        } else {
            content_all.push_str(&text);
            content_all.push(' ');
            if text.chars().count() >= 20 {
                content.push(text);
            }
        }
    }
    chrome.retain(|c| !content_all.contains(c.as_str()));
    chrome.sort();
    chrome.dedup();
    (content, chrome)
}

struct Score {
    recall: f64,
    leaks: Vec<String>,
}

/// The markdown's visible text: link targets dropped (a URL naming the repository
/// is not leaked chrome).
fn visible(md: &str) -> String {
    let mut out = String::with_capacity(md.len());
    let mut rest = md;
    while let Some(i) = rest.find("](") {
        out.push_str(&rest[..i + 1]);
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(j) => rest = &after[j + 1..],
            None => {
                rest = after;
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

fn score(md: &str, content: &[String], chrome: &[String]) -> Score {
    let m = norm(&visible(md));
    let found = content
        .iter()
        .filter(|c| {
            let probe: String = c.chars().take(30).collect();
            m.contains(probe.trim())
        })
        .count();
    if std::env::var("EXTRACT_DEBUG").is_ok() {
        for c in content {
            let probe: String = c.chars().take(30).collect();
            if !m.contains(probe.trim()) {
                eprintln!("    missing: {c}");
            }
        }
    }
    let recall = if content.is_empty() {
        1.0
    } else {
        found as f64 / content.len() as f64
    };
    let leaks = chrome
        .iter()
        .filter(|c| m.contains(c.as_str()))
        .cloned()
        .collect();
    Score { recall, leaks }
}

fn base(path: &str) -> Url {
    Url::parse(&format!("http://127.0.0.1:8719{path}")).unwrap()
}

#[test]
fn compare_methods() {
    let Some(dir) = webcorpus() else { return };
    let pages = pages(&dir);
    assert!(pages.len() >= 80, "{}", pages.len());
    for (name, method) in [
        ("readability", Some(Method::Readability)),
        ("structural", Some(Method::Structural)),
        ("combined", Some(Method::Combined)),
        ("chosen", None),
    ] {
        let mut recall_sum = 0.0;
        let mut low_recall = 0;
        let mut leaky_pages = 0;
        let mut leaks_total = 0;
        let t0 = std::time::Instant::now();
        for p in &pages {
            let (content, chrome) = passages(&p.html);
            let md = match method {
                Some(m) => extract::extract(m, &p.html, &base(&p.path)).markdown,
                None => extract::html_to_markdown(&p.html, &base(&p.path)).markdown,
            };
            let s = score(&md, &content, &chrome);
            recall_sum += s.recall;
            if s.recall < 0.8 {
                low_recall += 1;
            }
            if s.recall < 0.95 {
                eprintln!("  {name}: recall {:.2} on {}", s.recall, p.path);
            }
            if !s.leaks.is_empty() {
                leaky_pages += 1;
                leaks_total += s.leaks.len();
                eprintln!(
                    "  {name}: {} leaks on {}: {:?}",
                    s.leaks.len(),
                    p.path,
                    &s.leaks[..s.leaks.len().min(3)]
                );
            }
        }
        eprintln!(
            "{name:12} pages {} | mean recall {:.3} | pages recall<0.8: {low_recall} | pages with chrome leaks: {leaky_pages} ({leaks_total} passages) | {:.1}s",
            pages.len(),
            recall_sum / pages.len() as f64,
            t0.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn chosen_extractor_keeps_content_and_drops_chrome() {
    let Some(dir) = webcorpus() else { return };
    let pages = pages(&dir);
    let mut recall_sum = 0.0;
    let mut problems = Vec::new();
    for p in &pages {
        let (content, chrome) = passages(&p.html);
        let e = extract::html_to_markdown(&p.html, &base(&p.path));
        assert!(
            e.title.as_deref().is_some_and(|t| !t.is_empty()),
            "no title for {}",
            p.path
        );
        let s = score(&e.markdown, &content, &chrome);
        recall_sum += s.recall;
        if s.recall < 0.8 {
            problems.push(format!("recall {:.2} on {}", s.recall, p.path));
        }
        if !s.leaks.is_empty() {
            problems.push(format!("chrome leaked on {}: {:?}", p.path, s.leaks));
        }
        // Synthetic cookie banners never survive, whatever their wording.
        for marker in ["We use optional cookies", "本网站使用 Cookie", "同意并继续"] {
            assert!(
                !e.markdown.contains(marker),
                "cookie banner text {marker:?} in {}",
                p.path
            );
        }
    }
    let mean = recall_sum / pages.len() as f64;
    assert!(mean >= 0.95, "mean recall {mean:.3}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
