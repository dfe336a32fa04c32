//! Incremental parsers for the two streaming formats, fed arbitrary byte chunks as
//! they come off the socket: Server-Sent Events (OpenAI-compatible servers) and
//! newline-delimited JSON (Ollama).
//!
//! Both sit on one byte-level line splitter, so a line is decoded as UTF-8 only once it
//! is complete: a multi-byte character or a `\r\n` split across two chunks needs no
//! special care. Lines end with `\n`, `\r\n` or a lone `\r` (the SSE rule).
//!
//! Hand-written rather than `eventsource-stream`: the SSE line grammar is a few dozen
//! lines, the same splitter serves NDJSON, a push parser fits the caller's per-chunk
//! timeouts and partial-text bookkeeping, and that crate (last release 2022, nom 7)
//! only offers a `Stream` adapter that re-scans its buffer for every line.

/// A line longer than this is not a protocol line: the stream is rejected rather
/// than buffered without bound.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a stream line exceeds {MAX_LINE_BYTES} bytes")]
pub struct LineTooLong;

/// Splits a byte stream into lines at `\n`, `\r\n` or `\r`, across chunk boundaries.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
}

impl LineSplitter {
    /// Feeds a chunk; calls `line` for every completed line (without its terminator).
    pub fn push(&mut self, chunk: &[u8], mut line: impl FnMut(&[u8])) -> Result<(), LineTooLong> {
        for &b in chunk {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    line(&self.buf);
                    self.buf.clear();
                }
                _ => {
                    if self.buf.len() >= MAX_LINE_BYTES {
                        return Err(LineTooLong);
                    }
                    self.buf.push(b);
                }
            }
        }
        Ok(())
    }

    /// At end of input: the last line if it had no terminator.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        self.after_cr = false;
        (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf))
    }
}

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; empty for the default ("message").
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Server-Sent Events parser following the WHATWG event-stream rules: `:` comments
/// (keep-alives) are skipped, `data:` lines accumulate (one optional space after the
/// colon is dropped), a blank line dispatches, `id`/`retry`/unknown fields are ignored.
/// Invalid UTF-8 is replaced (U+FFFD), as the standard decoder does.
#[derive(Debug, Default)]
pub struct SseParser {
    lines: LineSplitter,
    state: SseState,
}

#[derive(Debug, Default)]
struct SseState {
    data: String,
    has_data: bool,
    event: String,
    started: bool,
}

impl SseState {
    fn line(&mut self, raw: &[u8], events: &mut Vec<SseEvent>) {
        let decoded = String::from_utf8_lossy(raw);
        let mut line: &str = &decoded;
        if !self.started {
            self.started = true;
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            if let Some(e) = self.dispatch() {
                events.push(e);
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = value.to_string(),
            _ => {}
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        std::mem::take(&mut self.has_data).then_some(SseEvent { event, data })
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk and returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut events = Vec::new();
        let Self { lines, state } = self;
        lines.push(chunk, |line| state.line(line, &mut events))?;
        Ok(events)
    }

    /// At end of input. Leniently dispatches an event whose closing blank line never
    /// came (the standard would drop it), so a final `data: [DONE]` without `\n\n` counts.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if let Some(rest) = self.lines.finish() {
            // A non-blank line never dispatches by itself.
            self.state.line(&rest, &mut Vec::new());
        }
        self.state.dispatch()
    }
}

/// Newline-delimited JSON: yields each non-blank line, trimmed.
#[derive(Debug, Default)]
pub struct NdjsonParser {
    lines: LineSplitter,
}

impl NdjsonParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, LineTooLong> {
        let mut out = Vec::new();
        self.lines.push(chunk, |line| {
            let line = String::from_utf8_lossy(line);
            let t = line.trim();
            if !t.is_empty() {
                out.push(t.to_string());
            }
        })?;
        Ok(out)
    }

    /// The last line if the stream ended without a newline.
    pub fn finish(&mut self) -> Option<String> {
        let rest = self.lines.finish()?;
        let line = String::from_utf8_lossy(&rest);
        let t = line.trim();
        (!t.is_empty()).then(|| t.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.push(c).unwrap());
        }
        out.extend(p.finish());
        out
    }

    fn datas(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn lf_crlf_and_cr_separators() {
        for sep in ["\n", "\r\n", "\r"] {
            let text = format!("data: a{sep}{sep}data: b{sep}{sep}");
            assert_eq!(datas(&sse_all(&[text.as_bytes()])), ["a", "b"], "{sep:?}");
        }
    }

    #[test]
    fn crlf_split_between_chunks_is_one_line_end() {
        let ev = sse_all(&[b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]);
        assert_eq!(datas(&ev), ["a", "b"]);
    }

    #[test]
    fn comments_and_unknown_fields_are_skipped() {
        let ev = sse_all(&[b": keep-alive\n\nid: 7\nretry: 10\nfoo: bar\ndata: x\n\n"]);
        assert_eq!(datas(&ev), ["x"]);
        assert!(sse_all(&[b": ping\n\n: ping\n\n"]).is_empty());
    }

    #[test]
    fn multi_line_data_joins_with_newline() {
        let ev = sse_all(&[b"data: {\"a\":\ndata:1}\n\n"]);
        assert_eq!(datas(&ev), ["{\"a\":\n1}"]);
    }

    #[test]
    fn only_one_space_after_colon_is_dropped_and_event_names_kept() {
        let ev = sse_all(&[b"event: error\ndata:  two\n\ndata:none\n\ndata\n\n"]);
        assert_eq!(datas(&ev), [" two", "none", ""]);
        assert_eq!(ev[0].event, "error");
        assert_eq!(ev[1].event, "");
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let text = "\u{feff}: hi\r\ndata: {\"c\":\"h\u{e9}llo \u{4f60}\u{597d} \u{1f600}\"}\r\n\r\ndata: [DONE]\r\n\r\n";
        let bytes = text.as_bytes();
        let whole = sse_all(&[bytes]);
        assert_eq!(
            datas(&whole),
            [
                "{\"c\":\"h\u{e9}llo \u{4f60}\u{597d} \u{1f600}\"}",
                "[DONE]"
            ]
        );
        for i in 0..bytes.len() {
            for j in i..bytes.len() {
                let got = sse_all(&[&bytes[..i], &bytes[i..j], &bytes[j..]]);
                assert_eq!(got, whole, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        let text = b"data: a\r\n\r\n: c\n\ndata: b\n\n";
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(datas(&sse_all(&chunks)), ["a", "b"]);
    }

    #[test]
    fn final_event_without_blank_line_is_dispatched_at_eof() {
        assert_eq!(
            datas(&sse_all(&[b"data: a\n\ndata: [DONE]\n"])),
            ["a", "[DONE]"]
        );
        assert_eq!(
            datas(&sse_all(&[b"data: a\n\ndata: [DONE]"])),
            ["a", "[DONE]"]
        );
        assert!(sse_all(&[b"data: a\n\n: trailing"]).len() == 1);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let ev = sse_all(&[b"data: a\xffb\n\n"]);
        assert_eq!(datas(&ev), ["a\u{fffd}b"]);
    }

    #[test]
    fn overlong_line_is_an_error() {
        let mut p = SseParser::new();
        let big = vec![b'x'; MAX_LINE_BYTES + 1];
        assert_eq!(p.push(&big), Err(LineTooLong));
    }

    #[test]
    fn ndjson_lines_across_chunks() {
        let text = "{\"a\":\"\u{4f60}\"}\r\n\n  \n{\"b\":2}\n{\"c\":3}";
        let bytes = text.as_bytes();
        for i in 0..bytes.len() {
            let mut p = NdjsonParser::new();
            let mut out = p.push(&bytes[..i]).unwrap();
            out.extend(p.push(&bytes[i..]).unwrap());
            out.extend(p.finish());
            assert_eq!(
                out,
                ["{\"a\":\"\u{4f60}\"}", "{\"b\":2}", "{\"c\":3}"],
                "split {i}"
            );
        }
    }
}
