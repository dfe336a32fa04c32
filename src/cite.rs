//! Citations: which of a prompt's numbered sources an answer cites, and the
//! source lists shown after it (the command line's, the server's footer).

use crate::prompt::Source;

/// Source numbers cited in an answer, like `[1]`, `[2][3]` or `[1, 4]`, in
/// order of first use. Brackets in code (`lines[0]`) and markdown reference
/// definitions (`[1]: https://…`) are not citations; sources count from 1.
pub fn cited_numbers(answer: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let prose = prose(answer);
    let mut rest = prose.as_str();
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        let inside = &rest[..close];
        if inside.len() <= 20 && !inside.is_empty() {
            let numbers: Vec<Option<usize>> = inside
                .split([',', '，', ' ', '、'])
                .filter(|p| !p.is_empty())
                .map(|p| p.trim().parse().ok().filter(|&n| n > 0))
                .collect();
            if !numbers.is_empty() && numbers.iter().all(Option::is_some) {
                for n in numbers.into_iter().flatten() {
                    if !out.contains(&n) {
                        out.push(n);
                    }
                }
            }
        }
        rest = &rest[close..];
    }
    out
}

/// The answer's text outside code, with the brackets of links put back (a
/// `[1]` that a reference definition turned into a link is still a citation).
fn prose(answer: &str) -> String {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd};
    let mut prose = String::with_capacity(answer.len());
    let mut in_code = false;
    for event in Parser::new(answer) {
        match event {
            Event::Start(Tag::CodeBlock(_)) => in_code = true,
            Event::End(TagEnd::CodeBlock) => in_code = false,
            Event::Text(text) if !in_code => prose.push_str(&text),
            Event::Start(Tag::Link { .. }) => prose.push('['),
            Event::End(TagEnd::Link) => prose.push(']'),
            Event::Code(_) | Event::SoftBreak | Event::HardBreak | Event::End(_) => prose.push(' '),
            _ => {}
        }
    }
    prose
}

/// The sources an answer cites, in citation order, and the numbers it cites
/// that match no source.
pub struct Citations<'p> {
    pub cited: Vec<&'p Source>,
    pub invalid: Vec<usize>,
}

impl<'p> Citations<'p> {
    pub fn of(answer: &str, sources: &'p [Source]) -> Citations<'p> {
        let mut cited = Vec::new();
        let mut invalid = Vec::new();
        for n in cited_numbers(answer) {
            match sources.iter().find(|s| s.number == n) {
                Some(s) => cited.push(s),
                None => invalid.push(n),
            }
        }
        Citations { cited, invalid }
    }

    /// What a source list after the answer shows: the cited sources, or,
    /// when the answer cites none, every source it was given.
    pub fn listed(&self, sources: &'p [Source]) -> Vec<&'p Source> {
        if self.cited.is_empty() {
            sources.iter().collect()
        } else {
            self.cited.clone()
        }
    }
}

/// One line of a source list: the numbers of every source that would print
/// the same (title, location and heading), with the first of them. Two
/// passages of one section make one line `[1, 2] title — location`.
pub struct SourceLine<'s> {
    pub numbers: Vec<usize>,
    pub source: &'s Source,
}

impl SourceLine<'_> {
    /// `[1]` or `[1, 2]`.
    pub fn label(&self) -> String {
        let numbers: Vec<String> = self.numbers.iter().map(|n| n.to_string()).collect();
        format!("[{}]", numbers.join(", "))
    }
}

/// `sources` with identical lines collapsed, in order of first appearance.
/// `with_heading`: whether the heading is part of the line (lists that print
/// only title and location collapse by those).
pub fn source_lines<'s>(
    sources: impl IntoIterator<Item = &'s Source>,
    with_heading: bool,
) -> Vec<SourceLine<'s>> {
    let mut lines: Vec<SourceLine<'s>> = Vec::new();
    for s in sources {
        let same = |l: &&mut SourceLine<'s>| {
            l.source.title == s.title
                && l.source.location == s.location
                && (!with_heading || l.source.heading == s.heading)
        };
        match lines.iter_mut().find(|l| same(l)) {
            Some(line) if !line.numbers.contains(&s.number) => line.numbers.push(s.number),
            Some(_) => {}
            None => lines.push(SourceLine {
                numbers: vec![s.number],
                source: s,
            }),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(number: usize, location: &str, heading: &str) -> Source {
        Source {
            number,
            title: "T".into(),
            location: location.into(),
            heading: heading.into(),
            text: format!("passage {number}"),
            chunk_id: number as i64,
            path: String::new(),
        }
    }

    #[test]
    fn citations_are_parsed_in_order() {
        assert_eq!(
            cited_numbers("a [2] b [1][3], c [2, 4] d [x] [10]"),
            vec![2, 1, 3, 4, 10]
        );
        assert_eq!(cited_numbers("no cites [see above]"), Vec::<usize>::new());
        assert_eq!(cited_numbers("引用[2]，又见[1、3]。"), vec![2, 1, 3]);
    }

    #[test]
    fn brackets_in_code_and_reference_definitions_are_not_citations() {
        let answer = "Split it [2]: `text.splitlines()[5]`.\n\n```python\nfirst = lines[4]\n```\n\nSee [1] and x[0].\n\n[1]: https://example.com/a\n[7]: https://example.com/b\n";
        assert_eq!(cited_numbers(answer), vec![2, 1]);
    }

    #[test]
    fn citations_name_their_sources_and_the_numbers_that_match_none() {
        let sources = [source(1, "a", "H"), source(2, "b", "H")];
        let c = Citations::of("x [2] y [7] z [2]", &sources);
        assert_eq!(c.cited.iter().map(|s| s.number).collect::<Vec<_>>(), [2]);
        assert_eq!(c.invalid, [7]);
        assert_eq!(c.listed(&sources).len(), 1);
        // Citing nothing lists everything the answer was given.
        assert_eq!(
            Citations::of("no cites", &sources).listed(&sources).len(),
            2
        );
    }

    #[test]
    fn identical_source_lines_collapse_in_first_order() {
        let sources = [
            source(1, "a", "H1"),
            source(2, "b", "H"),
            source(3, "a", "H1"),
            source(4, "a", "H2"),
        ];
        let lines = source_lines(&sources, true);
        let labels: Vec<String> = lines.iter().map(SourceLine::label).collect();
        assert_eq!(labels, ["[1, 3]", "[2]", "[4]"]);
        let lines = source_lines(&sources, false);
        let labels: Vec<String> = lines.iter().map(SourceLine::label).collect();
        assert_eq!(labels, ["[1, 3, 4]", "[2]"]);
    }
}
