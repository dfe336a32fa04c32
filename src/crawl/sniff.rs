//! What a response body is (HTML, markdown/plain text, PDF, binary) and how
//! its bytes decode (HTTP charset → BOM → `<meta>` → chardetng).

use encoding_rs::Encoding;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Html,
    /// Markdown or plain text: stored as it is.
    Text,
    Pdf,
    Binary,
}

/// The media type of a Content-Type header, lower-cased, without parameters.
pub fn media_type(content_type: Option<&str>) -> Option<String> {
    let ct = content_type?;
    let mt = ct.split(';').next()?.trim().to_ascii_lowercase();
    (!mt.is_empty()).then_some(mt)
}

/// The `charset=` parameter of a Content-Type header.
pub fn header_charset(content_type: Option<&str>) -> Option<String> {
    let ct = content_type?;
    ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches(['"', '\'']).to_string())
    })
}

/// Media types that are binary whatever the body says; they are not even read.
pub fn binary_media_type(media: &str) -> bool {
    let prefixes = ["image/", "audio/", "video/", "font/", "model/"];
    let exact = [
        "application/zip",
        "application/gzip",
        "application/x-gzip",
        "application/x-tar",
        "application/x-7z-compressed",
        "application/x-rar-compressed",
        "application/vnd.rar",
        "application/x-bzip2",
        "application/x-xz",
        "application/wasm",
        "application/x-msdownload",
        "application/java-archive",
        "application/vnd.android.package-archive",
        "application/x-iso9660-image",
        "application/x-executable",
        "application/vnd.ms-excel",
        "application/msword",
        "application/x-hdf5",
    ];
    prefixes.iter().any(|p| media.starts_with(p)) || exact.contains(&media)
}

/// Classifies a body from its header and its first bytes. The bytes win when
/// they contradict the header (binary data labelled text/html, a PDF sent as
/// octet-stream).
pub fn classify(content_type: Option<&str>, url_path: &str, body: &[u8]) -> Kind {
    let head = &body[..body.len().min(1024)];
    if head.starts_with(b"%PDF-") {
        return Kind::Pdf;
    }
    let media = media_type(content_type).unwrap_or_default();
    if binary_media_type(&media) || looks_binary(body) {
        return Kind::Binary;
    }
    let path = url_path.to_ascii_lowercase();
    match media.as_str() {
        "text/html" | "application/xhtml+xml" => Kind::Html,
        "application/pdf" | "application/x-pdf" => Kind::Binary, // no %PDF- magic: not a PDF
        "text/markdown" | "text/x-markdown" | "text/plain" | "text/x-rst" => {
            if media == "text/plain" && starts_like_html(head) {
                Kind::Html
            } else {
                Kind::Text
            }
        }
        _ => {
            if starts_like_html(head) || path.ends_with(".html") || path.ends_with(".htm") {
                Kind::Html
            } else if media.starts_with("text/")
                || path.ends_with(".md")
                || path.ends_with(".txt")
                || path.ends_with(".markdown")
                || media.is_empty()
                || media == "application/octet-stream"
            {
                Kind::Text
            } else {
                Kind::Binary
            }
        }
    }
}

fn starts_like_html(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&head[..head.len().min(512)]).to_ascii_lowercase();
    let t = text.trim_start_matches('\u{feff}').trim_start();
    t.starts_with("<!doctype html")
        || t.starts_with("<html")
        || t.starts_with("<head")
        || t.starts_with("<!--")
}

/// Binary bytes: well-known magic numbers, NUL bytes, or many control characters
/// in the first 4 KiB. UTF-16 text (with a BOM) is not binary.
pub fn looks_binary(body: &[u8]) -> bool {
    let head = &body[..body.len().min(4096)];
    if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        return false;
    }
    const MAGIC: &[&[u8]] = &[
        b"\x89PNG\r\n\x1a\n",
        b"GIF87a",
        b"GIF89a",
        b"\xFF\xD8\xFF",
        b"PK\x03\x04",
        b"\x1F\x8B",
        b"BZh",
        b"\xFD7zXZ\x00",
        b"7z\xBC\xAF\x27\x1C",
        b"Rar!",
        b"\x7FELF",
        b"MZ",
        b"RIFF",
        b"\x00asm",
        b"OggS",
        b"fLaC",
        b"ID3",
    ];
    if MAGIC.iter().any(|m| head.starts_with(m)) {
        return true;
    }
    if head.contains(&0) {
        return true;
    }
    let controls = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0C | 0x1B))
        .count();
    controls * 20 > head.len().max(1)
}

/// Decodes text. Order: BOM, HTTP charset, `<meta>` (HTML only), valid UTF-8,
/// chardetng's guess (with the host's top-level domain as a hint).
pub fn decode(
    body: &[u8],
    content_type: Option<&str>,
    html: bool,
    host: &str,
) -> (String, &'static Encoding) {
    if let Some((enc, bom_len)) = Encoding::for_bom(body) {
        let (text, _) = enc.decode_without_bom_handling(&body[bom_len..]);
        return (text.into_owned(), enc);
    }
    let declared = header_charset(content_type)
        .and_then(|c| Encoding::for_label(c.as_bytes()))
        .or_else(|| if html { meta_charset(body) } else { None });
    if let Some(enc) = declared {
        // A page that declares UTF-16 in ASCII-compatible markup is really ASCII-compatible.
        let enc = if enc == encoding_rs::UTF_16LE || enc == encoding_rs::UTF_16BE {
            encoding_rs::UTF_8
        } else {
            enc
        };
        let (text, _, _) = enc.decode(body);
        return (text.into_owned(), enc);
    }
    if let Ok(s) = std::str::from_utf8(body) {
        return (s.to_string(), encoding_rs::UTF_8);
    }
    let mut det = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    det.feed(body, true);
    let tld = host.rsplit('.').next().map(str::as_bytes);
    let enc = det.guess(tld, chardetng::Utf8Detection::Allow);
    let (text, _, _) = enc.decode(body);
    (text.into_owned(), enc)
}

/// The charset declared by `<meta charset=…>` or `<meta http-equiv=Content-Type
/// content="…; charset=…">` in the first 4 KiB (bytes read as ASCII).
pub fn meta_charset(body: &[u8]) -> Option<&'static Encoding> {
    let head = &body[..body.len().min(4096)];
    let lower: Vec<u8> = head.iter().map(|b| b.to_ascii_lowercase()).collect();
    let mut pos = 0;
    while let Some(off) = find(&lower[pos..], b"<meta") {
        let start = pos + off;
        let end = find(&lower[start..], b">")
            .map(|e| start + e)
            .unwrap_or(lower.len());
        let tag = &lower[start..end];
        if let Some(c) = find(tag, b"charset") {
            let mut rest = &tag[c + 7..];
            rest = trim_ascii_start(rest);
            if let Some(r) = rest.strip_prefix(b"=") {
                let r = trim_ascii_start(r);
                let r = r
                    .strip_prefix(b"\"")
                    .or_else(|| r.strip_prefix(b"'"))
                    .unwrap_or(r);
                let label_end = r
                    .iter()
                    .position(|&b| {
                        matches!(
                            b,
                            b'"' | b'\'' | b';' | b' ' | b'/' | b'>' | b'\t' | b'\n' | b'\r'
                        )
                    })
                    .unwrap_or(r.len());
                if let Some(enc) = Encoding::for_label(&r[..label_end]) {
                    return Some(enc);
                }
            }
        }
        pos = end.max(start + 5);
        if pos >= lower.len() {
            break;
        }
    }
    None
}

fn trim_ascii_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_bytes_and_header() {
        assert_eq!(
            classify(Some("text/html; charset=utf-8"), "/a", b"<html>hi</html>"),
            Kind::Html
        );
        assert_eq!(
            classify(Some("text/html"), "/a", b"\x89PNG\r\n\x1a\n\0\0\0"),
            Kind::Binary
        );
        assert_eq!(
            classify(Some("application/octet-stream"), "/a", b"%PDF-1.5 ..."),
            Kind::Pdf
        );
        assert_eq!(
            classify(Some("application/pdf"), "/a.pdf", b"%PDF-1.7"),
            Kind::Pdf
        );
        assert_eq!(
            classify(Some("text/markdown"), "/r.md", b"# Title\n"),
            Kind::Text
        );
        assert_eq!(
            classify(Some("text/plain"), "/README.md", b"# Title\n"),
            Kind::Text
        );
        assert_eq!(
            classify(Some("image/png"), "/x.png", b"whatever"),
            Kind::Binary
        );
        assert_eq!(classify(None, "/page.html", b"<p>x</p>"), Kind::Html);
        assert_eq!(
            classify(Some("application/json"), "/x", b"{\"a\":1}"),
            Kind::Binary
        );
        assert_eq!(classify(Some("text/html"), "/a", &[7u8; 200]), Kind::Binary);
    }

    #[test]
    fn charset_order() {
        let (gbk, _, _) = encoding_rs::GBK.encode("少样本提示");
        let (t, e) = decode(&gbk, Some("text/html; charset=gbk"), true, "x");
        assert_eq!(t, "少样本提示");
        assert_eq!(e, encoding_rs::GBK);
        let mut page = b"<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=GB2312\"></head><body>".to_vec();
        page.extend_from_slice(&gbk);
        let (t, _) = decode(&page, Some("text/html"), true, "x");
        assert!(t.contains("少样本提示"), "{t}");
        let mut page = b"<meta charset='gb18030'>".to_vec();
        page.extend_from_slice(&gbk);
        assert!(decode(&page, None, true, "x").0.contains("少样本提示"));
        // No declaration at all: chardetng.
        let long: String =
            "这是一个关于提示工程的中文页面，包含少样本提示和零样本提示的例子。".repeat(4);
        let (bytes, _, _) = encoding_rs::GBK.encode(&long);
        assert_eq!(decode(&bytes, None, true, "cn").0, long);
        // BOM wins.
        let (t, _) = decode(
            "\u{feff}héllo".as_bytes(),
            Some("text/plain; charset=latin1"),
            false,
            "x",
        );
        assert_eq!(t, "héllo");
    }
}
