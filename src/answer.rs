//! Answering, one way through: [`Answerer::prepare`] turns the user's words
//! (and the conversation so far) into a [`Query`] with the model's help,
//! asks a source of passages (a [`Retriever`], the server's workers, a
//! running server) for its passages and numbers them into a prompt; then
//! [`Answerer::answer`] streams the model's answer into a sink. `ragmap ask`,
//! `ragmap chat`, `ragmap eval --answers` and the server all take this way.
//!
//! [`Retriever`]: crate::retrieve::Retriever

use crate::config::Config;
use crate::llm::{self, ChatBackend, ChatMessage, ChatOptions, ChatOutcome, LlmError, TokenSink};
use crate::prompt::{self, Budget, Language, Prompt};
use crate::query::Query;
use crate::retrieve::Hit;

/// One earlier exchange of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub question: String,
    pub answer: String,
}

/// The chat model's side of answering: the backend and how to use it.
pub struct Answerer {
    backend: Box<dyn ChatBackend>,
    options: ChatOptions,
    budget: Budget,
    history_tokens: usize,
    /// Translate questions into the other language and retrieve with both.
    translate: bool,
}

/// A query built with the model's help, and whether the model was there.
pub struct Rewrite {
    pub query: Query,
    /// Nothing answered at the endpoint: answering would fail the same way,
    /// so the caller can fall back at once instead of waiting a second time.
    pub unreachable: Option<LlmError>,
    /// Requests that failed otherwise; the query went on without their form.
    pub failed_requests: usize,
}

/// What the model will be shown: the query, its passages, the prompt.
pub struct Prepared {
    pub query: Query,
    pub hits: Vec<Hit>,
    pub prompt: Prompt,
}

/// Where [`Answerer::prepare`] ended.
pub enum Preparation {
    /// The prompt, ready for the model.
    Ready(Prepared),
    /// No chat model answered while the question was prepared (rewritten,
    /// translated): answering would fail the same way, so the caller shows
    /// the passages (or reports the error) at once instead of waiting again.
    NoModel(Prepared, LlmError),
}

impl Prepared {
    /// Numbers `hits` into the prompt for the query's question, within `budget`.
    fn new(query: Query, hits: Vec<Hit>, budget: Budget) -> Prepared {
        let prompt = prompt::build(query.question(), &hits, budget);
        Prepared {
            query,
            hits,
            prompt,
        }
    }
}

impl Answerer {
    /// The backend `[llm]` configures; `translate` turns cross-language
    /// translation of questions on.
    pub fn from_config(config: &Config, translate: bool) -> Result<Answerer, LlmError> {
        Ok(Answerer {
            backend: llm::backend_from_config(config)?,
            options: ChatOptions::from_config(config),
            budget: Budget {
                context_tokens: config.llm.context_tokens,
                answer_tokens: config.llm.max_answer_tokens,
            },
            history_tokens: config.llm.history_tokens,
            translate,
        })
    }

    pub fn backend(&self) -> &dyn ChatBackend {
        self.backend.as_ref()
    }

    /// The prompt budget: the model's context window less its answer.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Whether [`Answerer::query`] asks the model for a translation.
    pub fn translates(&self) -> bool {
        self.translate
    }

    /// The query for `question`: with earlier turns, rewritten by the model into
    /// a standalone question (or, when the model fails, joined to the previous
    /// question); then translated into the other language when translation is
    /// on. A failure of either request only loses that form.
    pub async fn query(&self, history: &[Turn], question: &str) -> Rewrite {
        let mut query = Query::new(question);
        let mut unreachable = None;
        let mut failed_requests = 0;
        if !history.is_empty() {
            match self.standalone_question(history, query.question()).await {
                Ok(standalone) => query = query.with_search(standalone, true),
                Err(e) => {
                    let last = history.last().map_or("", |t| t.question.as_str());
                    let joined = format!("{last} {}", query.question());
                    query = query.with_search(joined, false);
                    failed_requests += usize::from(e.is_some());
                    unreachable = e.filter(LlmError::is_unreachable);
                }
            }
        }
        if self.translate && unreachable.is_none() {
            match self.translate(query.search()).await {
                Ok(translation) => query = query.with_translation(translation),
                Err(e) if e.is_unreachable() => unreachable = Some(e),
                Err(_) => failed_requests += 1,
            }
        }
        Rewrite {
            query,
            unreachable,
            failed_requests,
        }
    }

    /// The whole way to a prompt: the question, with the conversation so far,
    /// made into a query ([`Answerer::query`]), its passages from `passages`,
    /// numbered into a prompt within the budget.
    pub async fn prepare<E>(
        &self,
        history: &[Turn],
        question: &str,
        passages: impl AsyncFnOnce(&Query) -> Result<Vec<Hit>, E>,
    ) -> Result<Preparation, E> {
        let rewrite = self.query(history, question).await;
        let prepared = self.prepare_query(rewrite.query, passages).await?;
        Ok(match rewrite.unreachable {
            None => Preparation::Ready(prepared),
            Some(e) => Preparation::NoModel(prepared, e),
        })
    }

    /// The second half of [`Answerer::prepare`], for a query already made
    /// (evaluation makes each question's query once for several retrievals).
    pub async fn prepare_query<E>(
        &self,
        query: Query,
        passages: impl AsyncFnOnce(&Query) -> Result<Vec<Hit>, E>,
    ) -> Result<Prepared, E> {
        let hits = passages(&query).await?;
        Ok(Prepared::new(query, hits, self.budget))
    }

    /// The messages for the answer: system prompt, the most recent turns that
    /// fit `[llm] history_tokens`, then the prompt.
    pub fn messages(&self, prepared: &Prepared, history: &[Turn]) -> Vec<ChatMessage> {
        let mut messages = vec![ChatMessage::system(prepared.prompt.system.clone())];
        messages.extend(bounded_history(history, self.history_tokens));
        messages.push(ChatMessage::user(prepared.prompt.user.clone()));
        messages
    }

    /// Streams the answer to `sink` as it arrives. Dropping the future cancels
    /// the request; on failure the error carries any partial text.
    pub async fn answer(
        &self,
        prepared: &Prepared,
        history: &[Turn],
        sink: &mut TokenSink<'_>,
    ) -> Result<ChatOutcome, LlmError> {
        let messages = self.messages(prepared, history);
        self.backend.chat(&messages, &self.options, sink).await
    }

    /// A short, non-streamed completion at temperature 0 (translation, rewriting).
    async fn complete(
        &self,
        system: &str,
        user: &str,
        max_tokens: u32,
    ) -> Result<String, LlmError> {
        let messages = [ChatMessage::system(system), ChatMessage::user(user)];
        let options = ChatOptions {
            max_tokens: Some(max_tokens),
            temperature: Some(0.0),
            ..self.options.clone()
        };
        let mut sink = |_: &str| {};
        let outcome = self.backend.chat(&messages, &options, &mut sink).await?;
        Ok(clean_one_line(&outcome.text))
    }

    /// The question translated into the other language, for cross-language
    /// retrieval; `None` when the model's reply is not a usable translation.
    async fn translate(&self, question: &str) -> Result<Option<String>, LlmError> {
        let (target, system) = match prompt::detect_language(question) {
            Language::Chinese => (
                Language::English,
                "Translate the user's question into English. Reply with the translation only.",
            ),
            Language::English => (
                Language::Chinese,
                "把用户的问题翻译成简体中文。只输出译文。",
            ),
        };
        let text = self.complete(system, question, 96).await?;
        // A useful translation is non-empty, differs from the input, and is in the target language.
        let usable =
            !text.is_empty() && text != question.trim() && prompt::detect_language(&text) == target;
        Ok(usable.then_some(text))
    }

    /// The follow-up rewritten by the model into a standalone question. `Err`
    /// holds the request's error, or `None` when the reply was unusable.
    async fn standalone_question(
        &self,
        history: &[Turn],
        follow_up: &str,
    ) -> Result<String, Option<LlmError>> {
        let mut convo = String::new();
        for turn in history.iter().rev().take(3).rev() {
            convo.push_str(&format!(
                "User: {}\nAssistant: {}\n",
                turn.question,
                truncate_chars(&turn.answer, 300)
            ));
        }
        let user = format!(
            "Conversation:\n{convo}\nFollow-up: {follow_up}\n\nRewrite the follow-up as one standalone question that can be understood without the conversation. Keep its language. Reply with the question only."
        );
        let system = "You rewrite follow-up questions into standalone search questions.";
        match self.complete(system, &user, 96).await {
            Ok(q) if !q.is_empty() && q.chars().count() < 400 => Ok(q),
            Ok(_) => Err(None),
            Err(e) => Err(Some(e)),
        }
    }
}

/// The most recent turns that fit in `budget` tokens, oldest first.
fn bounded_history(history: &[Turn], budget: usize) -> Vec<ChatMessage> {
    let mut used = 0;
    let mut turns = Vec::new();
    for turn in history.iter().rev() {
        let cost =
            prompt::estimate_tokens(&turn.question) + prompt::estimate_tokens(&turn.answer) + 8;
        if used + cost > budget {
            break;
        }
        used += cost;
        turns.push(ChatMessage::assistant(turn.answer.clone()));
        turns.push(ChatMessage::user(turn.question.clone()));
    }
    turns.reverse();
    turns
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_cleanup() {
        assert_eq!(clean_one_line("  \"What is RAG?\"\nextra"), "What is RAG?");
        assert_eq!(clean_one_line("「什么是RAG」"), "什么是RAG");
    }

    #[test]
    fn history_keeps_the_latest_turns_that_fit() {
        let turn = |q: &str, a: &str| Turn {
            question: q.into(),
            answer: a.into(),
        };
        let history = [turn("first?", &"x".repeat(300)), turn("second?", "short")];
        let all = bounded_history(&history, 10_000);
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].content, "first?");
        let latest = bounded_history(&history, 40);
        assert_eq!(latest.len(), 2);
        assert_eq!(latest[0].content, "second?");
        assert_eq!(latest[1].content, "short");
        assert!(bounded_history(&history, 5).is_empty());
    }
}
