//! Property tests ("fuzzing" that runs in CI) for everything that reads data
//! from the network or from a roadmap: the roadmap parser, the SSE and NDJSON
//! stream parsers (with split-invariance), the HTML extractor and the
//! URL → file-name function. None may panic or hang; names stay inside the
//! corpus folder.
//!
//! CI runs a few hundred cases per target (a few seconds). Long local runs:
//! `RAGMAP_FUZZ_SECS=600 cargo test --release --test fuzz_network <target>`
//! keeps generating fresh cases for that many seconds and prints the count.
//! Inputs that once failed are kept below as plain regression tests.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use ragmap::crawl::{extract, naming};
use ragmap::llm::stream::{NdjsonParser, SseEvent, SseParser};
use ragmap::roadmap;
use url::Url;

/// Runs `test` over `strategy`: the default case count once, or, with
/// `RAGMAP_FUZZ_SECS` set, fresh batches until that much time has passed.
/// Also reports the slowest case, so a near-hang shows up in long runs.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let secs: Option<u64> = std::env::var("RAGMAP_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    let batch = match secs {
        Some(_) => 2_000,
        None => std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(200),
    };
    let started = Instant::now();
    let mut total = 0u64;
    let slowest = std::cell::Cell::new(Duration::ZERO);
    loop {
        let mut runner = TestRunner::new(Config {
            cases: batch,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&strategy, |v| {
            let t0 = Instant::now();
            let r = test(v);
            slowest.set(slowest.get().max(t0.elapsed()));
            r
        });
        if let Err(e) = result {
            panic!("{name}: {e}");
        }
        total += u64::from(batch);
        match secs {
            Some(s) if started.elapsed() < Duration::from_secs(s) => continue,
            _ => break,
        }
    }
    if secs.is_some() {
        eprintln!(
            "FUZZ {name}: {total} cases in {:.0}s, slowest case {:?}",
            started.elapsed().as_secs_f64(),
            slowest.get()
        );
    }
}

// ------------------------------------------------------------------ inputs

/// Markdown-ish text: links (well-formed and not), headings, brackets, parens,
/// angle brackets, unicode, percent signs, schemes the crawler must skip.
fn markdownish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("[".to_string()),
        Just("]".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("<".to_string()),
        Just(">".to_string()),
        Just("](".to_string()),
        Just("\n".to_string()),
        Just("\n\n".to_string()),
        Just("\r\n".to_string()),
        Just("# ".to_string()),
        Just("## ".to_string()),
        Just("###### ".to_string()),
        Just("- ".to_string()),
        Just("1）".to_string()),
        Just("12) ".to_string()),
        Just("课程：".to_string()),
        Just("`".to_string()),
        Just("```\n".to_string()),
        Just("![".to_string()),
        Just("%".to_string()),
        Just("%2F..%2F".to_string()),
        Just("%E5%A4%A7".to_string()),
        Just("https://".to_string()),
        Just("http://".to_string()),
        Just("HTTP://".to_string()),
        Just("www.".to_string()),
        Just("file:///etc/passwd".to_string()),
        Just("javascript:alert(1)".to_string()),
        Just("data:text/html,x".to_string()),
        Just("ftp://h/".to_string()),
        Just("example.com/a b".to_string()),
        Just("\\".to_string()),
        Just("|".to_string()),
        Just(" › ".to_string()),
        Just("\u{feff}".to_string()),
        Just("\u{200b}".to_string()),
        Just("\0".to_string()),
        "[a-z0-9 大型语言模型]{0,6}",
        any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        1 => any::<String>(),
        4 => proptest::collection::vec(piece, 0..60).prop_map(|p| p.concat()),
    ]
}

/// HTML-ish text: real tags, broken tags, unclosed quotes, self-closed
/// iframes/scripts, entities, deep nesting and huge attributes.
fn htmlish() -> impl Strategy<Value = String> {
    let tag = prop_oneof![
        Just("div"),
        Just("p"),
        Just("a"),
        Just("article"),
        Just("main"),
        Just("nav"),
        Just("table"),
        Just("tr"),
        Just("td"),
        Just("pre"),
        Just("code"),
        Just("ul"),
        Just("li"),
        Just("h1"),
        Just("h2"),
        Just("script"),
        Just("style"),
        Just("iframe"),
        Just("textarea"),
        Just("svg"),
        Just("math"),
        Just("template"),
        Just("img"),
        Just("br"),
        Just("title"),
        Just("noscript"),
    ];
    let piece = prop_oneof![
        tag.clone().prop_map(|t| format!("<{t}>")),
        tag.clone().prop_map(|t| format!("</{t}>")),
        tag.clone().prop_map(|t| format!("<{t} />")),
        tag.clone()
            .prop_map(|t| format!("<{t} class=\"content nav\" id='main'>")),
        tag.prop_map(|t| format!("<{t} href=\"")),
        Just("<a href=\"/x?y=1&amp;z=%2F..%2F\">link</a>".to_string()),
        Just("<a href=\"javascript:alert(1)\">j</a>".to_string()),
        Just("<a href=\"file:///etc/passwd\">f</a>".to_string()),
        Just("<a href=\"//other.example/\">o</a>".to_string()),
        Just("<a href=\"http://[::1\">v6</a>".to_string()),
        Just("<".to_string()),
        Just(">".to_string()),
        Just("</".to_string()),
        Just("/>".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("<!--".to_string()),
        Just("-->".to_string()),
        Just("<![CDATA[".to_string()),
        Just("<!DOCTYPE html>".to_string()),
        Just("&amp;".to_string()),
        Just("&#0;".to_string()),
        Just("&#x110000;".to_string()),
        Just("&nbsp".to_string()),
        Just("text 检索增强生成 RAG ".to_string()),
        Just("|".to_string()),
        Just("`".to_string()),
        Just("*".to_string()),
        Just("\n".to_string()),
        (1usize..5000).prop_map(|n| format!("<div data-x=\"{}\">", "a".repeat(n))),
        (1usize..400).prop_map(|n| "<div>".repeat(n)),
        (1usize..200).prop_map(|n| "<ul><li>".repeat(n)),
        (1usize..100).prop_map(|n| "<table><tr><td>".repeat(n)),
        "[a-zA-Z0-9 大型]{0,12}",
        any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        1 => any::<String>(),
        5 => proptest::collection::vec(piece, 0..80).prop_map(|p| p.concat()),
    ]
}

/// Bytes shaped like SSE / NDJSON streams, plus arbitrary bytes.
fn streamish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"event: error".to_vec()),
        Just(b": keep-alive".to_vec()),
        Just(b"id: 1".to_vec()),
        Just(b"retry: 10".to_vec()),
        Just(b"{\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}".to_vec()),
        Just(b"{\"message\":{\"content\":\"x\"},\"done\":false}".to_vec()),
        Just(b"[DONE]".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n\n".to_vec()),
        Just("\u{feff}".as_bytes().to_vec()),
        Just("检索".as_bytes().to_vec()),
        Just(vec![0xe6]),
        Just(vec![0xff, 0xfe]),
        Just(b" ".to_vec()),
        Just(b":".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..300),
        4 => proptest::collection::vec(piece, 0..60).prop_map(|p| p.concat()),
    ]
}

/// Bytes plus two chunkings of them (cut points as fractions of the length).
fn stream_and_cuts() -> impl Strategy<Value = (Vec<u8>, Vec<u16>, Vec<u16>)> {
    (
        streamish(),
        proptest::collection::vec(any::<u16>(), 0..12),
        proptest::collection::vec(any::<u16>(), 0..12),
    )
}

fn chunks<'a>(bytes: &'a [u8], cuts: &[u16]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| usize::from(*c) * bytes.len() / usize::from(u16::MAX))
        .collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for a in at {
        out.push(&bytes[last..a]);
        last = a;
    }
    out.push(&bytes[last..]);
    out
}

fn sse_events(parts: &[&[u8]]) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for c in parts {
        out.extend(p.push(c).expect("short lines"));
    }
    out.extend(p.finish());
    out
}

fn ndjson_lines(parts: &[&[u8]]) -> Vec<String> {
    let mut p = NdjsonParser::new();
    let mut out = Vec::new();
    for c in parts {
        out.extend(p.push(c).expect("short lines"));
    }
    out.extend(p.finish());
    out
}

/// A URL-ish string: hostile paths, schemes, hosts and lengths.
fn urlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("https://".to_string()),
        Just("http://".to_string()),
        Just("file://".to_string()),
        Just("h.example".to_string()),
        Just("127.0.0.1:8080".to_string()),
        Just("[::1]".to_string()),
        Just("con".to_string()),
        Just("NUL".to_string()),
        Just("com1".to_string()),
        Just("LPT9.txt".to_string()),
        Just("/".to_string()),
        Just("\\".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just("%2F".to_string()),
        Just("%2f..%2f".to_string()),
        Just("%2e%2e".to_string()),
        Just("%5C".to_string()),
        Just("%00".to_string()),
        Just("%".to_string()),
        Just("\0".to_string()),
        Just("?".to_string()),
        Just("#".to_string()),
        Just(":".to_string()),
        Just("-".to_string()),
        Just(" ".to_string()),
        Just("\n".to_string()),
        Just("大型语言模型".to_string()),
        Just("%E5%A4%A7".to_string()),
        Just("%E5%A4".to_string()),
        (1usize..12_000).prop_map(|n| "a".repeat(n)),
        (1usize..3_000).prop_map(|n| "长".repeat(n)),
        (1usize..2_000).prop_map(|n| "../".repeat(n)),
        "[a-zA-Z0-9._~-]{0,10}",
        any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        1 => any::<String>(),
        5 => proptest::collection::vec(piece, 0..24).prop_map(|p| p.concat()),
    ]
}

/// The checks every document path must pass, as an error message or `Ok`.
fn check_document_path(url: &str, rel: &str) -> Result<(), String> {
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.len() != 3 || parts[0] != naming::WEB_DIR {
        return Err(format!("{url:?} -> {rel:?}: not web/<host>/<file>"));
    }
    if rel.len() > 200 {
        return Err(format!("{url:?} -> {rel:?}: {} bytes", rel.len()));
    }
    for part in &parts {
        let bad = part.is_empty()
            || part.starts_with('.')
            || part.contains("..") && part.trim_matches(|c: char| c == '.').is_empty()
            || part
                .chars()
                .any(|c| c.is_control() || "\\:*?\"<>|".contains(c));
        if bad {
            return Err(format!("{url:?} -> {rel:?}: bad component {part:?}"));
        }
        let stem = part.split('.').next().unwrap_or("").to_ascii_lowercase();
        let reserved = matches!(stem.as_str(), "con" | "prn" | "aux" | "nul")
            || ((stem.starts_with("com") || stem.starts_with("lpt"))
                && stem.len() == 4
                && stem.as_bytes()[3].is_ascii_digit());
        if reserved {
            return Err(format!("{url:?} -> {rel:?}: reserved name {part:?}"));
        }
    }
    if !rel.ends_with(".md") {
        return Err(format!("{url:?} -> {rel:?}: not .md"));
    }
    // Joined to a corpus dir, it stays inside it lexically.
    let root = std::path::Path::new("/corpus");
    let joined = root.join(rel);
    let mut depth = 0i32;
    for c in joined
        .strip_prefix(root)
        .map_err(|e| e.to_string())?
        .components()
    {
        match c {
            std::path::Component::Normal(_) => depth += 1,
            other => return Err(format!("{url:?} -> {rel:?}: component {other:?}")),
        }
    }
    if depth != 3 {
        return Err(format!("{url:?} -> {rel:?}: depth {depth}"));
    }
    Ok(())
}

// ------------------------------------------------------------------ targets

#[test]
fn roadmap_parser_never_panics() {
    fuzz("roadmap_parser_never_panics", markdownish(), |md| {
        let map = roadmap::parse(&md);
        for r in &map.resources {
            prop_assert!(
                roadmap::is_http_url(&r.url),
                "non-http resource {:?}",
                r.url
            );
        }
        for (h, r) in &map.occurrences {
            prop_assert!(h.is_none_or(|h| h < map.headings.len()));
            prop_assert!(*r < map.resources.len());
        }
        // The rendered resource list parses back to the same resources.
        let list = roadmap::resource_list_markdown(&map);
        let again = roadmap::parse(&list);
        let urls = |m: &roadmap::Roadmap| {
            m.resources
                .iter()
                .map(|r| r.url.clone())
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(urls(&again), urls(&map), "list:\n{}", list);
        Ok(())
    });
}

#[test]
fn sse_parser_is_split_invariant() {
    fuzz(
        "sse_parser_is_split_invariant",
        stream_and_cuts(),
        |(bytes, a, b)| {
            let whole = sse_events(&[&bytes]);
            prop_assert_eq!(&sse_events(&chunks(&bytes, &a)), &whole);
            prop_assert_eq!(&sse_events(&chunks(&bytes, &b)), &whole);
            let single: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(&sse_events(&single), &whole);
            Ok(())
        },
    );
}

#[test]
fn ndjson_parser_is_split_invariant() {
    fuzz(
        "ndjson_parser_is_split_invariant",
        stream_and_cuts(),
        |(bytes, a, b)| {
            let whole = ndjson_lines(&[&bytes]);
            prop_assert_eq!(&ndjson_lines(&chunks(&bytes, &a)), &whole);
            prop_assert_eq!(&ndjson_lines(&chunks(&bytes, &b)), &whole);
            let single: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(&ndjson_lines(&single), &whole);
            for line in &whole {
                prop_assert!(!line.is_empty() && !line.contains(['\n', '\r']));
            }
            Ok(())
        },
    );
}

#[test]
fn html_extractor_never_panics() {
    let base = Url::parse("https://h.example/docs/page.html").unwrap();
    fuzz("html_extractor_never_panics", htmlish(), |html| {
        let ex = extract::html_to_markdown(&html, &base);
        let _ = extract::meaningful_chars(&ex.markdown);
        let _ = extract::has_scripts(&html);
        for link in extract::links(&html, &base) {
            prop_assert!(matches!(link.scheme(), "http" | "https"), "{}", link);
        }
        let _ = extract::text_document(&html);
        Ok(())
    });
}

#[test]
fn document_names_stay_inside_the_corpus() {
    fuzz("document_names_stay_inside_the_corpus", urlish(), |url| {
        let rel = naming::document_path(&url);
        check_document_path(&url, &rel).map_err(TestCaseError::fail)?;
        prop_assert_eq!(naming::document_path(&url), rel, "stable");
        Ok(())
    });
}

/// Front matter: fenced `key: value` blocks, quotes, lists, BOMs, CRLF.
fn frontmatterish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("---".to_string()),
        Just("--- ".to_string()),
        Just("\r\n".to_string()),
        Just("\n".to_string()),
        Just("\r".to_string()),
        Just("title: ".to_string()),
        Just("url: ".to_string()),
        Just("sections: ".to_string()),
        Just("status: ".to_string()),
        Just("null".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(",".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("\\u00".to_string()),
        Just("\\ud800".to_string()),
        Just(":".to_string()),
        Just("#".to_string()),
        Just("\u{feff}".to_string()),
        "[a-z检索 ]{0,8}",
        any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        1 => any::<String>(),
        4 => proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat()),
    ]
}

#[test]
fn front_matter_parser_never_panics() {
    fuzz(
        "front_matter_parser_never_panics",
        frontmatterish(),
        |text| {
            if let Ok((front, body)) = ragmap::corpus::parse(&text) {
                prop_assert!(text.ends_with(body));
                // What parsed renders and parses back to the same fields.
                let again = ragmap::corpus::render(&front, body);
                let (f2, _) = ragmap::corpus::parse(&again)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let norm = |o: &Option<String>| o.clone().filter(|s| !s.is_empty());
                prop_assert_eq!(norm(&f2.title), norm(&front.title));
                prop_assert_eq!(norm(&f2.url), norm(&front.url));
                prop_assert_eq!(f2.sections, front.sections);
            }
            Ok(())
        },
    );
}

// ------------------------------------------------------------------ regressions
// Inputs found by long runs; each once failed.

/// 5,000 nested `<div>`s overflowed the extraction thread's stack (htmd
/// recursion) and 20,000 made readability run for minutes.
#[test]
fn regression_deeply_nested_divs() {
    for n in [5_000, 12_000] {
        let base = Url::parse("https://h.example/").unwrap();
        let html = format!(
            "<html><body>{}deep text here</body></html>",
            "<div>".repeat(n)
        );
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let ex = extract::html_to_markdown(&html, &base);
                assert!(ex.markdown.contains("deep text here"), "{}", ex.markdown);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}

/// Flattening deep nesting met the parser's reparented `<a>` (adoption
/// agency) and panicked inside ego-tree.
#[test]
fn regression_deep_misnested_anchor() {
    let base = Url::parse("https://h.example/").unwrap();
    let html = format!(
        "{}<a class=\"content nav\" id='main'><article>&amp;</<a href=\"/x?y=1&amp;z=%2F..%2F\">link</a>",
        "<div>".repeat(197)
    );
    let _ = extract::html_to_markdown(&html, &base);
}

/// The file name `LPT9.txthttps-<hash>.md` is a Windows device name (the
/// part before the first dot is `LPT9`); only the host was guarded.
#[test]
fn regression_reserved_device_name_in_file_name() {
    let url = "https://https://LPT9.txthttps://";
    let rel = naming::document_path(url);
    check_document_path(url, &rel).unwrap();
    assert!(rel.starts_with("web/https/_LPT9.txthttps-"), "{rel}");
}

/// `<` in a roadmap URL came back from the rendered resource list as `%3C`:
/// the list no longer parsed back to the same resources.
#[test]
fn regression_roadmap_url_with_angle_bracket() {
    for md in ["- [](https://<12) ", "- [x](<https://h.example/a\\>b>)"] {
        let map = roadmap::parse(md);
        let again = roadmap::parse(&roadmap::resource_list_markdown(&map));
        let urls = |m: &roadmap::Roadmap| {
            m.resources
                .iter()
                .map(|r| r.url.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(urls(&again), urls(&map), "{md}");
        assert_eq!(map.resources.len(), 1, "{md}");
    }
}

/// The parser's adoption agency (misnested `<a>`) leaves a tree that
/// ego-tree's `detach` panics on while chrome is removed.
#[test]
fn regression_misnested_anchor_chrome_removal() {
    let base = Url::parse("https://h.example/").unwrap();
    let html = "<a class=\"content nav\" id='main'><div data-x=\"a\">&amp;<!----></<div></p><a href=\"/x?y=1&amp;z=%2F..%2F\">link</a>";
    let _ = extract::html_to_markdown(html, &base);
}
