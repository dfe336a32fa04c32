//! The corpus on disk: markdown documents with a small front-matter header.
//!
//! Front matter is a `---` fenced block of YAML, or a `+++` fenced block of
//! TOML (Hugo's). ragmap writes `key: value` lines whose values are JSON
//! (strings, arrays), so titles with colons, quotes or Chinese punctuation
//! round-trip exactly, and which any YAML reader reads. Notes written for
//! other tools are read with a real YAML reader: the known keys are taken
//! (scalars as text, `sections` as a list or one string), everything else —
//! `tags:` lists, dates, nested maps — ignored. A block that is not YAML is
//! read as plain `key: value` lines, so `title: My notes: part 2` works.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Joins headings into a path: a roadmap section (`阶段2：RAG应用开发工程 › RAG › 学习资源`)
/// or the headings above a chunk.
pub const PATH_SEPARATOR: &str = " › ";

/// The current UTC time in RFC 3339 to the second (`2026-05-01T10:00:00Z`): the
/// timestamps of front matter, the crawl report and the index catalogue.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Metadata carried at the top of every corpus document. All fields are optional
/// because users drop plain markdown files in `corpus/` too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrontMatter {
    pub title: Option<String>,
    /// The URL the roadmap links to.
    pub url: Option<String>,
    /// Where that URL ended up after redirects.
    pub final_url: Option<String>,
    /// Every roadmap section path that links this resource, e.g. `阶段2：RAG应用开发工程 › RAG › 学习资源`.
    pub sections: Vec<String>,
    pub fetched_at: Option<String>,
    pub edited_at: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// sha256 of the body, set by the crawler to detect changes without re-reading pages.
    pub content_hash: Option<String>,
    /// Crawl outcome, e.g. `ok`.
    pub status: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FrontMatterError {
    #[error("front matter opened with `---` is never closed")]
    Unclosed,
    #[error("front matter line {line}: expected `key: value`")]
    BadLine { line: usize },
    #[error("front matter key `{key}`: {reason}")]
    BadValue { key: String, reason: String },
}

const FENCE: &str = "---";
const TOML_FENCE: &str = "+++";
/// Larger YAML blocks are read as plain lines: front matter is a few fields.
const MAX_YAML_BYTES: usize = 64 * 1024;

/// Splits `text` into its front matter and body. Text without a leading `---`
/// or `+++` line has empty front matter and is all body.
pub fn parse(text: &str) -> Result<(FrontMatter, &str), FrontMatterError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (fence, rest) = match (
        strip_fence_line(text, FENCE),
        strip_fence_line(text, TOML_FENCE),
    ) {
        (Some(rest), _) => (FENCE, rest),
        (None, Some(rest)) => (TOML_FENCE, rest),
        (None, None) => return Ok((FrontMatter::default(), text)),
    };
    let (block, body) = split_block(rest, fence).ok_or(FrontMatterError::Unclosed)?;
    let front = if fence == TOML_FENCE {
        from_toml(block)?
    } else {
        match from_yaml(block) {
            Some(front) => front,
            None => from_lines(block)?,
        }
    };
    Ok((front, body))
}

/// Like [`parse`], but a broken block does not lose the document: the
/// front matter is empty, the body is what follows the block (all of the
/// text when the block is never closed), and the error says what was wrong.
pub fn parse_lenient(text: &str) -> (FrontMatter, &str, Option<FrontMatterError>) {
    match parse(text) {
        Ok((front, body)) => (front, body, None),
        Err(e) => {
            let text = text.strip_prefix('\u{feff}').unwrap_or(text);
            let body = [FENCE, TOML_FENCE]
                .iter()
                .find_map(|fence| {
                    strip_fence_line(text, fence)
                        .and_then(|rest| split_block(rest, fence))
                        .map(|(_, body)| body)
                })
                .unwrap_or(text);
            (FrontMatter::default(), body, Some(e))
        }
    }
}

/// The block up to the closing fence line, and the text after it.
fn split_block<'t>(rest: &'t str, fence: &str) -> Option<(&'t str, &'t str)> {
    let mut offset = 0;
    for raw_line in rest.split_inclusive('\n') {
        let line_start = offset;
        offset += raw_line.len();
        if raw_line.trim_end() == fence {
            return Some((&rest[..line_start], &rest[offset..]));
        }
    }
    None
}

fn strip_fence_line<'t>(text: &'t str, fence: &str) -> Option<&'t str> {
    let rest = text.strip_prefix(fence)?;
    let rest = rest.trim_start_matches([' ', '\t']);
    rest.strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))
}

/// The front matter of a YAML mapping; `None` when the block is not YAML
/// or not a mapping (then it is read as `key: value` lines).
fn from_yaml(block: &str) -> Option<FrontMatter> {
    use yaml_rust2::Yaml;
    if block.trim().is_empty() {
        return Some(FrontMatter::default());
    }
    // The loader copies a node at every alias, so a few lines of nested
    // aliases would take all memory; front matter has no use for anchors.
    let anchor = block.char_indices().any(|(i, c)| {
        c == '&'
            && block[..i]
                .chars()
                .next_back()
                .is_none_or(|p| p.is_whitespace() || "[{,".contains(p))
            && block[i + 1..]
                .chars()
                .next()
                .is_some_and(|n| !n.is_whitespace())
    });
    if anchor || block.len() > MAX_YAML_BYTES {
        return None;
    }
    let docs = yaml_rust2::YamlLoader::load_from_str(block).ok()?;
    let Some(Yaml::Hash(map)) = docs.into_iter().next() else {
        return None;
    };
    let scalar = |v: &Yaml| -> Option<String> {
        match v {
            Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
            Yaml::Integer(i) => Some(i.to_string()),
            Yaml::Boolean(b) => Some(b.to_string()),
            _ => None,
        }
    };
    let mut front = FrontMatter::default();
    for (key, value) in &map {
        let Some(key) = key.as_str() else { continue };
        if key == "sections" {
            front.sections = match value {
                Yaml::Array(items) => items.iter().filter_map(scalar).collect(),
                other => scalar(other).into_iter().collect(),
            };
        } else if let Some(slot) = slot(&mut front, key) {
            *slot = scalar(value).filter(|s| !s.is_empty());
        }
    }
    Some(front)
}

/// Hugo's `+++` TOML front matter.
fn from_toml(block: &str) -> Result<FrontMatter, FrontMatterError> {
    let table: toml::Table = toml::from_str(block).map_err(|e| FrontMatterError::BadValue {
        key: "+++".into(),
        reason: format!("not TOML: {}", e.message()),
    })?;
    let scalar = |v: &toml::Value| -> Option<String> {
        match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Array(_) | toml::Value::Table(_) => None,
            other => Some(other.to_string()),
        }
    };
    let mut front = FrontMatter::default();
    for (key, value) in &table {
        if key == "sections" {
            front.sections = match value {
                toml::Value::Array(items) => items.iter().filter_map(scalar).collect(),
                other => scalar(other).into_iter().collect(),
            };
        } else if let Some(slot) = slot(&mut front, key) {
            *slot = scalar(value).filter(|s| !s.is_empty());
        }
    }
    Ok(front)
}

/// The field a known key fills (`sections` aside).
fn slot<'f>(front: &'f mut FrontMatter, key: &str) -> Option<&'f mut Option<String>> {
    Some(match key {
        "title" => &mut front.title,
        "url" => &mut front.url,
        "final_url" => &mut front.final_url,
        "fetched_at" => &mut front.fetched_at,
        "edited_at" => &mut front.edited_at,
        "etag" => &mut front.etag,
        "last_modified" => &mut front.last_modified,
        "content_hash" => &mut front.content_hash,
        "status" => &mut front.status,
        _ => return None,
    })
}

/// The block as plain `key: value` lines: the form that is not always YAML
/// (`title: a: b`) but has always been accepted.
fn from_lines(block: &str) -> Result<FrontMatter, FrontMatterError> {
    let mut front = FrontMatter::default();
    for (n, raw_line) in block.split_inclusive('\n').enumerate() {
        let line = raw_line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or(FrontMatterError::BadLine { line: n + 2 })?;
        set_field(&mut front, key.trim(), value.trim())?;
    }
    Ok(front)
}

fn set_field(front: &mut FrontMatter, key: &str, value: &str) -> Result<(), FrontMatterError> {
    let bad = |reason: String| FrontMatterError::BadValue {
        key: key.to_string(),
        reason,
    };
    if key == "sections" {
        front.sections = if value.starts_with('[') {
            serde_json::from_str(value)
                .map_err(|e| bad(format!("not a JSON list of strings: {e}")))?
        } else if value.is_empty() {
            Vec::new()
        } else {
            vec![unquote(value).map_err(bad)?]
        };
        return Ok(());
    }
    // Unknown keys are kept out of the way rather than rejected: users may
    // bring notes written for other tools.
    let Some(slot) = slot(front, key) else {
        return Ok(());
    };
    *slot = if value.is_empty() || value == "null" {
        None
    } else {
        Some(unquote(value).map_err(bad)?)
    };
    Ok(())
}

fn unquote(value: &str) -> Result<String, String> {
    if value.starts_with('"') {
        serde_json::from_str::<String>(value).map_err(|e| format!("bad quoted string: {e}"))
    } else {
        Ok(value.to_string())
    }
}

/// Renders a document with its front matter. Inverse of [`parse`].
pub fn render(front: &FrontMatter, body: &str) -> String {
    let mut out = String::from("---\n");
    let mut field = |key: &str, value: &Option<String>| {
        if let Some(v) = value {
            out.push_str(key);
            out.push_str(": ");
            out.push_str(&serde_json::to_string(v).expect("strings always serialise"));
            out.push('\n');
        }
    };
    field("title", &front.title);
    field("url", &front.url);
    field("final_url", &front.final_url);
    field("fetched_at", &front.fetched_at);
    field("edited_at", &front.edited_at);
    field("etag", &front.etag);
    field("last_modified", &front.last_modified);
    field("content_hash", &front.content_hash);
    field("status", &front.status);
    if !front.sections.is_empty() {
        out.push_str("sections: ");
        out.push_str(&serde_json::to_string(&front.sections).expect("strings always serialise"));
        out.push('\n');
    }
    out.push_str("---\n");
    out.push_str(body);
    if !body.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Hex sha256 of some bytes; the identity used for change detection everywhere.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A corpus document as read from disk.
#[derive(Debug, Clone)]
pub struct Document {
    /// Path relative to the corpus root, with `/` separators: the document's stable id.
    pub rel_path: String,
    pub front: FrontMatter,
    pub body: String,
    /// sha256 of the whole file (front matter included: a new title must reach the index).
    pub hash: String,
    pub modified: Option<std::time::SystemTime>,
    /// What was wrong with the front matter, when the document was read without it.
    pub warning: Option<String>,
}

impl Document {
    /// Title for display: front matter title, else the first heading, else the file name.
    pub fn display_title(&self) -> String {
        if let Some(t) = self.front.title.as_deref().filter(|t| !t.trim().is_empty()) {
            return t.trim().to_string();
        }
        self.body
            .lines()
            .find_map(|l| {
                let t = l.trim_start();
                t.starts_with('#')
                    .then(|| t.trim_start_matches('#').trim().to_string())
            })
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| self.rel_path.clone())
    }

    /// Where a reader can find the original: the URL if any, else the corpus path.
    pub fn source(&self) -> String {
        self.front
            .final_url
            .clone()
            .or_else(|| self.front.url.clone())
            .unwrap_or_else(|| format!("corpus/{}", self.rel_path))
    }
}

/// A corpus file that could not be read; the rest of the corpus still is.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub rel_path: String,
    pub reason: String,
}

/// Everything under `root` that is a `.md` file, sorted for stable output.
pub fn list_markdown(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !root.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut paths: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .filter_map(|entry| match entry {
            Ok(e) => e.file_type().is_file().then(|| e.into_path()),
            // A broken link or unreadable entry is kept so that reading it
            // reports the problem by name instead of it vanishing silently.
            Err(e) => e.path().map(Path::to_path_buf),
        })
        .filter(|p| is_markdown(p))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Whether `path` names a corpus document: a `.md` file whose name does not
/// start with a dot (editors' swap and temporary files do).
pub fn is_markdown(path: &Path) -> bool {
    path.extension()
        .is_some_and(|x| x.eq_ignore_ascii_case("md"))
        && !path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
}

pub fn rel_path(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads one corpus file. Non-UTF-8 content is an error the caller reports
/// and skips; broken front matter is left out with a warning, the body kept.
pub fn read_document(root: &Path, path: &Path) -> Result<Document, Skipped> {
    let rel_path = rel_path(root, path);
    let skip = |reason: String| Skipped {
        rel_path: rel_path.clone(),
        reason,
    };
    let bytes = fs::read(path).map_err(|e| skip(format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        skip(format!(
            "not UTF-8 (first bad byte at offset {}); convert it to UTF-8",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let (front, body, error) = parse_lenient(&text);
    let warning = error
        .map(|e| format!("{e}; indexed without its front matter (fix the header or remove it)"));
    let modified = fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok(Document {
        hash: content_hash(text.as_bytes()),
        body: body.to_string(),
        front,
        rel_path,
        modified,
        warning,
    })
}

/// Writes `contents` to `path` atomically: a crash leaves the old file or the
/// new one, never half of either.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .suffix(".partial")
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_to_the_second() {
        let now = now_rfc3339();
        let parsed =
            time::OffsetDateTime::parse(&now, &time::format_description::well_known::Rfc3339)
                .unwrap();
        assert_eq!(parsed.nanosecond(), 0, "{now}");
        assert!(now.ends_with('Z') && !now.contains('.'), "{now}");
    }

    #[test]
    fn round_trips_front_matter_with_awkward_values() {
        let front = FrontMatter {
            title: Some("RAG: \"检索增强生成\" — 入门".into()),
            url: Some("https://example.com/a b(1)?x=%E4".into()),
            sections: vec!["阶段2：RAG应用开发工程 › RAG › 学习资源".into(), "x".into()],
            status: Some("ok".into()),
            ..Default::default()
        };
        let text = render(&front, "# Body\n\ntext");
        let (parsed, body) = parse(&text).unwrap();
        assert_eq!(parsed, front);
        assert_eq!(body, "# Body\n\ntext\n");
    }

    #[test]
    fn plain_markdown_has_no_front_matter() {
        let (front, body) = parse("# Title\n---\nmore").unwrap();
        assert_eq!(front, FrontMatter::default());
        assert_eq!(body, "# Title\n---\nmore");
    }

    #[test]
    fn bare_values_and_unknown_keys_are_accepted() {
        let (front, body) =
            parse("---\r\ntitle: My notes: part 2\r\ntags: [a]\r\n---\r\nhi").unwrap();
        assert_eq!(front.title.as_deref(), Some("My notes: part 2"));
        assert_eq!(body, "hi");
    }

    #[test]
    fn yaml_front_matter_of_other_tools_is_read_for_its_known_keys() {
        let note = "---\ntitle: RAG 笔记\ntags:\n  - rag\n  - llm\naliases: [x]\ndate: 2024-05-01\nmeta:\n  nested: {a: 1}\nsections:\n  - 阶段2 › RAG\n  - other\nurl: https://example.com/a?b=c\n---\n# Body\n";
        let (front, body) = parse(note).unwrap();
        assert_eq!(front.title.as_deref(), Some("RAG 笔记"));
        assert_eq!(front.url.as_deref(), Some("https://example.com/a?b=c"));
        assert_eq!(front.sections, ["阶段2 › RAG", "other"]);
        assert_eq!(body, "# Body\n");

        // Scalars of other types are kept as written; YAML 1.2: `no` is text.
        let (front, _) = parse("---\ntitle: 1.10\nstatus: no\netag: 42\n---\n").unwrap();
        assert_eq!(front.title.as_deref(), Some("1.10"));
        assert_eq!(front.status.as_deref(), Some("no"));
        assert_eq!(front.etag.as_deref(), Some("42"));

        let (front, _) =
            parse("---\ntitle: >\n  folded\n  title\nurl: 'single quoted'\n---\n").unwrap();
        assert_eq!(front.title.as_deref(), Some("folded title\n"));
        assert_eq!(front.url.as_deref(), Some("single quoted"));
    }

    #[test]
    fn yaml_aliases_cannot_blow_up_memory() {
        let mut block =
            String::from("---\na: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
        for i in 0..12 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            block.push_str(&format!("l{i}: &l{i} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        }
        block.push_str("title: laughs\n---\nbody\n");
        // Read as plain lines instead: at once, the known key still found.
        let (front, body, _) = parse_lenient(&block);
        assert_eq!(body, "body\n");
        assert_eq!(front.title.as_deref(), Some("laughs"));
        // An ampersand inside a value is no anchor.
        let (front, _) = parse("---\ntitle: Q&A on R & D\n---\n").unwrap();
        assert_eq!(front.title.as_deref(), Some("Q&A on R & D"));
    }

    #[test]
    fn toml_front_matter_between_plus_fences() {
        let note = "+++\ntitle = \"Hugo page\"\ntags = [\"a\"]\nsections = [\"S1\"]\n[extra]\nurl = \"ignored\"\n+++\nbody\n";
        let (front, body) = parse(note).unwrap();
        assert_eq!(front.title.as_deref(), Some("Hugo page"));
        assert_eq!(front.url, None);
        assert_eq!(front.sections, ["S1"]);
        assert_eq!(body, "body\n");
        assert!(matches!(
            parse("+++\ntitle = unquoted\n+++\n"),
            Err(FrontMatterError::BadValue { .. })
        ));
    }

    #[test]
    fn a_broken_block_keeps_the_body() {
        let (front, body, err) = parse_lenient("---\nno colon here\n---\n# Kept\n");
        assert_eq!(front, FrontMatter::default());
        assert_eq!(body, "# Kept\n");
        assert!(matches!(err, Some(FrontMatterError::BadLine { line: 2 })));
        let (_, body, err) = parse_lenient("---\ntitle: x\n# never closed\n");
        assert_eq!(body, "---\ntitle: x\n# never closed\n");
        assert!(matches!(err, Some(FrontMatterError::Unclosed)));
        let (front, body, err) = parse_lenient("---\ntitle: fine\n---\nok");
        assert_eq!(
            (front.title.as_deref(), body, err.is_none()),
            (Some("fine"), "ok", true)
        );
    }

    #[test]
    fn broken_front_matter_is_an_error_not_a_panic() {
        assert!(matches!(
            parse("---\ntitle: x\n"),
            Err(FrontMatterError::Unclosed)
        ));
        assert!(matches!(
            parse("---\nno colon here\n---\n"),
            Err(FrontMatterError::BadLine { line: 2 })
        ));
        assert!(matches!(
            parse("---\nsections: [1, 2\n---\n"),
            Err(FrontMatterError::BadValue { .. })
        ));
        assert!(matches!(
            parse("---\ntitle: \"unterminated\n---\n"),
            Err(FrontMatterError::BadValue { .. })
        ));
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/doc.md");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left behind");
    }
}
