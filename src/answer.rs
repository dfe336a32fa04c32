//! Answering: question → (translation) → retrieval → prompt → streamed answer →
//! cited sources. `ragmap ask` runs it once; `ragmap chat` keeps a history and
//! rewrites each follow-up into a standalone question first.

use std::time::{Duration, Instant};

use crate::config::{Config, Retrieve, RetrieveMode};
use crate::llm::{ChatBackend, ChatMessage, ChatOptions, LlmError};
use crate::prompt::{self, Budget, Language, Prompt, Source};
use crate::retrieve::{Hit, RetrieveError, Retriever};

/// Everything needed to answer, loaded once (model, index, backend).
pub struct Answerer<'c> {
    pub config: &'c Config,
    pub retriever: Retriever,
    pub backend: Box<dyn ChatBackend>,
    pub mode: RetrieveMode,
    /// Retrieval settings; `[retrieve]` of the config unless a caller (eval) varies them.
    pub settings: Retrieve,
    pub k: usize,
    /// Translate questions into the other language and retrieve with both.
    pub rewrite: bool,
}

/// Milliseconds from the start of `ask` to each step.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Timings {
    pub setup_ms: u64,
    pub first_request_ms: Option<u64>,
    pub retrieve_ms: u64,
    pub answer_request_ms: Option<u64>,
    pub first_token_ms: Option<u64>,
    pub total_ms: u64,
}

/// The retrieval half of an answer: what the model will be shown.
pub struct Prepared {
    pub question: String,
    /// The question in the other language, when rewriting succeeded.
    pub translated: Option<String>,
    pub hits: Vec<Hit>,
    pub prompt: Prompt,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl<'c> Answerer<'c> {
    pub fn new(
        config: &'c Config,
        retriever: Retriever,
        backend: Box<dyn ChatBackend>,
        mode: RetrieveMode,
        k: usize,
        rewrite: bool,
    ) -> Self {
        Answerer {
            config,
            retriever,
            backend,
            mode,
            settings: config.retrieve.clone(),
            k,
            rewrite,
        }
    }

    fn options(&self, max_tokens: Option<u32>, temperature: Option<f32>) -> ChatOptions {
        let mut o = ChatOptions::from_config(self.config);
        if max_tokens.is_some() {
            o.max_tokens = max_tokens;
        }
        if temperature.is_some() {
            o.temperature = temperature;
        }
        o
    }

    /// A short, non-streamed completion (translation, query rewriting).
    pub async fn complete(
        &self,
        system: &str,
        user: &str,
        max_tokens: u32,
    ) -> Result<String, LlmError> {
        let messages = [ChatMessage::system(system), ChatMessage::user(user)];
        let options = self.options(Some(max_tokens), Some(0.0));
        let mut sink = |_: &str| {};
        let outcome = self.backend.chat(&messages, &options, &mut sink).await?;
        Ok(clean_one_line(&outcome.text))
    }

    /// The question translated into the other language, for cross-language retrieval.
    pub async fn translate(&self, question: &str) -> Result<Option<String>, LlmError> {
        let (target, system) = match prompt::detect_language(question) {
            Language::Chinese => (
                "English",
                "Translate the user's question into English. Reply with the translation only.",
            ),
            Language::English => ("Chinese", "把用户的问题翻译成简体中文。只输出译文。"),
        };
        let text = self.complete(system, question, 96).await?;
        // A useful translation is non-empty, differs from the input, and is in the target language.
        let lang = prompt::detect_language(&text);
        let right_language = matches!(
            (target, lang),
            ("English", Language::English) | ("Chinese", Language::Chinese)
        );
        Ok((!text.is_empty() && text != question.trim() && right_language).then_some(text))
    }

    /// Retrieves for the question (and its translation) and builds the prompt.
    /// `question` is what the model answers, in the user's words; retrieval
    /// uses `search` (the question itself, or its standalone rewrite in a chat)
    /// and its translation.
    pub fn prepare(
        &mut self,
        question: &str,
        search: &str,
        translated: Option<String>,
    ) -> Result<Prepared, RetrieveError> {
        let mut queries = vec![search.to_string()];
        if let Some(t) = &translated {
            queries.push(t.clone());
        }
        let hits = self
            .retriever
            .search(&queries, self.mode, &self.settings, self.k)?;
        let hits = self.with_neighbours(hits);
        let budget = Budget {
            context_tokens: self.config.llm.context_tokens,
            answer_tokens: self.config.llm.max_answer_tokens,
        };
        let prompt = prompt::build(question, &hits, budget);
        Ok(Prepared {
            question: question.to_string(),
            translated,
            hits,
            prompt,
        })
    }

    /// Widens each hit with its neighbouring chunks so context is not cut mid-paragraph.
    fn with_neighbours(&self, hits: Vec<Hit>) -> Vec<Hit> {
        let radius = self.settings.neighbours as i64;
        if radius == 0 {
            return hits;
        }
        hits.into_iter()
            .map(|mut hit| {
                if let Ok(rows) = self.retriever.index.store.neighbours(
                    hit.chunk.doc_id,
                    hit.chunk.ordinal,
                    radius,
                ) {
                    if rows.len() > 1 {
                        hit.chunk.text = merge_overlapping(
                            rows.iter().map(|r| (r.start, r.end, r.text.as_str())),
                        );
                    }
                }
                hit
            })
            .collect()
    }

    /// Messages for the answer: system prompt, bounded history, then the prompt.
    pub fn messages(&self, prepared: &Prepared, history: &[ChatMessage]) -> Vec<ChatMessage> {
        let mut messages = vec![ChatMessage::system(prepared.prompt.system.clone())];
        messages.extend(history.iter().cloned());
        messages.push(ChatMessage::user(prepared.prompt.user.clone()));
        messages
    }

    pub fn answer_options(&self) -> ChatOptions {
        self.options(None, None)
    }

    /// The whole answer, not streamed (evaluation). On failure the error
    /// carries any partial text.
    pub async fn answer(&self, prepared: &Prepared) -> Result<String, LlmError> {
        let messages = self.messages(prepared, &[]);
        let mut sink = |_: &str| {};
        let outcome = self
            .backend
            .chat(&messages, &self.answer_options(), &mut sink)
            .await?;
        Ok(outcome.text)
    }

    /// Rewrites a follow-up into a standalone question using the conversation so far.
    /// Falls back to joining the previous question and the follow-up when the model fails.
    pub async fn standalone_question(
        &self,
        history: &[(String, String)],
        follow_up: &str,
    ) -> (String, bool) {
        if history.is_empty() {
            return (follow_up.to_string(), true);
        }
        let mut convo = String::new();
        for (q, a) in history.iter().rev().take(3).rev() {
            convo.push_str(&format!(
                "User: {q}\nAssistant: {}\n",
                truncate_chars(a, 300)
            ));
        }
        let user = format!(
            "Conversation:\n{convo}\nFollow-up: {follow_up}\n\nRewrite the follow-up as one standalone question that can be understood without the conversation. Keep its language. Reply with the question only."
        );
        match self
            .complete(
                "You rewrite follow-up questions into standalone search questions.",
                &user,
                96,
            )
            .await
        {
            Ok(q) if !q.is_empty() && q.chars().count() < 400 => (q, true),
            _ => {
                let last = history.last().map(|(q, _)| q.as_str()).unwrap_or("");
                (format!("{last} {follow_up}"), false)
            }
        }
    }
}

/// Joins neighbouring chunks whose byte ranges overlap without repeating the overlap.
fn merge_overlapping<'a>(rows: impl Iterator<Item = (i64, i64, &'a str)>) -> String {
    let mut out = String::new();
    let mut covered_to: i64 = -1;
    for (start, end, text) in rows {
        if covered_to < 0 || start >= covered_to {
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(text);
        } else if end > covered_to {
            let skip = (covered_to - start) as usize;
            let mut cut = skip.min(text.len());
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            out.push_str(&text[cut..]);
        }
        covered_to = covered_to.max(end);
    }
    out
}

fn clean_one_line(s: &str) -> String {
    let first = s.trim().lines().next().unwrap_or("");
    first
        .trim()
        .trim_matches(['"', '“', '”', '「', '」'])
        .trim()
        .to_string()
}

fn truncate_chars(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Sources an answer cited, in citation order; numbers that point nowhere are reported apart.
pub fn cited_sources<'p>(answer: &str, sources: &'p [Source]) -> (Vec<&'p Source>, Vec<usize>) {
    let mut cited = Vec::new();
    let mut invalid = Vec::new();
    for n in prompt::cited_numbers(answer) {
        match sources.iter().find(|s| s.number == n) {
            Some(s) => cited.push(s),
            None => invalid.push(n),
        }
    }
    (cited, invalid)
}

/// Timer for one `ask`.
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }
    pub fn ms(&self) -> u64 {
        ms(self.0.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_merge_without_repeating_overlap() {
        let text = "aaaa bbbb cccc dddd";
        let rows = [
            (0i64, 9i64, &text[0..9]),
            (5, 14, &text[5..14]),
            (10, 19, &text[10..19]),
        ];
        assert_eq!(merge_overlapping(rows.into_iter()), text);
        let apart = [(0i64, 4i64, "aaaa"), (10, 14, "cccc")];
        assert_eq!(merge_overlapping(apart.into_iter()), "aaaa\n\ncccc");
    }

    #[test]
    fn one_line_cleanup() {
        assert_eq!(clean_one_line("  \"What is RAG?\"\nextra"), "What is RAG?");
        assert_eq!(clean_one_line("「什么是RAG」"), "什么是RAG");
    }
}
