//! Citations: which of a prompt's numbered sources an answer cites, and the
//! source lists shown after it (the command line's, the server's footer).

use crate::prompt::Source;

/// The longest inside of a bracket group that can be a citation
/// (`1, 2, 3, 4, 5, 6`).
const LONGEST_INSIDE: usize = 20;

/// The numbers of a bracket group's inside when it is a citation (`2`,
/// `1, 4`, `1、3`), else `None`.
fn group_numbers(inside: &str) -> Option<Vec<usize>> {
    if inside.is_empty() || inside.len() > LONGEST_INSIDE {
        return None;
    }
    inside
        .split([',', '，', ' ', '、'])
        .filter(|p| !p.is_empty())
        .map(|p| citation_number(p.trim()))
        .collect::<Option<Vec<usize>>>()
        .filter(|numbers| !numbers.is_empty())
}

/// Source numbers cited in an answer, like `[1]`, `[2][3]` or `[1, 4]`, in
/// order of first use. Brackets in code (`lines[0]`) and markdown reference
/// definitions (`[1]: https://…`) are not citations, nor are years and long
/// identifiers in brackets; sources count from 1.
pub fn cited_numbers(answer: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let prose = prose(answer);
    let mut rest = prose.as_str();
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        for n in group_numbers(&rest[..close]).unwrap_or_default() {
            if !out.contains(&n) {
                out.push(n);
            }
        }
        rest = &rest[close..];
    }
    out
}

/// A source number: one to three digits, from 1. Four or more are a year
/// (`[2024]`) or an identifier (`[label][1280697458]`), not a source: no
/// prompt holds a thousand sources.
fn citation_number(text: &str) -> Option<usize> {
    let digits = (1..=3).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| text.parse().ok())
        .flatten()
        .filter(|&n| n > 0)
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

/// Takes citations of no source out of an answer as it streams: a small
/// model writes `[7]` beside five sources, or a list of made-up references
/// `[1]` to `[20]`, and a reader would look for a source that is not there.
/// A bracket group is held back until it closes (or grows past
/// [`LONGEST_INSIDE`]); a citation keeps the numbers that are sources, and goes
/// when none is. Code (fenced or inline) and reference definitions
/// (`[7]: url` at a line's start) pass as written, as [`cited_numbers`]
/// does not count them either.
#[derive(Debug)]
pub struct CitationFilter {
    /// Sources are numbered 1 to `sources`.
    sources: usize,
    /// A bracket group not closed yet, from its `[`.
    held: String,
    /// A closed group at a line's start, waiting for the next character: a
    /// `:` makes it a reference definition.
    closed_at_line_start: Option<String>,
    at_line_start: bool,
    held_at_line_start: bool,
    /// Backticks opening the current line (a fence is three).
    line_ticks: usize,
    in_fence: bool,
    in_inline_code: bool,
    shown: String,
    /// How much of `shown` the caller has already had (and printed).
    emitted: usize,
    removed: Vec<usize>,
}

impl CitationFilter {
    pub fn new(sources: usize) -> CitationFilter {
        CitationFilter {
            sources,
            held: String::new(),
            closed_at_line_start: None,
            at_line_start: true,
            held_at_line_start: false,
            line_ticks: 0,
            in_fence: false,
            in_inline_code: false,
            shown: String::new(),
            emitted: 0,
            removed: Vec::new(),
        }
    }

    /// The next delta in; what may be shown of it so far out.
    pub fn push(&mut self, delta: &str) -> String {
        for c in delta.chars() {
            self.char(c);
        }
        self.emit(false)
    }

    /// What `shown` holds beyond what the caller has had; trailing spaces
    /// wait for what follows them, as a citation taken out takes its space.
    fn emit(&mut self, last: bool) -> String {
        let end = if last {
            self.shown.len()
        } else {
            self.shown.trim_end_matches(' ').len().max(self.emitted)
        };
        let new = self.shown[self.emitted..end].to_string();
        self.emitted = end;
        new
    }

    /// The end of the answer: whatever is still held, as written.
    pub fn finish(&mut self) -> String {
        if let Some(group) = self.closed_at_line_start.take() {
            self.resolve(group);
        }
        let held = std::mem::take(&mut self.held);
        self.shown.push_str(&held);
        self.emit(true)
    }

    /// Everything shown so far.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The numbers taken out, in order of removal (each once).
    pub fn removed(&self) -> &[usize] {
        &self.removed
    }

    fn char(&mut self, c: char) {
        if let Some(group) = self.closed_at_line_start.take() {
            if c == ':' {
                self.shown.push_str(&group);
            } else {
                self.resolve(group);
            }
        }
        if !self.held.is_empty() {
            match c {
                ']' => {
                    self.held.push(c);
                    let group = std::mem::take(&mut self.held);
                    if self.held_at_line_start {
                        self.closed_at_line_start = Some(group);
                    } else {
                        self.resolve(group);
                    }
                    return;
                }
                '[' | '\n' => {
                    let held = std::mem::take(&mut self.held);
                    self.shown.push_str(&held);
                }
                // The `[` and an inside already as long as a citation's can be.
                _ if self.held.len() > LONGEST_INSIDE => {
                    let held = std::mem::take(&mut self.held);
                    self.shown.push_str(&held);
                }
                _ => {
                    self.held.push(c);
                    return;
                }
            }
        }
        self.track_code(c);
        if c == '[' && !self.in_fence && !self.in_inline_code {
            self.held_at_line_start = self.at_line_start;
            self.held.push(c);
        } else {
            self.shown.push(c);
        }
        self.at_line_start = c == '\n' || (self.at_line_start && c == ' ');
    }

    /// Code state before `c` is shown: a line opening with three backticks
    /// toggles a fence; elsewhere a backtick toggles inline code, which
    /// ends with its line at the latest.
    fn track_code(&mut self, c: char) {
        match c {
            '`' => {
                if self.at_line_start || self.line_ticks > 0 {
                    self.line_ticks += 1;
                    if self.line_ticks == 3 {
                        self.in_fence = !self.in_fence;
                    }
                } else if !self.in_fence {
                    self.in_inline_code = !self.in_inline_code;
                }
            }
            '\n' => {
                self.line_ticks = 0;
                self.in_inline_code = false;
            }
            _ => {
                if (1..3).contains(&self.line_ticks) && !self.in_fence {
                    // One or two backticks opening a line: inline code.
                    self.in_inline_code = self.line_ticks == 1;
                }
                self.line_ticks = 0;
            }
        }
    }

    /// A closed group shown: as written unless it cites a number that is
    /// not a source; then with only those that are, or not at all.
    fn resolve(&mut self, group: String) {
        let inside = &group[1..group.len() - 1];
        let Some(numbers) = group_numbers(inside) else {
            self.shown.push_str(&group);
            return;
        };
        let (kept, gone): (Vec<usize>, Vec<usize>) =
            numbers.into_iter().partition(|&n| n <= self.sources);
        if gone.is_empty() {
            self.shown.push_str(&group);
            return;
        }
        for n in gone {
            if !self.removed.contains(&n) {
                self.removed.push(n);
            }
        }
        if !kept.is_empty() {
            let kept: Vec<String> = kept.iter().map(usize::to_string).collect();
            self.shown.push_str(&format!("[{}]", kept.join(", ")));
        } else if self.shown.len() > self.emitted && self.shown.ends_with(' ') {
            // "text [7]." reads "text." without it.
            self.shown.pop();
        }
    }
}

/// The numbers an answer cites, the sources they name in citation order,
/// and the numbers that match no source.
pub struct Citations<'p> {
    pub numbers: Vec<usize>,
    pub cited: Vec<&'p Source>,
    pub invalid: Vec<usize>,
}

impl<'p> Citations<'p> {
    pub fn of(answer: &str, sources: &'p [Source]) -> Citations<'p> {
        let numbers = cited_numbers(answer);
        let mut cited = Vec::new();
        let mut invalid = Vec::new();
        for &n in &numbers {
            match sources.iter().find(|s| s.number == n) {
                Some(s) => cited.push(s),
                None => invalid.push(n),
            }
        }
        Citations {
            numbers,
            cited,
            invalid,
        }
    }

    /// With the citations of no source that a [`CitationFilter`] took out of
    /// the answer counted back in (last): the model wrote them.
    pub fn with_removed(mut self, removed: &[usize]) -> Citations<'p> {
        for &n in removed {
            if !self.numbers.contains(&n) {
                self.numbers.push(n);
            }
            if !self.invalid.contains(&n) {
                self.invalid.push(n);
            }
        }
        self
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
        // Years and identifiers in brackets are not source numbers.
        assert_eq!(
            cited_numbers("in [2024], see [label][1280697458] and [0] [+3] [12]"),
            vec![12]
        );
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

    /// `deltas` through a filter for `sources` sources: what was printed,
    /// and the numbers taken out.
    fn filtered(sources: usize, deltas: &[&str]) -> (String, Vec<usize>) {
        let mut filter = CitationFilter::new(sources);
        let mut printed = String::new();
        for delta in deltas {
            printed.push_str(&filter.push(delta));
        }
        printed.push_str(&filter.finish());
        assert_eq!(printed, filter.shown());
        (printed, filter.removed().to_vec())
    }

    #[test]
    fn the_filter_takes_out_citations_of_no_source() {
        let (shown, removed) = filtered(
            3,
            &["LoRA is cheap [1]. It adds [7]. See [2, 9] and [3][8]."],
        );
        assert_eq!(shown, "LoRA is cheap [1]. It adds. See [2] and [3].");
        assert_eq!(removed, [7, 9, 8]);
        // Chinese separators, and a number taken out twice counts once.
        let (shown, removed) = filtered(2, &["见[1、5]，又见[5]。"]);
        assert_eq!(shown, "见[1]，又见。");
        assert_eq!(removed, [5]);
        // Not citations: left as written.
        let text = "In [2024] see [label] and [0], [+3], [1 2 3 4 5 6 7 8 9 10 11 12].";
        assert_eq!(filtered(2, &[text]), (text.to_string(), vec![]));
    }

    #[test]
    fn the_filter_holds_a_group_across_deltas_and_prints_each_character_once() {
        let (shown, removed) = filtered(
            2,
            &["a ", "[", "1", "]", " b [", "1", "2", "]", " c [2", "]"],
        );
        assert_eq!(shown, "a [1] b c [2]");
        assert_eq!(removed, [12]);
        let mut filter = CitationFilter::new(2);
        assert_eq!(filter.push("x [1"), "x");
        assert_eq!(filter.push("]"), " [1]");
        assert_eq!(filter.push(" and  "), " and");
        assert_eq!(filter.finish(), "  ");
    }

    #[test]
    fn the_filter_leaves_code_and_reference_definitions_as_written() {
        let text = "Use `xs[9]` here [1].\n```python\nfirst = lines[4]\n```\n[7]: https://example.com/a\n  [8]: https://example.com/b\n";
        let (shown, removed) = filtered(1, &[text]);
        assert_eq!(shown, text);
        assert!(removed.is_empty());
        // The same definition split across deltas.
        let (shown, _) = filtered(1, &["intro\n[7", "]", ": https://x\n"]);
        assert_eq!(shown, "intro\n[7]: https://x\n");
        // A line-start citation is still one.
        let (shown, removed) = filtered(1, &["[7] says so.\n[1][7]"]);
        assert_eq!(shown, " says so.\n[1]");
        assert_eq!(removed, [7]);
    }

    #[test]
    fn the_filter_prints_an_unclosed_bracket_as_written() {
        assert_eq!(filtered(1, &["tail [3"]), ("tail [3".to_string(), vec![]));
        assert_eq!(filtered(1, &["a [3\nb"]), ("a [3\nb".to_string(), vec![]));
        let long = format!("x [{}] y", "z".repeat(40));
        assert_eq!(filtered(1, &[&long]), (long.clone(), vec![]));
        assert_eq!(filtered(1, &["[[9]"]), ("[".to_string(), vec![9]));
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
