//! Property tests ("fuzzing" that runs in CI): the parsers that read user files
//! and network data never panic, and what they render they read back. (The
//! front-matter parser's own never-panics target is in fuzz_network.rs.)
//! Longer runs: PROPTEST_CASES=200000 cargo test --release --test fuzz_parsers

use proptest::prelude::*;
use ragmap::corpus::{self, FrontMatter};

proptest! {
    #[test]
    fn front_matter_round_trips(
        title in proptest::option::of(any::<String>()),
        url in proptest::option::of("[ -~]{0,40}"),
        sections in proptest::collection::vec(any::<String>(), 0..3),
        body in any::<String>(),
    ) {
        let front = FrontMatter { title, url, sections, ..Default::default() };
        let text = corpus::render(&front, &body);
        let (parsed, parsed_body) = corpus::parse(&text).unwrap();
        // render/parse normalise empty strings to absent values only.
        let expect_title = front.title.clone().filter(|t| !t.is_empty());
        prop_assert_eq!(parsed.title.filter(|t| !t.is_empty()), expect_title);
        prop_assert_eq!(parsed.sections, front.sections);
        prop_assert!(parsed_body.starts_with(body.trim_end_matches('\n')) || body.is_empty());
    }

    #[test]
    fn segmentation_never_panics(text in any::<String>()) {
        let _ = ragmap::index::terms::terms(&text);
        let _ = ragmap::index::terms::match_expr(&ragmap::index::terms::query_terms(&text));
    }

    #[test]
    fn prompt_citations_never_panic(text in any::<String>()) {
        let _ = ragmap::cite::cited_numbers(&text);
        let _ = ragmap::prompt::detect_language(&text);
    }
}
