//! Where a crawled page is stored: `web/<host>/<readable-slug>-<hash>.md`.
//!
//! The name is derived from the resource URL only, so it is stable across runs
//! and redirects. Every component is sanitised: no separators, no `.`/`..`, no
//! NUL or control characters, no Windows reserved names, bounded length; the
//! hash of the full URL keeps distinct URLs apart after sanitising.

use crate::corpus::content_hash;

/// Longest slug, in bytes (the hash and extension come on top).
const MAX_SLUG_BYTES: usize = 80;
const MAX_HOST_BYTES: usize = 64;
const HASH_CHARS: usize = 12;

/// Folder under the corpus root that holds crawled pages.
pub const WEB_DIR: &str = "web";

/// Relative path (with `/`) under the corpus root for the document of `url`.
pub fn document_path(url: &str) -> String {
    let (host, path) = split_url(url);
    let host = sanitise(&host, MAX_HOST_BYTES);
    let host = if host.is_empty() {
        "unknown-host".to_string()
    } else {
        host
    };
    let host = guard_reserved(host);
    let slug = sanitise(&path, MAX_SLUG_BYTES);
    let hash = &content_hash(url.as_bytes())[..HASH_CHARS];
    let file = if slug.is_empty() {
        format!("index-{hash}.md")
    } else {
        format!("{slug}-{hash}.md")
    };
    // `LPT9.txt-<hash>.md` is as reserved on Windows as `LPT9`.
    let file = guard_reserved(file);
    format!("{WEB_DIR}/{host}/{file}")
}

/// Host (with a non-default port) and the rest of the URL, percent-decoded so
/// Chinese paths stay readable. Works on unparsable input too.
fn split_url(url: &str) -> (String, String) {
    if let Ok(u) = url::Url::parse(url) {
        let mut host = u.host_str().unwrap_or("").to_string();
        if let Some(p) = u.port() {
            host.push('_');
            host.push_str(&p.to_string());
        }
        let mut rest = u.path().to_string();
        if let Some(q) = u.query() {
            rest.push('-');
            rest.push_str(q);
        }
        if let Some(f) = u.fragment() {
            rest.push('-');
            rest.push_str(f);
        }
        let decoded = percent_encoding::percent_decode_str(&rest)
            .decode_utf8_lossy()
            .into_owned();
        return (host, decoded);
    }
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    (
        host.to_string(),
        percent_encoding::percent_decode_str(path)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// Keeps letters and digits of any script plus `.`, `_`, `-`; everything else
/// becomes `-`; runs collapse; leading/trailing `.`/`-` go; cut to `max` bytes
/// on a character boundary.
fn sanitise(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut last_dash = true;
    for c in s.chars() {
        let keep = c.is_alphanumeric() || c == '_' || c == '.';
        if keep && !c.is_control() {
            out.push(c);
            last_dash = false;
        } else if !last_dash {
            out.push('-');
            last_dash = true;
        }
    }
    let trimmed = out.trim_matches(['-', '.', ' ']);
    let mut cut = String::new();
    for c in trimmed.chars() {
        if cut.len() + c.len_utf8() > max {
            break;
        }
        cut.push(c);
    }
    // `..` inside a name is harmless, but never leave a component made only of dots.
    cut.trim_end_matches(['-', '.']).to_string()
}

/// Windows device names are reserved whatever the extension.
fn guard_reserved(name: String) -> String {
    let stem = name.split('.').next().unwrap_or("").to_ascii_lowercase();
    let reserved = matches!(stem.as_str(), "con" | "prn" | "aux" | "nul")
        || ((stem.starts_with("com") || stem.starts_with("lpt"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        format!("_{name}")
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_safe(p: &str) {
        assert!(p.starts_with("web/"), "{p}");
        let parts: Vec<&str> = p.split('/').collect();
        assert_eq!(parts.len(), 3, "{p}");
        for part in &parts {
            assert!(!part.is_empty() && *part != "." && *part != "..", "{p}");
            assert!(!part.contains(['\0', '\\', ':', '\n', '\r']), "{p}");
            assert!(part.len() <= 120, "{p}");
            assert!(!part.starts_with('.'), "{p}");
        }
        assert!(p.ends_with(".md"));
    }

    #[test]
    fn readable_and_stable() {
        let a = document_path("https://github.com/microsoft/graphrag");
        assert!(a.starts_with("web/github.com/microsoft-graphrag-"), "{a}");
        assert_eq!(a, document_path("https://github.com/microsoft/graphrag"));
        assert_ne!(a, document_path("https://github.com/microsoft/graphrag/"));
        let zh = document_path("https://zh.wikipedia.org/wiki/%E5%A4%A7%E5%9E%8B");
        assert!(zh.contains("wiki-大型-"), "{zh}");
        let port = document_path("http://127.0.0.1:8719/x.html");
        assert!(port.starts_with("web/127.0.0.1_8719/x.html-"), "{port}");
    }

    #[test]
    fn hostile_urls_stay_inside_the_folder() {
        let long = format!("https://h.example/{}", "a".repeat(5000));
        let long_zh = format!("https://h.example/{}", "长".repeat(500));
        let cases = [
            "https://h.example/../../etc/passwd",
            "https://h.example/%2e%2e/%2e%2e/secret",
            "https://h.example/..%2f..%2fsecret",
            "http://../../x",
            "file:///etc/passwd",
            "https://h.example/a%00b",
            "https://h.example/a\0b",
            "/absolute/path",
            "C:\\Windows\\system32",
            "https://con/aux",
            "https://CON.example/",
            "https://h.example/CON",
            "https://h.example/nul.txt",
            "https://h.example/%5C..%5C..%5Cwin",
            "https://h.example/",
            "",
            "....",
            "https://h.example/....//....",
            long.as_str(),
            long_zh.as_str(),
        ];
        let mut seen = std::collections::HashSet::new();
        for c in cases {
            let p = document_path(c);
            check_safe(&p);
            assert!(
                seen.insert(p.clone()),
                "distinct URLs must not collide: {c} -> {p}"
            );
        }
        assert!(document_path("https://con/aux").starts_with("web/_con/"));
        // Found by tests/fuzz_network.rs: a slug that is a device name plus an extension.
        let lpt = document_path("https://https://LPT9.txthttps://");
        assert!(lpt.starts_with("web/https/_LPT9.txthttps-"), "{lpt}");
        assert!(
            document_path("https://h.example/com1.html").starts_with("web/h.example/_com1.html-")
        );
    }

    #[test]
    fn reserved_names_are_prefixed() {
        assert_eq!(guard_reserved("con".into()), "_con");
        assert_eq!(guard_reserved("COM1.example".into()), "_COM1.example");
        assert_eq!(guard_reserved("common".into()), "common");
    }
}
