//! Answering, one way through: [`Answerer::prepare`] turns the user's words
//! (and the conversation so far) into a [`Query`] with the model's help,
//! asks a source of passages (a [`Retriever`], the server's workers, a
//! running server) for its passages and numbers them into a prompt; then
//! [`Answerer::answer`] streams the model's answer into a sink. `ragmap ask`,
//! `ragmap chat`, `ragmap eval --answers` and the server all take this way.
//!
//! [`Retriever`]: crate::retrieve::Retriever

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::cite::CitationFilter;
use crate::config::Config;
use crate::index::terms;
use crate::llm::{
    self, ChatBackend, ChatMessage, ChatOptions, ChatOutcome, LlmError, ModelInfo, Sampling,
    TokenSink,
};
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
    /// `[llm] context_tokens` and `max_answer_tokens`.
    budget: Budget,
    history_tokens: usize,
    /// Translate questions into the other language and retrieve with both.
    translate: bool,
    /// The user's `[llm]` sampling, when set (else the defaults for the server).
    sampling: Option<Sampling>,
    /// What the server says about the model, asked once for the process
    /// (for `serve`, the server's lifetime).
    model: tokio::sync::OnceCell<ModelInfo>,
    /// The context a server's refusal taught, in estimated tokens (0: none).
    refused_at: AtomicUsize,
}

/// The longest ragmap waits for the server to describe its model.
const MODEL_INFO_TIMEOUT: Duration = Duration::from_secs(3);

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
            sampling: Sampling::configured(config),
            model: tokio::sync::OnceCell::new(),
            refused_at: AtomicUsize::new(0),
        })
    }

    pub fn backend(&self) -> &dyn ChatBackend {
        self.backend.as_ref()
    }

    /// What the server says about the model (asked on first use, then kept).
    pub async fn model_info(&self) -> &ModelInfo {
        self.model
            .get_or_init(|| async {
                let model = &self.options.model;
                (self.backend.model_info(model, MODEL_INFO_TIMEOUT).await).unwrap_or_default()
            })
            .await
    }

    /// The prompt budget: the smallest of `[llm] context_tokens`, the
    /// context the server says it has, and one it refused at; less the
    /// answer (at most half of it).
    pub async fn budget(&self) -> Budget {
        self.model_info().await;
        self.budget_now()
    }

    fn budget_now(&self) -> Budget {
        let mut context = self.budget.context_tokens;
        if let Some(n) = self.model.get().and_then(|m| m.context_tokens) {
            context = context.min(n);
        }
        match self.refused_at.load(Ordering::Relaxed) {
            0 => {}
            n => context = context.min(n),
        }
        Budget {
            context_tokens: context,
            answer_tokens: self.budget.answer_tokens.min(context / 2),
        }
    }

    /// The request options for the server as it described itself: its
    /// context as Ollama's `num_ctx`, the answer's tokens, the sampling.
    async fn options(&self) -> ChatOptions {
        let info = self.model_info().await;
        let budget = self.budget_now();
        ChatOptions {
            context_tokens: u32::try_from(budget.context_tokens).ok(),
            max_tokens: u32::try_from(budget.answer_tokens).ok().filter(|&n| n > 0),
            sampling: self
                .sampling
                .unwrap_or_else(|| Sampling::defaults_for(info)),
            ..self.options.clone()
        }
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
        if unreachable.is_some() {
            // Nothing to ask about the model either.
            let _ = self.model.set(ModelInfo::default());
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
        let budget = self.budget().await;
        Ok(Prepared::new(query, hits, budget))
    }

    /// The messages for the answer: system prompt, the most recent turns that
    /// fit `[llm] history_tokens` and the room the prompt leaves in the
    /// context, then the prompt.
    pub fn messages(&self, prepared: &Prepared, history: &[Turn]) -> Vec<ChatMessage> {
        let room = self
            .budget_now()
            .room_beside(prepared.prompt.estimated_tokens);
        let mut messages = vec![ChatMessage::system(prepared.prompt.system.clone())];
        messages.extend(bounded_history(history, self.history_tokens.min(room)));
        messages.push(ChatMessage::user(prepared.prompt.user.clone()));
        messages
    }

    /// Streams the answer to `sink` as it arrives, stopping it if it keeps
    /// repeating itself ([`llm::guard`]). A server that refuses the prompt
    /// as too long gets it once more, fitted to the context it names (one
    /// line on stderr says so), and `prepared` becomes that refitted prompt:
    /// the sources listed and cited afterwards are the passages the model
    /// was shown. Dropping the future cancels the request; on failure the
    /// error carries any partial text.
    pub async fn answer(
        &self,
        prepared: &mut Prepared,
        history: &[Turn],
        sink: &mut TokenSink<'_>,
    ) -> Result<ChatOutcome, LlmError> {
        let options = self.options().await;
        let messages = self.messages(prepared, history);
        let first = self.stream(&messages, &options, prepared, sink).await;
        let Err(LlmError::ContextExceeded {
            prompt_tokens,
            context_tokens,
            ..
        }) = &first
        else {
            return first;
        };
        let estimated = prompt::estimate_messages(&messages);
        let said = llm::Refusal {
            context_tokens: context_tokens.and_then(|n| usize::try_from(n).ok()),
            prompt_tokens: prompt_tokens.and_then(|n| usize::try_from(n).ok()),
        };
        let refit = self.budget_now().refit(said, estimated);
        self.refused_at
            .store(refit.context_tokens, Ordering::Relaxed);
        eprintln!(
            "ragmap: the server refused the prompt as too long for its context{}; asking again with the prompt fitted to {} tokens",
            said.context_tokens.map(|n| format!(" ({n} tokens)")).unwrap_or_default(),
            refit.context_tokens
        );
        *prepared = Prepared::new(
            prepared.query.clone(),
            std::mem::take(&mut prepared.hits),
            self.budget_now(),
        );
        let messages = self.messages(prepared, history);
        let options = self.options().await;
        self.stream(&messages, &options, prepared, sink).await
    }

    /// One request for the answer, through the loop guard, with citations
    /// of no source taken out on the way to `sink` ([`CitationFilter`]):
    /// the outcome's (or the error's) text is what `sink` received.
    async fn stream(
        &self,
        messages: &[ChatMessage],
        options: &ChatOptions,
        prepared: &Prepared,
        sink: &mut TokenSink<'_>,
    ) -> Result<ChatOutcome, LlmError> {
        let mut filter = CitationFilter::new(prepared.prompt.sources.len());
        let mut filtered = |delta: &str| {
            let shown = filter.push(delta);
            if !shown.is_empty() {
                sink(&shown);
            }
        };
        let result =
            llm::guard::chat_guarded(self.backend.as_ref(), messages, options, &mut filtered).await;
        let rest = filter.finish();
        if !rest.is_empty() {
            sink(&rest);
        }
        match result {
            Ok(outcome) => Ok(ChatOutcome {
                text: filter.shown().to_string(),
                removed_citations: filter.removed().to_vec(),
                ..outcome
            }),
            Err(e) => Err(e.with_partial(filter.shown())),
        }
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
            ..self.options().await
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
        Ok(usable_translation(question, &text, target).then_some(text))
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

/// Whether a model's reply can stand for the question in the other
/// language: non-empty, not the question again, in the target language, not
/// far longer than a translation runs, and keeping the question's names
/// (`LoRA`, `GPT-4`, `vLLM`). A small model asked to translate
/// "LoRA 是什么？" may tell a story about laundry instead, and retrieving
/// with that would crowd the real passages out.
fn usable_translation(question: &str, text: &str, target: Language) -> bool {
    let question = question.trim();
    let longest = 4 * question.chars().count() + 40;
    let text_lower = text.to_lowercase();
    !text.is_empty()
        && text != question
        && prompt::detect_language(text) == target
        && text.chars().count() <= longest
        && names(question).all(|name| text_lower.contains(&name.to_lowercase()))
}

/// The words of a text that are names whatever their place in a sentence
/// (`LoRA`, `RAG`, `GPT`, `vLLM`, `Qwen2`, `7B`), which a translation keeps
/// as written; a bare number ("4" of GPT-4) names nothing on its own.
fn names(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.bytes().all(|b| b.is_ascii_digit()))
        .filter(|word| terms::looks_like_name(word, true))
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
    fn a_translation_keeps_the_names_and_the_length_of_a_translation() {
        let zh = "LoRA 是什么？为什么它比全参数微调更省资源？";
        let good = "What is LoRA and why does it save more resources than full fine-tuning?";
        assert!(usable_translation(zh, good, Language::English));
        // Names may change case.
        assert!(usable_translation(
            zh,
            "What is LORA, and why is it cheaper?",
            Language::English
        ));
        // A story instead of a translation: the name is lost and it runs long.
        let story = "Lao: a Chinese term that refers to laundry or dressing, which originates from the word for washing and has been used in many contexts throughout history.";
        assert!(!usable_translation(zh, story, Language::English));
        assert!(!usable_translation(
            zh,
            &format!("LoRA {story}{story}"),
            Language::English
        ));
        // Not translated, or into the wrong language.
        assert!(!usable_translation(zh, zh, Language::English));
        assert!(!usable_translation(zh, "", Language::English));
        assert!(!usable_translation(
            "What is RAG?",
            "What is RAG?",
            Language::Chinese
        ));
        assert!(usable_translation(
            "What is RAG in vLLM?",
            "vLLM 中的 RAG 是什么？",
            Language::Chinese
        ));
        assert!(!usable_translation(
            "What is RAG in vLLM?",
            "什么是检索增强？",
            Language::Chinese
        ));
        assert_eq!(
            names("Why GPT-4, vLLM and Qwen2 beat What Is").collect::<Vec<_>>(),
            ["GPT", "vLLM", "Qwen2"]
        );
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
