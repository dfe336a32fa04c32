//! The question on its way through: the user's own words (what the model
//! answers), the form retrieval searches with (a chat follow-up rewritten to
//! stand alone), and that form translated into the other language. Retrieval
//! reads the forms, the prompt reads the question; nobody hands strings back.
//!
//! [`Query::new`] is a question as typed; [`crate::answer::Answerer::query`]
//! builds the rewritten and translated forms with the chat model.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    question: String,
    search: String,
    /// The model rewrote a follow-up into `search` (not merely joined it to
    /// the previous question).
    rewritten: bool,
    translation: Option<String>,
}

impl Query {
    /// A question searched as typed.
    pub fn new(question: &str) -> Query {
        let question = question.trim().to_string();
        Query {
            search: question.clone(),
            question,
            rewritten: false,
            translation: None,
        }
    }

    /// Searches with `search` instead of the question; `rewritten` when the
    /// model wrote it.
    pub fn with_search(mut self, search: String, rewritten: bool) -> Query {
        self.search = search;
        self.rewritten = rewritten;
        self
    }

    pub fn with_translation(mut self, translation: Option<String>) -> Query {
        self.translation = translation;
        self
    }

    /// The user's words: what the model is asked to answer.
    pub fn question(&self) -> &str {
        &self.question
    }

    /// The standalone form retrieval starts from.
    pub fn search(&self) -> &str {
        &self.search
    }

    /// The search form in the other language, when translating succeeded.
    pub fn translation(&self) -> Option<&str> {
        self.translation.as_deref()
    }

    /// The model's standalone rewrite, when it differs from the question: worth
    /// showing the user, since it is what was searched for.
    pub fn rewritten_search(&self) -> Option<&str> {
        (self.rewritten && self.search != self.question).then_some(self.search.as_str())
    }

    /// Every form retrieval searches with: the search form, then its translation.
    pub fn forms(&self) -> Vec<&str> {
        std::iter::once(self.search.as_str())
            .chain(self.translation.as_deref())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_question_is_its_own_search_form() {
        let q = Query::new("  什么是 RAG？ ");
        assert_eq!(q.question(), "什么是 RAG？");
        assert_eq!(q.forms(), vec!["什么是 RAG？"]);
        assert_eq!(q.rewritten_search(), None);
    }

    #[test]
    fn forms_are_the_search_form_then_its_translation() {
        let q = Query::new("and its cost?")
            .with_search("what does LoRA cost?".into(), true)
            .with_translation(Some("LoRA 的成本是多少？".into()));
        assert_eq!(q.question(), "and its cost?");
        assert_eq!(
            q.forms(),
            vec!["what does LoRA cost?", "LoRA 的成本是多少？"]
        );
        assert_eq!(q.rewritten_search(), Some("what does LoRA cost?"));
    }

    #[test]
    fn a_joined_fallback_is_searched_but_not_shown() {
        let q = Query::new("why?").with_search("what is RAG why?".into(), false);
        assert_eq!(q.search(), "what is RAG why?");
        assert_eq!(q.rewritten_search(), None);
    }
}
