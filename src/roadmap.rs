//! The roadmap: a markdown article whose links are the resources to crawl.
//!
//! [`parse`] walks the markdown with pulldown-cmark and returns every http(s)
//! link with the heading path it sits under. [`resource_list_markdown`] renders
//! just those headings and links (no prose) — the shipped `corpus/roadmap.md`,
//! which parses back to the same resources.

use pulldown_cmark::{Event, HeadingLevel, LinkType, Options, Parser, Tag, TagEnd};

use crate::corpus::{self, FrontMatter, PATH_SEPARATOR};

/// One linked resource of the roadmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The link destination exactly as written (Chinese characters, spaces and
    /// percent-escapes are kept; only markdown escapes are resolved).
    pub url: String,
    /// The link text of its first appearance (or, for a bare URL, the label
    /// written next to it).
    pub title: String,
    /// Every heading path that links it, in order of appearance, without duplicates.
    pub sections: Vec<String>,
}

/// One heading below the article title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heading {
    /// 1–6, as written.
    pub level: u8,
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roadmap {
    /// The article's title: its only level-1 heading, when it opens the document.
    pub title: Option<String>,
    /// Every heading except the title, in document order.
    pub headings: Vec<Heading>,
    /// Resources in order of first appearance, one per URL.
    pub resources: Vec<Resource>,
    /// Where each link appeared: (index into `headings` of the enclosing heading, or
    /// `None` before the first one; index into `resources`). Keeps the document
    /// order so that the resource list can be rendered faithfully.
    pub occurrences: Vec<(Option<usize>, usize)>,
}

fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS
}

/// Parses a roadmap article. Never fails: anything that is not an http(s) link
/// is ignored.
pub fn parse(markdown: &str) -> Roadmap {
    let events: Vec<Event> = Parser::new_ext(markdown, options()).collect();
    let mut reader = Reader {
        title_is_first_h1: title_is_first_h1(&events),
        ..Reader::default()
    };
    for event in events {
        reader.event(event);
    }
    reader.map
}

/// The article has a title: a single level-1 heading, before any other heading.
fn title_is_first_h1(events: &[Event]) -> bool {
    let h1_count = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Start(Tag::Heading {
                    level: HeadingLevel::H1,
                    ..
                })
            )
        })
        .count();
    let first_heading_is_h1 = events
        .iter()
        .find_map(|e| match e {
            Event::Start(Tag::Heading { level, .. }) => Some(*level == HeadingLevel::H1),
            _ => None,
        })
        .unwrap_or(false);
    h1_count == 1 && first_heading_is_h1
}

/// The link being read.
struct OpenLink {
    url: String,
    text: String,
    in_image: usize,
}

/// A walk over the article's events, building the [`Roadmap`].
#[derive(Default)]
struct Reader {
    map: Roadmap,
    title_is_first_h1: bool,
    by_url: std::collections::HashMap<String, usize>,
    /// (level, index into map.headings) of the current section path.
    stack: Vec<(u8, usize)>,
    /// The level of the heading being read, if any.
    in_heading: Option<u8>,
    heading_text: String,
    link_depth_in_heading: usize,
    link: Option<OpenLink>,
    image_depth: usize,
    /// Text of the current leaf block before the link (a label such as `课程：`).
    block_text: String,
    /// The last link-free paragraph when it is a numbered label (`1）Some course`); it names
    /// the bare-URL links of the paragraphs that follow, up to the next prose or heading.
    numbered_label: Option<String>,
    paragraph_had_link: bool,
}

impl Reader {
    fn event(&mut self, event: Event) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                self.in_heading = Some(level as u8);
                self.heading_text.clear();
                self.link_depth_in_heading = 0;
            }
            Event::End(TagEnd::Heading(_)) => self.end_heading(),
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                ..
            }) => self.start_link(link_type, &dest_url),
            Event::End(TagEnd::Link) => self.end_link(),
            Event::Start(Tag::Image { .. }) => {
                self.image_depth += 1;
                if let Some(l) = self.link.as_mut() {
                    l.in_image += 1;
                }
            }
            Event::End(TagEnd::Image) => {
                self.image_depth = self.image_depth.saturating_sub(1);
                if let Some(l) = self.link.as_mut() {
                    l.in_image = l.in_image.saturating_sub(1);
                }
            }
            Event::Text(t) | Event::Code(t) => self.text(&t),
            Event::SoftBreak | Event::HardBreak => self.line_break(),
            Event::Start(Tag::Paragraph)
            | Event::Start(Tag::Item)
            | Event::Start(Tag::TableCell) => {
                self.block_text.clear();
                self.paragraph_had_link = false;
            }
            Event::End(TagEnd::Paragraph) => {
                if !self.paragraph_had_link {
                    self.numbered_label = strip_numbering(&normalise_space(&self.block_text))
                        .filter(|t| t.chars().count() <= 80);
                }
                self.block_text.clear();
            }
            Event::End(TagEnd::Item) | Event::End(TagEnd::TableCell) => self.block_text.clear(),
            _ => {}
        }
    }

    /// The article's title, or a heading that opens a section.
    fn end_heading(&mut self) {
        let level = self.in_heading.take().unwrap_or(1);
        let text = normalise_space(&self.heading_text);
        if level == 1 && self.title_is_first_h1 && self.map.title.is_none() {
            self.map.title = Some(text);
            self.stack.clear();
        } else {
            while self.stack.last().is_some_and(|(l, _)| *l >= level) {
                self.stack.pop();
            }
            self.map.headings.push(Heading { level, text });
            self.stack.push((level, self.map.headings.len() - 1));
        }
        self.numbered_label = None;
        self.block_text.clear();
    }

    fn start_link(&mut self, link_type: LinkType, dest_url: &str) {
        if self.in_heading.is_some() {
            // Links inside headings (e.g. "more questions") are not resources,
            // and their text is not part of the heading's name.
            self.link_depth_in_heading += 1;
            return;
        }
        let url = dest_url.trim().to_string();
        let wanted = matches!(
            link_type,
            LinkType::Inline
                | LinkType::Reference
                | LinkType::ReferenceUnknown
                | LinkType::Collapsed
                | LinkType::CollapsedUnknown
                | LinkType::Shortcut
                | LinkType::ShortcutUnknown
                | LinkType::Autolink
        ) && is_http_url(&url)
            && self.image_depth == 0;
        self.link = wanted.then(|| OpenLink {
            url,
            text: String::new(),
            in_image: 0,
        });
    }

    /// A finished link: a resource (new, or one more section of a known one)
    /// and an occurrence.
    fn end_link(&mut self) {
        if self.in_heading.is_some() {
            self.link_depth_in_heading = self.link_depth_in_heading.saturating_sub(1);
            return;
        }
        let Some(open) = self.link.take() else {
            return;
        };
        self.paragraph_had_link = true;
        let title = self.link_title(&open);
        let section = self
            .stack
            .iter()
            .map(|(_, i)| self.map.headings[*i].text.as_str())
            .collect::<Vec<_>>()
            .join(PATH_SEPARATOR);
        let idx = match self.by_url.get(&open.url) {
            Some(&i) => i,
            None => {
                self.map.resources.push(Resource {
                    url: open.url.clone(),
                    title,
                    sections: Vec::new(),
                });
                self.by_url.insert(open.url, self.map.resources.len() - 1);
                self.map.resources.len() - 1
            }
        };
        let res = &mut self.map.resources[idx];
        if !section.is_empty() && !res.sections.contains(&section) {
            res.sections.push(section);
        }
        self.map
            .occurrences
            .push((self.stack.last().map(|(_, i)| *i), idx));
        // Text after the link belongs to a new label.
        self.block_text.clear();
    }

    /// The link's text; for a bare URL, the label beside it or above it;
    /// failing both, the URL.
    fn link_title(&self, open: &OpenLink) -> String {
        let text = normalise_space(&open.text);
        let title = if looks_like_url(&text) || text.is_empty() {
            fallback_title(&self.block_text, self.numbered_label.as_deref()).unwrap_or(text)
        } else {
            text
        };
        if title.is_empty() {
            // Shown as a title, so spaced like every other title.
            normalise_space(&open.url)
        } else {
            title
        }
    }

    fn text(&mut self, t: &str) {
        if self.in_heading.is_some() {
            if self.link_depth_in_heading == 0 && self.image_depth == 0 {
                self.heading_text.push_str(t);
            }
        } else if let Some(l) = self.link.as_mut() {
            if l.in_image == 0 || l.text.is_empty() {
                l.text.push_str(t);
            }
        } else if self.image_depth == 0 {
            self.block_text.push_str(t);
        }
    }

    fn line_break(&mut self) {
        if self.in_heading.is_some() {
            self.heading_text.push(' ');
        } else if let Some(l) = self.link.as_mut() {
            l.text.push(' ');
        } else {
            // A line break separates labels: `课程：[url](url)` then `视频：[url](url)`.
            self.block_text.push(' ');
        }
    }
}

fn normalise_space(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `http://` or `https://`, case-insensitively, with something after it.
pub fn is_http_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    (lower.starts_with("http://") && url.len() > 7)
        || (lower.starts_with("https://") && url.len() > 8)
}

fn looks_like_url(text: &str) -> bool {
    is_http_url(text) || text.starts_with("www.")
}

/// For a link whose text is its own URL, the label written next to it: the text
/// before it on the same line (`课程：`) and/or the numbered paragraph naming
/// the resource (`1）Some course`).
fn fallback_title(before: &str, numbered: Option<&str>) -> Option<String> {
    let label = normalise_space(before)
        .trim_end_matches([':', '：', '-', '—', ' '])
        .trim()
        .to_string();
    let label = if label.chars().count() > 40 || looks_like_url(&label) {
        String::new()
    } else {
        label
    };
    match (numbered.map(str::to_string), label.is_empty()) {
        (Some(n), true) => Some(n),
        (Some(n), false) => Some(format!("{n} · {label}")),
        (None, false) => Some(label),
        (None, true) => None,
    }
}

/// `1）Name`, `12) Name`, `3. Name`, `4、Name` → `Name`.
fn strip_numbering(text: &str) -> Option<String> {
    let t = text.trim();
    let digits = t.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 3 {
        return None;
    }
    let rest = &t[digits..];
    let rest = ["）", ")", ".", "、", "．"]
        .iter()
        .find_map(|p| rest.strip_prefix(p))?;
    let rest = rest.trim();
    (!rest.is_empty()).then(|| rest.to_string())
}

/// Renders the roadmap's headings and links, nothing else: each heading that
/// has links under it (and its ancestors), each link as a list item. Parsing
/// the result gives back the same resources, titles and sections.
pub fn resource_list_markdown(map: &Roadmap) -> String {
    let mut out = String::new();
    if let Some(t) = &map.title {
        out.push_str("# ");
        out.push_str(&escape_inline(t));
        out.push_str("\n\n");
    }
    // Which headings must be written: those with a link directly under them, and their ancestors.
    let mut needed = vec![false; map.headings.len()];
    for (h, _) in &map.occurrences {
        if let Some(h) = *h {
            let mut level = map.headings[h].level + 1;
            for i in (0..=h).rev() {
                if map.headings[i].level < level {
                    needed[i] = true;
                    level = map.headings[i].level;
                }
            }
        }
    }
    let mut occ = map.occurrences.iter().peekable();
    let mut write_links = |out: &mut String, heading: Option<usize>| {
        let mut any = false;
        while let Some((_, r)) = occ.next_if(|(h, _)| *h == heading) {
            let res = &map.resources[*r];
            out.push_str("- [");
            out.push_str(&escape_inline(&res.title));
            out.push_str("](");
            out.push_str(&link_destination(&res.url));
            out.push_str(")\n");
            any = true;
        }
        if any {
            out.push('\n');
        }
    };
    write_links(&mut out, None);
    for (i, h) in map.headings.iter().enumerate() {
        if !needed[i] {
            continue;
        }
        for _ in 0..h.level {
            out.push('#');
        }
        out.push(' ');
        out.push_str(&escape_inline(&h.text));
        out.push_str("\n\n");
        write_links(&mut out, Some(i));
    }
    out
}

/// The shipped `corpus/roadmap.md`: front matter (title, every section path)
/// plus [`resource_list_markdown`].
pub fn build_resource_list(markdown: &str) -> String {
    let map = parse(markdown);
    // Every section path that holds links, in document order.
    let mut sections: Vec<String> = Vec::new();
    for (h, _) in &map.occurrences {
        let Some(h) = *h else { continue };
        let path = section_path(&map.headings, h);
        if !sections.contains(&path) {
            sections.push(path);
        }
    }
    let front = FrontMatter {
        title: map.title.clone(),
        sections,
        ..Default::default()
    };
    corpus::render(&front, &resource_list_markdown(&map))
}

/// The path of heading `i`: its ancestors and itself, joined.
fn section_path(headings: &[Heading], i: usize) -> String {
    let mut parts = vec![headings[i].text.as_str()];
    let mut level = headings[i].level;
    for h in headings[..i].iter().rev() {
        if h.level < level {
            parts.push(&h.text);
            level = h.level;
        }
    }
    parts.reverse();
    parts.join(PATH_SEPARATOR)
}

/// Backslash-escapes what markdown would otherwise read as syntax. Every ASCII
/// punctuation character may be escaped in CommonMark, so over-escaping is safe.
fn escape_inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '`'
                | '*'
                | '_'
                | '['
                | ']'
                | '<'
                | '>'
                | '#'
                | '!'
                | '|'
                | '~'
                | '&'
                | '$'
                | '('
                | ')'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    // A leading list/heading marker or trailing `#` run would change the block.
    if out.starts_with(['-', '+', '=']) || out.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        // Digits followed by `.`/`)` start an ordered list only at line start; `\` is
        // not an escape before a digit, so protect via an HTML-free zero-effect trick:
        // escape the first punctuation after the digits instead.
        if let Some(pos) = out.find(['.', ')', '-', '+', '=']) {
            if out[..pos].chars().all(|c| c.is_ascii_digit()) {
                out.insert(pos, '\\');
            }
        }
    }
    out
}

/// A link destination in `<…>` form so spaces and parentheses survive; the few
/// characters that form cannot hold are escaped.
fn link_destination(url: &str) -> String {
    let mut out = String::from("<");
    for c in url.chars() {
        match c {
            // Backslash escapes, not %3C/%3E: the URL must parse back unchanged.
            '<' => out.push_str("\\<"),
            '>' => out.push_str("\\>"),
            '\n' | '\r' => {}
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('>');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_follow_headings_and_skip_the_title() {
        let md = "# Title\n\n## A\n\n### B\n\n- [one](https://x.example/1)\n\n## C\n\n[two](http://y.example/2)\n";
        let m = parse(md);
        assert_eq!(m.title.as_deref(), Some("Title"));
        assert_eq!(m.resources.len(), 2);
        assert_eq!(m.resources[0].sections, vec!["A › B".to_string()]);
        assert_eq!(m.resources[1].sections, vec!["C".to_string()]);
    }

    #[test]
    fn setext_headings_count() {
        let md = "# T\n\nIntro\n--\n\n[x](https://a.example/)\n";
        let m = parse(md);
        assert_eq!(m.resources[0].sections, vec!["Intro".to_string()]);
    }

    #[test]
    fn awkward_urls_survive_intact() {
        let md = "## S\n\n[zh](https://zh.wikipedia.org/wiki/大型语言模型)\n[pct](https://zh.wikipedia.org/wiki/%E5%A4%9A)\n\
                  [paren](https://en.wikipedia.org/wiki/Rust_(language))\n[sp](<https://h.example/a b/c d.md>)\n\
                  [q](https://link.zhihu.com/?target=https%3A//gemini.google.com/)\n";
        let urls: Vec<String> = parse(md).resources.into_iter().map(|r| r.url).collect();
        assert_eq!(
            urls,
            vec![
                "https://zh.wikipedia.org/wiki/大型语言模型",
                "https://zh.wikipedia.org/wiki/%E5%A4%9A",
                "https://en.wikipedia.org/wiki/Rust_(language)",
                "https://h.example/a b/c d.md",
                "https://link.zhihu.com/?target=https%3A//gemini.google.com/",
            ]
        );
    }

    #[test]
    fn duplicates_keep_first_title_and_all_sections() {
        let md = "## A\n\n[first](https://x.example/)\n\n## B\n\n[second](https://x.example/)\n\n## A2\n\n[again](https://x.example/)\n";
        let m = parse(md);
        assert_eq!(m.resources.len(), 1);
        assert_eq!(m.resources[0].title, "first");
        assert_eq!(m.resources[0].sections, vec!["A", "B", "A2"]);
    }

    #[test]
    fn skips_images_other_schemes_and_links_in_headings() {
        let md = "## Q[(more)](https://q.example/)\n\n![img](https://i.example/a.png)\n<img src=\"https://i.example/b.png\">\n\
                  [mail](mailto:a@b.c) [rel](/local) [ftp](ftp://f.example/)\n[ok](https://ok.example/)\n";
        let m = parse(md);
        assert_eq!(m.headings[0].text, "Q");
        assert_eq!(m.resources.len(), 1);
        assert_eq!(m.resources[0].url, "https://ok.example/");
        assert_eq!(m.resources[0].sections, vec!["Q"]);
    }

    #[test]
    fn bare_url_links_take_their_label() {
        let md = "## R\n\n1）Some Course\n\n课程：[https://c.example/](https://c.example/)\n\n\
                  视频：[https://v.example/](https://v.example/)\n\n\
                  2）Other\n\n[https://o.example/](https://o.example/)\n\nSome prose.\n\n[https://n.example/](https://n.example/)\n";
        let m = parse(md);
        let titles: Vec<&str> = m.resources.iter().map(|r| r.title.as_str()).collect();
        assert_eq!(
            titles,
            vec![
                "Some Course · 课程",
                "Some Course · 视频",
                "Other",
                "https://n.example/"
            ]
        );
    }

    #[test]
    fn resource_list_round_trips_awkward_text() {
        let md = "# T *x*\n\n## 1. A_b [c] <d> #e\n\n- [t*i_t`l`e] \\ (x)](https://h.example/a b(1)?q=<>&r=\\)\n\
                  - [-lead](https://h.example/2)\n\n### 2) sub\n\n- [3. num](https://h.example/3)\n";
        let a = parse(md);
        let out = resource_list_markdown(&a);
        let b = parse(&out);
        assert_eq!(a.title, b.title);
        assert_eq!(a.resources, b.resources, "{out}");
    }

    proptest::proptest! {
        #[test]
        fn resource_list_round_trips_any_text(
            heads in proptest::collection::vec("[a-zA-Z0-9 #*_`\\[\\]()<>!|~&$:.+=-阶段学习资源（）›]{1,24}", 1..4),
            titles in proptest::collection::vec("[a-zA-Z0-9 #*_`\\[\\]()<>!|~&$:.+=-课程视频（）]{1,24}", 1..4),
            paths in proptest::collection::vec("[a-zA-Z0-9 ()%._~-中文]{0,12}", 1..4),
        ) {
            let mut md = String::from("# Title\n\n");
            for (i, h) in heads.iter().enumerate() {
                md.push_str(&format!("## {}\n\n", escape_inline(h)));
                for (j, t) in titles.iter().enumerate() {
                    let p = &paths[(i + j) % paths.len()];
                    md.push_str(&format!("- [{}]({})\n", escape_inline(t), link_destination(&format!("https://h.example/{p}/{i}-{j}"))));
                }
                md.push('\n');
            }
            let a = parse(&md);
            // The escaped text reads back literally.
            let mut k = 0;
            for h in &heads {
                for t in &titles {
                    let r = &a.resources[k];
                    k += 1;
                    let (h, t) = (normalise_space(h), normalise_space(t));
                    if !t.is_empty() && !looks_like_url(&t) {
                        proptest::prop_assert_eq!(&r.title, &t);
                    }
                    if !h.is_empty() {
                        proptest::prop_assert_eq!(&r.sections, &vec![h.clone()]);
                    }
                }
            }
            let b = parse(&resource_list_markdown(&a));
            proptest::prop_assert_eq!(&a.resources, &b.resources);
            proptest::prop_assert!(!a.resources.is_empty());
        }
    }

    #[test]
    fn escape_makes_text_literal() {
        for s in [
            "1. x", "2) y", "- z", "+ w", "= v", "a|b", "# h", "**b**", "100", "1.5 x",
        ] {
            let md = format!(
                "## {}\n\n- [{}](https://e.example/)\n",
                escape_inline(s),
                escape_inline(s)
            );
            let m = parse(&md);
            assert_eq!(m.headings[0].text, s, "{md}");
            assert_eq!(m.resources[0].title, s, "{md}");
        }
    }
}
