//! Terminal hygiene for untrusted text (crawled pages, model answers): strips escape
//! sequences and control characters before anything reaches the terminal, so a page
//! or a model cannot move the cursor, rewrite the title, plant OSC 8 links, or
//! clear the screen.
//!
//! Removed: CSI sequences (`ESC [` … final byte, and the 8-bit `U+009B` form), string
//! sequences OSC/DCS/SOS/PM/APC (`ESC ]`, `ESC P`, `ESC X`, `ESC ^`, `ESC _` and their
//! C1 forms) up to BEL or ST, other `ESC` sequences, every other C0 control except
//! `\n` and `\t` (so `\r` goes too), DEL, and all C1 controls (U+0080–U+009F).
//!
//! A string sequence also ends at a newline (kept) or after [`MAX_STRING_SEQUENCE`]
//! characters: an unterminated OSC must not swallow the rest of an answer.

use std::borrow::Cow;

/// Longest OSC/DCS/… payload swallowed before giving up on finding its terminator.
pub const MAX_STRING_SEQUENCE: usize = 4096;

const ESC: char = '\u{1b}';
const BEL: char = '\u{07}';

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Ground,
    /// After ESC.
    Esc,
    /// After ESC and intermediate bytes (0x20–0x2F).
    EscIntermediate,
    /// Inside a control sequence, before its final byte.
    Csi,
    /// Inside an OSC/DCS/SOS/PM/APC payload.
    Str,
    /// An ESC inside a string payload: `\` makes it ST.
    StrEsc,
}

/// Sanitizes a stream of text pieces (e.g. model tokens). An escape sequence split
/// across pieces is removed as a whole: state carries over between calls.
#[derive(Debug, Default, Clone)]
pub struct StreamSanitizer {
    state: State,
    str_len: usize,
}

impl StreamSanitizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sanitizes the next piece; the result is safe to print at once.
    pub fn push(&mut self, piece: &str) -> String {
        let mut out = String::with_capacity(piece.len());
        self.push_into(piece, &mut out);
        out
    }

    /// Like [`push`](Self::push), appending to `out`.
    pub fn push_into(&mut self, piece: &str, out: &mut String) {
        for c in piece.chars() {
            self.feed(c, out);
        }
    }

    /// Ends the stream: an unfinished sequence is dropped, the state is reset.
    pub fn finish(&mut self) {
        *self = Self::default();
    }

    fn feed(&mut self, c: char, out: &mut String) {
        // A character not consumed (a sequence aborted or restarted) is looked at again.
        loop {
            let consumed = match self.state {
                State::Ground => {
                    match c {
                        '\n' | '\t' => out.push(c),
                        ESC => self.state = State::Esc,
                        '\u{9b}' => self.state = State::Csi,
                        '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => self.enter_str(),
                        c if is_control(c) => {}
                        c => out.push(c),
                    }
                    true
                }
                State::Esc => match c {
                    '[' => self.goto(State::Csi),
                    ']' | 'P' | 'X' | '^' | '_' => {
                        self.enter_str();
                        true
                    }
                    ESC => true,
                    '\u{20}'..='\u{2f}' => self.goto(State::EscIntermediate),
                    '\u{30}'..='\u{7e}' => self.goto(State::Ground),
                    _ => self.abort(),
                },
                State::EscIntermediate => match c {
                    '\u{20}'..='\u{2f}' => true,
                    '\u{30}'..='\u{7e}' => self.goto(State::Ground),
                    _ => self.abort(),
                },
                State::Csi => match c {
                    '\u{20}'..='\u{3f}' => true,
                    '\u{40}'..='\u{7e}' => self.goto(State::Ground),
                    _ => self.abort(),
                },
                State::Str => {
                    match c {
                        BEL | '\u{9c}' => self.state = State::Ground,
                        ESC => self.state = State::StrEsc,
                        '\n' => {
                            self.state = State::Ground;
                            out.push('\n');
                        }
                        _ => {
                            self.str_len += 1;
                            if self.str_len > MAX_STRING_SEQUENCE {
                                self.state = State::Ground;
                            }
                        }
                    }
                    true
                }
                State::StrEsc if c == '\\' => self.goto(State::Ground),
                // ESC followed by something else inside a string: a new escape sequence.
                State::StrEsc => {
                    self.state = State::Esc;
                    false
                }
            };
            if consumed {
                return;
            }
        }
    }

    /// Moves to `state`, consuming the character.
    fn goto(&mut self, state: State) -> bool {
        self.state = state;
        true
    }

    /// Abandons a malformed sequence; the character is reprocessed from Ground.
    fn abort(&mut self) -> bool {
        self.state = State::Ground;
        false
    }

    fn enter_str(&mut self) {
        self.state = State::Str;
        self.str_len = 0;
    }
}

/// C0 (except `\n`, `\t`), DEL and C1.
fn is_control(c: char) -> bool {
    (c < ' ' && c != '\n' && c != '\t') || ('\u{7f}'..='\u{9f}').contains(&c)
}

/// Strips escape sequences and control characters (see the module docs); borrows
/// when there is nothing to strip.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut s = StreamSanitizer::new();
    Cow::Owned(s.push(text))
}

/// An error and its causes on one line, "context: cause: root cause", safe to
/// print: a cause whose text an earlier part already holds is left out (many
/// errors repeat their source's message), line breaks become spaces, and escape
/// sequences and control characters go (a cause may quote a server or a page).
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = Some(err);
    while let Some(e) = cause {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = e.source();
    }
    sanitize(&parts.join(": ").replace('\n', " ")).into_owned()
}

/// The first `max_chars` of `text` on one line (white space runs become one space).
pub fn snippet(text: &str, max_chars: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max_chars {
        flat
    } else {
        let mut s: String = flat.chars().take(max_chars).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn error_chain_on_one_line_without_repeats_or_escapes() {
        let err = Layer(
            "cannot fetch x: connection refused",
            Some(Box::new(Layer(
                "connection refused",
                Some(Box::new(Layer("line one\nline \u{1b}[31mtwo", None))),
            ))),
        );
        assert_eq!(
            one_line(&err),
            "cannot fetch x: connection refused: line one line two"
        );
        assert_eq!(one_line(&Layer("alone", None)), "alone");
    }

    #[test]
    fn anyhow_context_chain_on_one_line() {
        let err =
            anyhow::Error::new(Layer("no such file", None)).context("cannot read config.toml");
        assert_eq!(one_line(&*err), "cannot read config.toml: no such file");
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let t = "Hello, 世界!\n\tindent — ok 😀";
        assert!(matches!(sanitize(t), Cow::Borrowed(s) if s == t));
    }

    #[test]
    fn csi_sequences_are_removed() {
        assert_eq!(sanitize("a\x1b[31mred\x1b[0m b"), "ared b");
        assert_eq!(sanitize("x\x1b[2J\x1b[H\x1b[?25ly"), "xy");
        assert_eq!(sanitize("c1\u{9b}31mcsi"), "c1csi");
    }

    #[test]
    fn osc_sequences_are_removed_with_either_terminator() {
        assert_eq!(sanitize("t\x1b]0;evil title\x07end"), "tend");
        assert_eq!(
            sanitize("\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\"),
            "click"
        );
        assert_eq!(sanitize("a\u{9d}2;x\u{9c}b"), "ab");
        assert_eq!(sanitize("d\x1bPq#0;1;2\x1b\\e"), "de");
    }

    #[test]
    fn unterminated_osc_stops_at_newline() {
        assert_eq!(sanitize("a\x1b]0;title\nrest"), "a\nrest");
    }

    #[test]
    fn unterminated_osc_gives_up_after_the_limit() {
        let long = "x".repeat(MAX_STRING_SEQUENCE + 10);
        let text = format!("\x1b]{long}");
        assert_eq!(sanitize(&text).len(), 9);
    }

    #[test]
    fn other_controls_are_removed_but_newline_and_tab_kept() {
        assert_eq!(
            sanitize("a\rb\x08c\x07d\x00e\x7ff\u{85}g\n\th"),
            "abcdefg\n\th"
        );
        assert_eq!(sanitize("a\x1b7b\x1b(Bc\x1bcd"), "abcd");
    }

    #[test]
    fn malformed_csi_is_aborted_and_following_text_kept() {
        assert_eq!(sanitize("a\x1b[12\nb"), "a\nb");
        assert_eq!(sanitize("a\x1b[1é"), "aé");
        assert_eq!(sanitize("a\x1b\x1b[1mb"), "ab");
        assert_eq!(sanitize("trailing\x1b"), "trailing");
    }

    #[test]
    fn streaming_handles_sequences_split_across_pieces() {
        let mut s = StreamSanitizer::new();
        let pieces = [
            "he",
            "llo \x1b",
            "[3",
            "1m",
            "red",
            "\x1b]0;ti",
            "tle\x1b",
            "\\",
            " done",
        ];
        let out: String = pieces.iter().map(|p| s.push(p)).collect();
        assert_eq!(out, "hello red done");
    }

    fn arbitrary_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-z \n\t]{0,8}",
            Just("\x1b".to_string()),
            Just("\x1b[".to_string()),
            Just("\x1b]".to_string()),
            Just("\x1bP".to_string()),
            Just("\x07".to_string()),
            Just("\x1b\\".to_string()),
            Just("\u{9b}".to_string()),
            Just("\u{9d}".to_string()),
            Just("\u{9c}".to_string()),
            "[0-9;?]{0,4}[@-~]?",
            any::<char>().prop_map(String::from),
            "\\PC{0,4}",
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
    }

    fn assert_clean(out: &str) {
        for c in out.chars() {
            assert!(!is_control(c), "control {c:?} in {out:?}");
        }
    }

    proptest! {
        #[test]
        fn output_never_contains_esc_c0_or_c1(text in arbitrary_text()) {
            assert_clean(&sanitize(&text));
        }

        #[test]
        fn streaming_equals_whole_for_any_split(text in arbitrary_text(), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            let whole = sanitize(&text).into_owned();
            let mut bounds: Vec<usize> = cuts
                .iter()
                .map(|c| c % (text.len() + 1))
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            bounds.push(0);
            bounds.push(text.len());
            bounds.sort_unstable();
            let mut s = StreamSanitizer::new();
            let mut out = String::new();
            for w in bounds.windows(2) {
                s.push_into(&text[w[0]..w[1]], &mut out);
            }
            prop_assert_eq!(out, whole);
        }

        #[test]
        fn text_without_controls_is_untouched(text in "\\PC*") {
            let clean: String = text.chars().filter(|&c| !is_control(c)).collect();
            prop_assert_eq!(sanitize(&clean), clean.as_str());
        }
    }
}
