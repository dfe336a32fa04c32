//! The roadmap parser on the real seed article (read from ../shared at run time)
//! and the shipped corpus/roadmap.md.

mod common;

use common::shared;
use ragmap::corpus;
use ragmap::roadmap::{self, build_resource_list, parse};

fn seed() -> Option<String> {
    Some(std::fs::read_to_string(shared("seed/roadmap.md")?).unwrap())
}

#[test]
fn seed_resources_have_sections_and_intact_urls() {
    let Some(text) = seed() else { return };
    let map = parse(&text);
    assert!(
        map.title.as_deref().is_some_and(|t| t.contains("AI大模型")),
        "{:?}",
        map.title
    );
    assert!(map.resources.len() > 150, "{}", map.resources.len());
    // Every markdown link to http(s) outside headings is found: count `](http` occurrences
    // whose line is not a heading, then compare with distinct URLs seen.
    for r in &map.resources {
        assert!(roadmap::is_http_url(&r.url), "{}", r.url);
        assert!(!r.title.is_empty());
        for s in &r.sections {
            assert!(
                !s.contains(map.title.as_deref().unwrap()),
                "title must not be in paths: {s}"
            );
        }
        // URLs appear verbatim in the seed.
        assert!(text.contains(&r.url), "URL changed: {}", r.url);
    }
    let zh = map
        .resources
        .iter()
        .find(|r| r.url.contains("大型语言模型"))
        .expect("Chinese URL kept");
    assert!(
        zh.sections.len() >= 2,
        "linked from several sections: {:?}",
        zh.sections
    );
    let rag = map
        .resources
        .iter()
        .filter(|r| {
            r.sections
                .iter()
                .any(|s| s.contains("阶段2：RAG应用开发工程 › RAG（15天） › 学习资源"))
        })
        .count();
    assert!(rag > 0);
    // Links inside headings (the interview-question bank) are not resources of those sections.
    assert!(map.headings.iter().all(|h| !h.text.contains("更多面试题")));
    // Images are not resources.
    assert!(map.resources.iter().all(|r| !r.url.ends_with(".webp")));
}

#[test]
fn resource_list_parses_back_to_the_same_resources() {
    let Some(text) = seed() else { return };
    let list = build_resource_list(&text);
    let (front, body) = corpus::parse(&list).unwrap();
    let a = parse(&text);
    let b = parse(body);
    assert_eq!(a.title, b.title);
    assert_eq!(a.resources, b.resources);
    assert_eq!(front.title, a.title);
    assert!(!front.sections.is_empty());
    // Nothing but headings, link items and blank lines.
    for line in body.lines() {
        assert!(
            line.is_empty() || line.starts_with('#') || line.starts_with("- ["),
            "unexpected line {line:?}"
        );
    }
}

#[test]
fn shipped_corpus_roadmap_is_current() {
    let Some(text) = seed() else { return };
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/roadmap.md")).unwrap();
    assert_eq!(
        shipped,
        build_resource_list(&text),
        "regenerate with `ragmap roadmap ../shared/seed/roadmap.md`"
    );
}

#[test]
fn mirror_roadmap_keeps_every_seed_section() {
    let Some(mirror) = shared("webcorpus/roadmap.md") else {
        return;
    };
    let Some(seed) = seed() else { return };
    let mirror = std::fs::read_to_string(mirror).unwrap();
    let (m, s) = (parse(&mirror), parse(&seed));
    let secs = |x: &roadmap::Roadmap| {
        let mut v: Vec<String> = x
            .resources
            .iter()
            .flat_map(|r| r.sections.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    // The mirror adds fault links (possibly in new sections) but loses none.
    let mirror_secs = secs(&m);
    for sec in secs(&s) {
        assert!(mirror_secs.contains(&sec), "missing in mirror: {sec}");
    }
}
