//! GitHub links: a repository page is mostly chrome around its README, so the
//! crawler asks for the README's raw markdown first and falls back to the
//! HTML page (whose rendered README the extractor finds in `.markdown-body`).

use url::Url;

const RAW_HOST: &str = "https://raw.githubusercontent.com";

/// First path segments that are GitHub pages, not owners.
const NOT_OWNERS: &[&str] = &[
    "about",
    "apps",
    "collections",
    "customer-stories",
    "enterprise",
    "events",
    "explore",
    "features",
    "login",
    "marketplace",
    "orgs",
    "pricing",
    "readme",
    "search",
    "security",
    "settings",
    "site",
    "sponsors",
    "team",
    "topics",
    "trending",
    "users",
    "join",
    "signup",
    "notifications",
    "new",
];

/// A raw-markdown URL for a GitHub repository or file link, if there is one:
/// `github.com/o/r` → `raw…/o/r/HEAD/README.md`; `…/blob/<ref>/<path>` →
/// `raw…/o/r/<ref>/<path>`; `…/tree/<ref>/<dir>` → that folder's README.md.
pub fn raw_url(url: &Url) -> Option<Url> {
    let host = url.host_str()?.to_ascii_lowercase();
    if host != "github.com" && host != "www.github.com" {
        return None;
    }
    let segs: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    if segs.len() < 2 || NOT_OWNERS.contains(&segs[0].to_ascii_lowercase().as_str()) {
        return None;
    }
    let owner = segs[0];
    let repo = segs[1].strip_suffix(".git").unwrap_or(segs[1]);
    let raw = match segs.get(2).copied() {
        None => format!("{RAW_HOST}/{owner}/{repo}/HEAD/README.md"),
        Some("blob") if segs.len() >= 5 => {
            format!("{RAW_HOST}/{owner}/{repo}/{}", segs[3..].join("/"))
        }
        Some("tree") if segs.len() >= 4 => format!(
            "{RAW_HOST}/{owner}/{repo}/{}/README.md",
            segs[3..].join("/")
        ),
        _ => return None,
    };
    Url::parse(&raw).ok()
}

/// `owner/repo` of a GitHub URL, for titles.
pub fn repo_name(url: &Url) -> Option<String> {
    let segs: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    (segs.len() >= 2).then(|| {
        format!(
            "{}/{}",
            segs[0],
            segs[1].strip_suffix(".git").unwrap_or(segs[1])
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(u: &str) -> Option<String> {
        raw_url(&Url::parse(u).unwrap()).map(|u| u.to_string())
    }

    #[test]
    fn repository_and_file_links() {
        assert_eq!(
            raw("https://github.com/microsoft/graphrag").as_deref(),
            Some("https://raw.githubusercontent.com/microsoft/graphrag/HEAD/README.md")
        );
        assert_eq!(
            raw("https://github.com/microsoft/graphrag/").as_deref(),
            Some("https://raw.githubusercontent.com/microsoft/graphrag/HEAD/README.md")
        );
        assert_eq!(
            raw("https://github.com/hiyouga/LLaMA-Factory/blob/main/README_zh.md").as_deref(),
            Some("https://raw.githubusercontent.com/hiyouga/LLaMA-Factory/main/README_zh.md")
        );
        assert_eq!(
            raw("https://github.com/datawhalechina/agent-tutorial/blob/main/notebook/第一章：Agent简介/1.1 Agent原理.md").as_deref(),
            Some("https://raw.githubusercontent.com/datawhalechina/agent-tutorial/main/notebook/%E7%AC%AC%E4%B8%80%E7%AB%A0%EF%BC%9AAgent%E7%AE%80%E4%BB%8B/1.1%20Agent%E5%8E%9F%E7%90%86.md")
        );
        assert_eq!(
            raw("https://github.com/o/r/tree/main/docs").as_deref(),
            Some("https://raw.githubusercontent.com/o/r/main/docs/README.md")
        );
        assert_eq!(raw("https://github.com/o/r/issues/3"), None);
        assert_eq!(raw("https://github.com/features/copilot"), None);
        assert_eq!(raw("https://github.com/o"), None);
        assert_eq!(raw("https://gitlab.com/o/r"), None);
        assert_eq!(
            repo_name(&Url::parse("https://github.com/o/r.git").unwrap()).as_deref(),
            Some("o/r")
        );
    }
}
