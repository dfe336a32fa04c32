//! Page → markdown. HTML pages lose their chrome (navigation, sidebars,
//! cookie banners, footers, scripts) and keep headings, lists, code blocks,
//! tables and links; PDFs become plain text.
//!
//! Three HTML strategies exist so they can be compared on real pages
//! (`tests/extract.rs` measures them); [`html_to_markdown`] uses the winner,
//! [`Method::Structural`]: drop chrome by tag, ARIA role and class/id words,
//! pick the content container (`article`, `main`, `.markdown-body`, …), then
//! convert it with htmd. Readability (dom_smoothie) is the fallback when no
//! container holds the text.

use std::collections::HashSet;

use htmd::element_handler::{HandlerResult, Handlers};
use htmd::{Element, HtmlToMarkdown};
use scraper::{ElementRef, Html, Node, Selector};
use url::Url;

use crate::lang::is_cjk_text;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// dom_smoothie (readability.js port) on the raw page, then htmd.
    Readability,
    /// Chrome removal + content container choice, then htmd.
    Structural,
    /// Chrome removal, then readability on what is left, then htmd.
    Combined,
}

#[derive(Debug, Clone, Default)]
pub struct Extracted {
    pub title: Option<String>,
    pub markdown: String,
}

/// Fewer letters/digits than this after extraction: nothing worth storing.
pub const MIN_MEANINGFUL_CHARS: usize = 40;

/// The extraction used by the crawler.
pub fn html_to_markdown(html: &str, base: &Url) -> Extracted {
    let structural = extract(Method::Structural, html, base);
    if meaningful_chars(&structural.markdown) >= MIN_MEANINGFUL_CHARS {
        return structural;
    }
    // No recognisable container or an odd layout: let readability try.
    let readable = extract(Method::Readability, html, base);
    if meaningful_chars(&readable.markdown) > meaningful_chars(&structural.markdown) {
        Extracted {
            title: structural.title.or(readable.title),
            markdown: readable.markdown,
        }
    } else {
        structural
    }
}

pub fn extract(method: Method, html: &str, base: &Url) -> Extracted {
    let html = &close_self_closed(html);
    let html = &limit_depth(html);
    let mut doc = Html::parse_document(html);
    repair_parent_links(&mut doc);
    let title = page_title(&doc);
    let content_html = match method {
        Method::Readability => readability(html, base).unwrap_or_default(),
        Method::Structural => {
            remove_chrome(&mut doc);
            demote_extra_header_rows(&mut doc);
            content_container(&doc).html()
        }
        Method::Combined => {
            remove_chrome(&mut doc);
            let cleaned = doc.root_element().html();
            readability(&cleaned, base).unwrap_or_else(|| content_container(&doc).html())
        }
    };
    Extracted {
        title,
        markdown: to_markdown(&content_html, base),
    }
}

/// Rebuilds the tree when a child's parent link disagrees with the child
/// lists. ego-tree 0.10's `reparent_from_id_append` (used by scraper when the
/// parser's adoption agency moves children, e.g. for a misnested `<a>`) only
/// updates the first and last moved child; `ancestors()` is then wrong for
/// the others and `detach()` panics. Walking with `traverse()` follows the
/// child/sibling links, which stay right, so a copy made that way is sound.
fn repair_parent_links(doc: &mut Html) {
    use ego_tree::iter::Edge;
    let broken = doc.tree.nodes().any(|n| {
        n.children()
            .any(|c| c.parent().map(|p| p.id()) != Some(n.id()))
    });
    if !broken {
        return;
    }
    let root = doc.tree.root();
    let mut tree = ego_tree::Tree::new(root.value().clone());
    let mut stack = vec![tree.root().id()];
    for edge in root.traverse().skip(1) {
        match edge {
            Edge::Open(n) if n.id() == root.id() => {}
            Edge::Open(n) => {
                let parent = *stack.last().expect("the root stays on the stack");
                let id = match tree.get_mut(parent) {
                    Some(mut p) => p.append(n.value().clone()).id(),
                    None => continue,
                };
                stack.push(id);
            }
            Edge::Close(n) if n.id() == root.id() => {}
            Edge::Close(_) => {
                stack.pop();
            }
        }
    }
    doc.tree = tree;
}

/// Deepest element nesting the converters get to see. htmd and the chrome
/// remover recurse per level: thousands of nested `<div>`s overflowed the
/// 2 MiB stack of the extraction thread, and readability went quadratic.
/// Real pages stay far below this.
pub const MAX_DEPTH: usize = 200;

/// `html` with every element nested deeper than [`MAX_DEPTH`] unwrapped:
/// its tags go, its text and shallower structure stay, in document order.
/// Re-serialised from the parsed tree without mutating it (ego-tree panicked
/// when detaching nodes the parser had reparented). Pages with fewer tags
/// than the limit come back unchanged without a parse.
pub fn limit_depth(html: &str) -> std::borrow::Cow<'_, str> {
    use ego_tree::iter::Edge;
    if html.bytes().filter(|&b| b == b'<').count() <= MAX_DEPTH {
        return std::borrow::Cow::Borrowed(html);
    }
    let doc = Html::parse_document(html);
    let too_deep = doc
        .tree
        .root()
        .traverse()
        .scan(0usize, |d, edge| {
            match edge {
                Edge::Open(_) => *d += 1,
                Edge::Close(_) => *d -= 1,
            }
            Some(*d)
        })
        .any(|d| d > MAX_DEPTH);
    if !too_deep {
        return std::borrow::Cow::Borrowed(html);
    }
    let mut out = String::with_capacity(html.len());
    let mut depth = 0usize;
    for edge in doc.tree.root().traverse() {
        match edge {
            Edge::Open(node) => {
                depth += 1;
                match node.value() {
                    Node::Text(t) => escape_html(&mut out, t, false),
                    Node::Element(el) if depth <= MAX_DEPTH => {
                        out.push('<');
                        out.push_str(el.name());
                        for (k, v) in el.attrs() {
                            out.push(' ');
                            out.push_str(k);
                            out.push_str("=\"");
                            escape_html(&mut out, v, true);
                            out.push('"');
                        }
                        out.push('>');
                    }
                    _ => {}
                }
            }
            Edge::Close(node) => {
                if let Node::Element(el) = node.value() {
                    if depth <= MAX_DEPTH && !is_void(el.name()) {
                        out.push_str("</");
                        out.push_str(el.name());
                        out.push('>');
                    }
                }
                depth -= 1;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

fn escape_html(out: &mut String, s: &str, attr: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' if !attr => out.push_str("&lt;"),
            '>' if !attr => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            '\u{a0}' => out.push_str("&nbsp;"),
            c => out.push(c),
        }
    }
}

fn is_void(name: &str) -> bool {
    matches!(
        name,
        "area"
            | "base"
            | "br"
            | "col"
            | "embed"
            | "hr"
            | "img"
            | "input"
            | "link"
            | "meta"
            | "source"
            | "track"
            | "wbr"
    )
}

/// `<iframe … />` is not self-closing in HTML: a parser (and a browser) reads
/// the rest of the page as the iframe's fallback text. Pages rendered from MDX
/// often contain it, so such tags get an explicit end tag.
pub fn close_self_closed(html: &str) -> String {
    const TAGS: &[&str] = &["iframe", "video", "audio", "script", "textarea"];
    let bytes = html.as_bytes();
    let mut out = String::with_capacity(html.len() + 64);
    let mut last = 0;
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        let start = i + off;
        i = start + 1;
        let Some(tag) = TAGS.iter().find(|t| {
            let end = start + 1 + t.len();
            end < bytes.len()
                && html.is_char_boundary(end)
                && html[start + 1..end].eq_ignore_ascii_case(t)
                && (bytes[end].is_ascii_whitespace() || bytes[end] == b'/')
        }) else {
            continue;
        };
        // Find the tag's closing `>`, skipping quoted attribute values.
        let mut j = start + 1 + tag.len();
        let mut quote: Option<u8> = None;
        while j < bytes.len() {
            let b = bytes[j];
            match quote {
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None if b == b'"' || b == b'\'' => quote = Some(b),
                None if b == b'>' => break,
                None => {}
            }
            j += 1;
        }
        if j >= bytes.len() {
            break;
        }
        if bytes[j - 1] == b'/' {
            out.push_str(&html[last..=j]);
            out.push_str("</");
            out.push_str(tag);
            out.push('>');
            last = j + 1;
        }
        i = j + 1;
    }
    out.push_str(&html[last..]);
    out
}

fn readability(html: &str, base: &Url) -> Option<String> {
    let cfg = dom_smoothie::Config {
        max_elements_to_parse: 0,
        ..Default::default()
    };
    let mut r = dom_smoothie::Readability::new(html, Some(base.as_str()), Some(cfg)).ok()?;
    let article = r.parse().ok()?;
    Some(article.content.to_string())
}

/// `<title>`, else `og:title`, else the first `<h1>`; whitespace collapsed.
fn page_title(doc: &Html) -> Option<String> {
    let pick = |sel: &str, attr: Option<&str>| -> Option<String> {
        let s = Selector::parse(sel).ok()?;
        let el = doc.select(&s).next()?;
        let raw = match attr {
            Some(a) => el.value().attr(a)?.to_string(),
            None => el.text().collect::<String>(),
        };
        let t = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        (!t.is_empty()).then_some(t)
    };
    pick("title", None)
        .or_else(|| pick("meta[property='og:title']", Some("content")))
        .or_else(|| pick("h1", None))
}

const CHROME_TAGS: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "iframe", "form", "button", "input",
    "select", "textarea", "nav", "footer", "aside", "dialog", "canvas", "object", "embed", "link",
    "meta", "label",
];
const CHROME_ROLES: &[&str] = &[
    "navigation",
    "banner",
    "contentinfo",
    "complementary",
    "search",
    "dialog",
    "alertdialog",
    "menu",
    "menubar",
    "toolbar",
    "tablist",
];
/// Words in class/id attributes that mark page furniture.
const CHROME_WORDS: &[&str] = &[
    "cookie",
    "cookies",
    "consent",
    "gdpr",
    "sidebar",
    "toc",
    "breadcrumb",
    "breadcrumbs",
    "navbar",
    "nav",
    "navigation",
    "menu",
    "footer",
    "pagination",
    "pager",
    "share",
    "sharing",
    "social",
    "ads",
    "advert",
    "advertisement",
    "popup",
    "modal",
    "newsletter",
    "subscribe",
    "feedback",
    "skip",
    "search",
    "locale",
    "toolbar",
    "sr",
    "visually",
    "related",
    "clipboard",
    "ad",
    "comment",
    "comments",
    "disqus",
    "preloader",
];
const CONTAINERS: &[&str] = &[
    ".markdown-body",
    ".markdown-section",
    "article",
    "[role=main]",
    "main",
    "#content",
    ".content",
    ".post",
    ".entry-content",
    ".entry",
    ".post-content",
    ".post-body",
    ".blogpost-body",
    ".article-content",
    ".article-body",
    ".page__content",
    "#write",
    ".prose",
    "#main",
];

fn words(attr: &str) -> impl Iterator<Item = String> + '_ {
    // Split on non-alphanumerics and on camelCase boundaries: `cookieTip` → cookie, tip.
    attr.split(|c: char| !c.is_ascii_alphanumeric())
        .flat_map(|token| {
            let mut parts = Vec::new();
            let mut cur = String::new();
            let mut prev_lower = false;
            for c in token.chars() {
                if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
                    parts.push(std::mem::take(&mut cur));
                }
                prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
                cur.push(c.to_ascii_lowercase());
            }
            if !cur.is_empty() {
                parts.push(cur);
            }
            parts
        })
}

/// Texts of "edit this page" links that documentation sites put inside the content.
const EDIT_LINK_TEXTS: &[&str] = &[
    "edit this page",
    "edit on github",
    "update on github",
    "improve this page",
    "view source on github",
    "view page source",
    "编辑此页",
    "在 github 上编辑",
    "在github上编辑",
];

fn is_edit_link(el: ElementRef) -> bool {
    let text: String = el.text().collect::<String>().to_lowercase();
    let text = text
        .replace(['<', '>'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    EDIT_LINK_TEXTS.contains(&text.as_str())
}

fn is_chrome(el: ElementRef) -> bool {
    let v = el.value();
    let name = v.name();
    if name == "a" && is_edit_link(el) {
        return true;
    }
    if matches!(
        name,
        "html" | "body" | "main" | "article" | "head" | "title"
    ) {
        return false;
    }
    if CHROME_TAGS.contains(&name) {
        return true;
    }
    if name == "header"
        && !el
            .ancestors()
            .filter_map(ElementRef::wrap)
            .any(|a| matches!(a.value().name(), "main" | "article"))
    {
        return true;
    }
    if v.attr("hidden").is_some() || v.attr("aria-hidden") == Some("true") {
        return true;
    }
    if let Some(role) = v.attr("role") {
        if CHROME_ROLES.contains(&role.trim().to_ascii_lowercase().as_str()) {
            return true;
        }
    }
    // Never judge code by its class names.
    if matches!(
        name,
        "pre" | "code" | "table" | "thead" | "tbody" | "tr" | "td" | "th"
    ) {
        return false;
    }
    let attrs = [v.attr("class").unwrap_or(""), v.attr("id").unwrap_or("")];
    attrs
        .iter()
        .flat_map(|a| words(a))
        .any(|w| CHROME_WORDS.contains(&w.as_str()))
}

/// Detaches every chrome element (outermost first; descendants go with them).
fn remove_chrome(doc: &mut Html) {
    let mut doomed = Vec::new();
    let mut inside = HashSet::new();
    for node in doc.tree.root().descendants() {
        if node.ancestors().any(|a| inside.contains(&a.id())) {
            continue;
        }
        if let Some(el) = ElementRef::wrap(node) {
            if is_chrome(el) {
                inside.insert(node.id());
                doomed.push(node.id());
            }
        } else if matches!(
            node.value(),
            Node::Comment(_) | Node::ProcessingInstruction(_)
        ) {
            doomed.push(node.id());
        }
    }
    for id in doomed {
        if let Some(mut n) = doc.tree.get_mut(id) {
            n.detach();
        }
    }
}

/// Markdown tables have one header row; htmd drops further rows made of `<th>`
/// (benchmark tables in READMEs often have two). Their cells become `<td>`.
fn demote_extra_header_rows(doc: &mut Html) {
    let (Ok(table_sel), Ok(tr_sel), Ok(td_sel)) = (
        Selector::parse("table"),
        Selector::parse("tr"),
        Selector::parse("td"),
    ) else {
        return;
    };
    let probe = Html::parse_fragment("<table><tr><td></td></tr></table>");
    let Some(td_name) = probe
        .select(&td_sel)
        .next()
        .map(|td| td.value().name.clone())
    else {
        return;
    };
    let mut cells = Vec::new();
    for table in doc.select(&table_sel) {
        let rows = table.select(&tr_sel).filter(|row| {
            row.ancestors()
                .filter_map(ElementRef::wrap)
                .find(|a| a.value().name() == "table")
                .is_some_and(|t| t.id() == table.id())
        });
        for row in rows.skip(1) {
            cells.extend(
                row.child_elements()
                    .filter(|c| c.value().name() == "th")
                    .map(|c| c.id()),
            );
        }
    }
    for id in cells {
        if let Some(mut node) = doc.tree.get_mut(id) {
            if let Node::Element(el) = node.value() {
                el.name = td_name.clone();
            }
        }
    }
}

fn text_len(el: ElementRef) -> usize {
    el.text()
        .flat_map(str::chars)
        .filter(|c| c.is_alphanumeric())
        .count()
}

/// The innermost container holding most of the text; the body when none does.
fn content_container(doc: &Html) -> ElementRef<'_> {
    let body = Selector::parse("body")
        .ok()
        .and_then(|s| doc.select(&s).next());
    let fallback = body.unwrap_or_else(|| doc.root_element());
    let mut candidates: Vec<(ElementRef, usize, usize)> = Vec::new();
    for sel in CONTAINERS {
        let Ok(s) = Selector::parse(sel) else {
            continue;
        };
        for el in doc.select(&s) {
            if candidates.iter().any(|(c, _, _)| c.id() == el.id()) {
                continue;
            }
            let depth = el.ancestors().count();
            candidates.push((el, text_len(el), depth));
        }
    }
    let best = candidates.iter().map(|c| c.1).max().unwrap_or(0);
    let total = text_len(fallback);
    // A container holding a small part of the page's text is not the content.
    if best < 200.min(total) || best * 3 < total {
        return fallback;
    }
    candidates
        .into_iter()
        .filter(|c| c.1 * 10 >= best * 7)
        .max_by_key(|c| c.2)
        .map(|c| c.0)
        .unwrap_or(fallback)
}

fn to_markdown(html: &str, base: &Url) -> String {
    let base = base.clone();
    let converter = HtmlToMarkdown::builder()
        .skip_tags(vec![
            "script", "style", "noscript", "template", "svg", "iframe", "img", "picture", "video",
            "audio", "source", "canvas", "button", "input", "select", "textarea", "form", "head",
        ])
        .add_handler(
            vec!["a"],
            move |handlers: &dyn Handlers, el: Element| -> Option<HandlerResult> {
                let content = handlers.walk_children(el.node).content;
                // Link text cannot span a blank line in markdown: block content becomes one line.
                let flat;
                let text = if content.trim().contains('\n') {
                    flat = content.split_whitespace().collect::<Vec<_>>().join(" ");
                    flat.as_str()
                } else {
                    content.trim()
                };
                if text.is_empty() {
                    return Some("".into());
                }
                let href = el
                    .attrs
                    .iter()
                    .find(|a| &*a.name.local == "href")
                    .map(|a| a.value.to_string());
                let Some(href) = href else {
                    return Some(content.into());
                };
                let href = href.trim();
                if href.starts_with('#') || href.to_ascii_lowercase().starts_with("javascript:") {
                    return Some(text.to_string().into());
                }
                let target = base
                    .join(href)
                    .map(|u| u.to_string())
                    .unwrap_or_else(|_| href.to_string());
                let target = if target.contains([' ', '(', ')']) {
                    format!("<{}>", target.replace('<', "%3C").replace('>', "%3E"))
                } else {
                    target
                };
                Some(format!("[{text}]({target})").into())
            },
        )
        .build();
    let md = converter.convert(html).unwrap_or_default();
    tidy(&md)
}

/// Trailing spaces off, at most one blank line in a row, trimmed ends.
pub fn tidy(md: &str) -> String {
    let mut out = String::with_capacity(md.len());
    let mut blank = 0;
    let mut in_fence = false;
    for line in md.lines() {
        let l = line.trim_end();
        if l.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        if l.is_empty() && !in_fence {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(l);
        out.push('\n');
    }
    out.trim().to_string() + "\n"
}

/// Letters and digits outside link targets: a rough measure of real content.
pub fn meaningful_chars(md: &str) -> usize {
    let mut n = 0;
    let mut in_target = false;
    let mut prev = ' ';
    for c in md.chars() {
        if prev == ']' && c == '(' {
            in_target = true;
        } else if in_target && c == ')' {
            in_target = false;
        } else if !in_target && c.is_alphanumeric() {
            n += 1;
        }
        prev = c;
    }
    n
}

/// The page runs scripts (so empty content means "rendered by JavaScript").
pub fn has_scripts(html: &str) -> bool {
    let doc = Html::parse_document(html);
    Selector::parse("script")
        .map(|s| doc.select(&s).next().is_some())
        .unwrap_or(false)
}

/// Same-document links of a page, absolute, without fragments, http(s) only.
pub fn links(html: &str, base: &Url) -> Vec<Url> {
    let doc = Html::parse_document(html);
    let Ok(sel) = Selector::parse("a[href]") else {
        return Vec::new();
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for a in doc.select(&sel) {
        let Some(href) = a.value().attr("href") else {
            continue;
        };
        let Ok(mut u) = base.join(href.trim()) else {
            continue;
        };
        if !matches!(u.scheme(), "http" | "https") {
            continue;
        }
        u.set_fragment(None);
        if seen.insert(u.to_string()) {
            out.push(u);
        }
    }
    out
}

/// PDF → text on a blocking thread; a panic inside the PDF library becomes an error.
pub async fn pdf_to_text(bytes: Vec<u8>) -> Result<String, String> {
    let joined = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(&bytes))
    })
    .await;
    match joined {
        Err(e) => Err(format!("PDF extraction task failed: {e}")),
        Ok(Err(_)) => Err("the PDF library panicked on this file".into()),
        Ok(Ok(Err(e))) => Err(format!("cannot read PDF: {e}")),
        Ok(Ok(Ok(text))) => Ok(pdf_text_to_markdown(&text)),
    }
}

/// Joins the PDF's hard-wrapped lines into paragraphs (blank lines stay breaks).
fn pdf_text_to_markdown(text: &str) -> String {
    let mut out = String::new();
    let mut para = String::new();
    let flush = |para: &mut String, out: &mut String| {
        let p = para.trim();
        if !p.is_empty() {
            out.push_str(p);
            out.push_str("\n\n");
        }
        para.clear();
    };
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() {
            flush(&mut para, &mut out);
            continue;
        }
        if let Some(stripped) = para.strip_suffix('-') {
            // Hyphenated line break: glue the word back together.
            if l.chars().next().is_some_and(char::is_lowercase) {
                para = stripped.to_string();
                para.push_str(l);
                continue;
            }
        }
        if !para.is_empty() {
            let cjk_join = para.chars().last().is_some_and(is_cjk_text)
                && l.chars().next().is_some_and(is_cjk_text);
            if !cjk_join {
                para.push(' ');
            }
        }
        para.push_str(l);
    }
    flush(&mut para, &mut out);
    tidy(&out)
}

/// Markdown or plain text as served: line endings normalised, NULs dropped.
pub fn text_document(text: &str) -> String {
    let t = text
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\0', "");
    let t = t.trim_matches('\n');
    format!("{t}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://site.example/docs/page.html").unwrap()
    }

    const PAGE: &str = r#"<!doctype html><html><head><title> My  Page </title><style>p{}</style>
        <script>var x = "SCRIPT-MARKER";</script></head><body>
        <div id="cookie-consent" class="cookie-banner">We use cookies COOKIE-MARKER <button>OK</button></div>
        <header><nav><a href="/">Home NAV-MARKER</a></nav></header>
        <div class="layout"><aside class="sidebar"><ul><li>SIDEBAR-MARKER</li></ul></aside>
        <main><article><h1>Real Title</h1><p>First paragraph with a <a href="other.html">relative link</a> and enough words to count as content here.</p>
        <h2>Code</h2><pre><code class="language-rust">fn main() {}</code></pre>
        <ul><li>item one</li><li>item two</li></ul>
        <table><thead><tr><th>A</th><th>B</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody></table>
        <div class="mt-12"><a href="https://github.com/o/r/edit/main/x.md">&lt; &gt; Update on GitHub</a></div>
        </article></main></div>
        <footer>FOOTER-MARKER</footer></body></html>"#;

    #[test]
    fn structural_keeps_content_and_drops_chrome() {
        let e = html_to_markdown(PAGE, &base());
        assert_eq!(e.title.as_deref(), Some("My Page"));
        let md = &e.markdown;
        for keep in [
            "# Real Title",
            "## Code",
            "```",
            "fn main() {}",
            "item one",
            "| A",
            "[relative link](https://site.example/docs/other.html)",
        ] {
            assert!(md.contains(keep), "missing {keep:?} in\n{md}");
        }
        for drop in [
            "SCRIPT-MARKER",
            "COOKIE-MARKER",
            "NAV-MARKER",
            "SIDEBAR-MARKER",
            "FOOTER-MARKER",
            "p{}",
        ] {
            assert!(!md.contains(drop), "leaked {drop:?} in\n{md}");
        }
    }

    #[test]
    fn second_header_rows_and_block_links_survive() {
        let html = r#"<main><table><tr><th colspan="2">Benchmark</th></tr><tr><th>Model</th><th>Score ↑</th></tr>
            <tr><td>A</td><td>1</td></tr></table><a href="/q"><h3>Quicktour</h3><p>Start here.</p></a>
            <p>Padding text so that the container holds enough letters to count as content.</p></main>"#;
        let md = extract(Method::Structural, html, &base()).markdown;
        assert!(md.contains("Model") && md.contains("Score ↑"), "{md}");
        assert!(md.contains("](https://site.example/q)"), "{md}");
        let link_line = md.lines().find(|l| l.contains("site.example/q")).unwrap();
        assert!(
            link_line.contains("Quicktour") && link_line.contains("Start here."),
            "{md}"
        );
    }

    #[test]
    fn js_shell_has_no_meaningful_text() {
        let shell = r#"<html><head><title>App</title></head><body><div id="app"></div><script src="app.js"></script></body></html>"#;
        let e = html_to_markdown(shell, &base());
        assert!(meaningful_chars(&e.markdown) < MIN_MEANINGFUL_CHARS);
        assert!(has_scripts(shell));
    }

    #[test]
    fn links_are_absolute_and_unique() {
        let html = r##"<a href="a.html#x">1</a><a href="a.html">2</a><a href="mailto:x@y">3</a><a href="https://o.example/">4</a>"##;
        let l: Vec<String> = links(html, &base())
            .into_iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(
            l,
            vec!["https://site.example/docs/a.html", "https://o.example/"]
        );
    }

    #[test]
    fn pdf_lines_become_paragraphs() {
        let md = pdf_text_to_markdown("Deep-\nlearning is\nfun.\n\n\n中文\n文本\n");
        assert_eq!(md, "Deeplearning is fun.\n\n中文文本\n");
    }

    #[test]
    fn pdf_lines_of_rare_ideographs_and_punctuation_join_without_a_space() {
        // Extension B ideographs (U+20000…) joined with a space before lang::is_cjk_text.
        let md = pdf_text_to_markdown("𠀀𠀁\n𠀂，\n「引文」\n");
        assert_eq!(md, "𠀀𠀁𠀂，「引文」\n");
    }

    #[test]
    fn self_closed_iframes_do_not_swallow_the_page() {
        let html = r#"<main><h1>T</h1><iframe src="x" allow="a>b" /><p>Body text that must survive the iframe tag.</p></main>"#;
        let fixed = close_self_closed(html);
        assert!(fixed.contains(r#"allow="a>b" /></iframe><p>"#), "{fixed}");
        let e = extract(Method::Structural, html, &base());
        assert!(
            e.markdown.contains("Body text that must survive"),
            "{}",
            e.markdown
        );
        assert_eq!(
            close_self_closed("<p>不变</p><iframe>"),
            "<p>不变</p><iframe>"
        );
    }

    #[test]
    fn class_words_split_camel_case() {
        let w: Vec<String> = words("cookieTip UnderlineNav js-repo-nav markdown-body").collect();
        assert!(w.contains(&"cookie".to_string()) && w.contains(&"nav".to_string()));
        assert!(!w.contains(&"markdown-body".to_string()));
    }

    #[tokio::test]
    async fn broken_pdf_is_an_error_not_a_panic() {
        assert!(pdf_to_text(b"%PDF-1.4 garbage".to_vec()).await.is_err());
        assert!(pdf_to_text(Vec::new()).await.is_err());
    }
}
