//! A guard on the answer stream: small local models fall into loops (the same
//! sentence again and again, or "1.1.1.2, 1.1.1.3, …" to the token limit).
//! [`chat_guarded`] watches the tokens as they arrive and stops the answer
//! the moment it repeats itself: the same line [`LINE_REPEATS`] times, or a
//! run of [`RUN_WORDS`] words [`RUN_REPEATS`] times. What came before stays
//! delivered; the error says what repeated.
//!
//! Words are what a reader counts: a run of letters or digits, or one CJK
//! ideograph (Chinese has no spaces, and an ideograph carries about a word).
//! Lines count when they hold at least [`LINE_MIN_WORDS`] words, so blank
//! lines, rules and code fences may repeat freely.

use std::collections::HashMap;

use super::{ChatBackend, ChatMessage, ChatOptions, ChatOutcome, LlmError, TokenSink};

/// The same line this many times stops the answer.
pub const LINE_REPEATS: usize = 3;
/// A run of this many words ...
pub const RUN_WORDS: usize = 8;
/// ... seen this many times stops the answer.
pub const RUN_REPEATS: usize = 4;
/// Shorter lines ("```", "---", "Yes.") may repeat.
const LINE_MIN_WORDS: usize = 3;

/// What repeated, for the one line that says why the answer stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repeated {
    Line(String),
    Run(String),
}

impl std::fmt::Display for Repeated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Repeated::Line(line) => write!(
                f,
                "the line {:?} came {LINE_REPEATS} times",
                super::http::truncate(line, 80)
            ),
            Repeated::Run(words) => write!(
                f,
                "the words {:?} came {RUN_REPEATS} times",
                super::http::truncate(words, 80)
            ),
        }
    }
}

/// Watches a stream of text for repetition; feed it every delta in order.
#[derive(Debug, Default)]
pub struct RepetitionGuard {
    /// The line being written.
    line: String,
    lines: HashMap<String, usize>,
    /// The word being written (letters and digits, lower case).
    word: String,
    /// Every finished word so far.
    words: Vec<String>,
    runs: HashMap<Vec<String>, usize>,
    tripped: Option<Repeated>,
}

impl RepetitionGuard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next delta; `Some` once the text has repeated itself (and
    /// from then on).
    pub fn push(&mut self, delta: &str) -> Option<&Repeated> {
        for c in delta.chars() {
            if self.tripped.is_some() {
                break;
            }
            self.char(c);
        }
        self.tripped.as_ref()
    }

    fn char(&mut self, c: char) {
        if c == '\n' {
            self.end_word();
            self.end_line();
            return;
        }
        self.line.push(c);
        if crate::lang::is_cjk(c) {
            self.end_word();
            self.word.push(c);
            self.end_word();
        } else if c.is_alphanumeric() {
            self.word.extend(c.to_lowercase());
        } else {
            self.end_word();
        }
    }

    fn end_word(&mut self) {
        if self.word.is_empty() {
            return;
        }
        self.words.push(std::mem::take(&mut self.word));
        if self.words.len() < RUN_WORDS {
            return;
        }
        let run = self.words[self.words.len() - RUN_WORDS..].to_vec();
        let seen = self.runs.entry(run).or_insert(0);
        *seen += 1;
        if *seen >= RUN_REPEATS {
            let words = self.words[self.words.len() - RUN_WORDS..].join(" ");
            self.tripped = Some(Repeated::Run(words));
        }
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let key = words_of(&line);
        if key.len() < LINE_MIN_WORDS || self.tripped.is_some() {
            return;
        }
        let seen = self.lines.entry(key.join(" ")).or_insert(0);
        *seen += 1;
        if *seen >= LINE_REPEATS {
            self.tripped = Some(Repeated::Line(line.trim().to_string()));
        }
    }
}

/// The words of a line, lower case: two lines that differ only in spacing,
/// case or punctuation are the same line.
fn words_of(line: &str) -> Vec<String> {
    let mut guard = RepetitionGuard::new();
    for c in line.chars() {
        guard.char(c);
    }
    guard.end_word();
    guard.words
}

/// [`ChatBackend::chat`] with a [`RepetitionGuard`] on the stream: the
/// answer stops (the request is dropped, so the server stops generating) as
/// soon as it repeats itself, with [`LlmError::Repetition`] holding what
/// came. `on_token` gets nothing after the repetition was seen.
pub async fn chat_guarded(
    backend: &dyn ChatBackend,
    messages: &[ChatMessage],
    options: &ChatOptions,
    on_token: &mut TokenSink<'_>,
) -> Result<ChatOutcome, LlmError> {
    let (tx, mut rx) = tokio::sync::oneshot::channel::<LlmError>();
    let mut tx = Some(tx);
    let mut guard = RepetitionGuard::new();
    let mut text = String::new();
    let mut watched = |delta: &str| {
        if tx.is_none() {
            return;
        }
        on_token(delta);
        text.push_str(delta);
        if let Some(what) = guard.push(delta) {
            let stopped = LlmError::Repetition {
                what: what.to_string(),
                partial: std::mem::take(&mut text),
            };
            if let Some(tx) = tx.take() {
                let _ = tx.send(stopped);
            }
        }
    };
    let result = tokio::select! {
        biased;
        Ok(stopped) = &mut rx => Err(stopped),
        result = backend.chat(messages, options, &mut watched) => result,
    };
    // The last chunk may have held both the repetition and the end.
    match rx.try_recv() {
        Ok(stopped) => Err(stopped),
        Err(_) => result,
    }
}

/// For replies that carry text rather than an exit code (the server's `/v1`
/// answers, MCP's `ask`): an answer the guard stopped becomes the text it
/// kept, with [`ChatOutcome::stopped`] saying what repeated; any other
/// result stays as it was. `started`: when the answer was asked for.
pub fn kept(
    result: Result<ChatOutcome, LlmError>,
    started: std::time::Instant,
) -> Result<ChatOutcome, LlmError> {
    match result {
        Err(LlmError::Repetition { what, partial }) => Ok(ChatOutcome {
            text: partial,
            finish_reason: None,
            usage: None,
            // Gone with the request the guard dropped.
            time_to_first_token: None,
            deltas: 0,
            elapsed: started.elapsed(),
            stopped: Some(what),
            removed_citations: Vec::new(),
        }),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(pieces: &[&str]) -> Option<Repeated> {
        let mut g = RepetitionGuard::new();
        let mut out = None;
        for p in pieces {
            out = g.push(p).cloned();
        }
        out
    }

    fn feed_text(text: &str) -> Option<Repeated> {
        // Token-sized pieces, as a server streams them.
        let chars: Vec<char> = text.chars().collect();
        let pieces: Vec<String> = chars.chunks(3).map(|c| c.iter().collect()).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        feed(&refs)
    }

    #[test]
    fn the_same_line_three_times_stops() {
        let line = "LoRA trains small adapter matrices [1].\n";
        assert_eq!(feed_text(&line.repeat(2)), None);
        let got = feed_text(&line.repeat(3));
        assert_eq!(
            got,
            Some(Repeated::Line(
                "LoRA trains small adapter matrices [1].".into()
            ))
        );
        // Spacing, case and punctuation do not make a line new.
        let varied = "LoRA trains small adapters.\nlora  trains small adapters\n- LoRA trains small adapters!\n";
        assert!(matches!(feed_text(varied), Some(Repeated::Line(_))));
    }

    #[test]
    fn short_lines_and_blank_lines_may_repeat() {
        let text = "```\ncode\n```\n\n---\n\n```\nmore\n```\n\n---\n\nYes.\nYes.\nYes.\n";
        assert_eq!(feed_text(text), None);
    }

    #[test]
    fn a_run_of_eight_words_four_times_stops_within_one_line() {
        let sentence = "The model answers the question from the retrieved passages. ";
        assert_eq!(feed_text(&sentence.repeat(3)), None);
        let got = feed_text(&sentence.repeat(5));
        assert!(matches!(got, Some(Repeated::Run(_))), "{got:?}");
    }

    #[test]
    fn chinese_counts_each_ideograph_as_a_word() {
        let loop_zh = "检索增强生成把相关段落交给模型。".repeat(4);
        assert!(matches!(feed_text(&loop_zh), Some(Repeated::Run(_))));
        // A long answer that reuses a term now and then is not a loop.
        let fine = "检索增强生成（RAG）先检索相关段落[1]。然后检索增强生成把段落放进提示词[2]。\
                    最后模型根据提示词回答，检索增强生成因此减少幻觉[3]。很多框架都支持检索增强生成。";
        assert_eq!(feed_text(fine), None);
    }

    #[test]
    fn a_normal_answer_passes() {
        let answer = "LoRA (low-rank adaptation) freezes the pretrained weights and trains two small \
                      matrices per layer [1]. Because only those matrices get gradients and optimizer \
                      state, fine-tuning needs far less GPU memory than full fine-tuning [2].\n\n\
                      - Full fine-tuning updates every weight.\n- LoRA updates well under 1 % of them [1].\n\
                      - QLoRA also quantizes the frozen weights to 4 bits [3].\n";
        assert_eq!(feed_text(answer), None);
    }

    #[test]
    fn numbered_outlines_that_differ_are_not_one_line() {
        let outline: String = (1..=20)
            .map(|i| format!("1.1.1.{i}, section {i}\n"))
            .collect();
        assert_eq!(feed_text(&outline), None);
    }

    #[test]
    fn messages_name_what_repeated_on_one_line() {
        let r = Repeated::Line("a \"quoted\" line".into());
        assert_eq!(
            r.to_string(),
            "the line \"a \\\"quoted\\\" line\" came 3 times"
        );
        let long = Repeated::Run("word ".repeat(100));
        assert!(long.to_string().chars().count() < 120);
    }
}
