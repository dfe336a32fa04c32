//! Word segmentation for the lexical (BM25) index: jieba for Chinese, lower-cased
//! words for everything else, so that "检索增强生成" and "RAG" are both terms.

use std::sync::OnceLock;

use jieba_rs::Jieba;

use crate::lang::is_cjk;

fn jieba() -> &'static Jieba {
    static JIEBA: OnceLock<Jieba> = OnceLock::new();
    JIEBA.get_or_init(Jieba::new)
}

/// Loads jieba's dictionary now (a fifth of a second), so that a process
/// loading other things side by side does not pay for it at its first query.
pub fn warm_up() {
    jieba();
}

/// Very common words that would make every query match every chunk.
const STOPWORDS: &[&str] = &[
    "的", "了", "是", "在", "和", "与", "及", "或", "也", "就", "都", "而", "把", "被", "让", "对",
    "从", "到", "以", "为", "中", "上", "下", "这", "那", "个", "一个", "什么", "怎么", "如何",
    "哪些", "吗", "呢", "吧", "啊", "我", "你", "他", "她", "它", "我们", "你们", "有", "没有",
    "可以", "要", "会", "能", "请", "the", "a", "an", "of", "to", "in", "on", "for", "and", "or",
    "is", "are", "was", "be", "it", "this", "that", "with", "as", "by", "at", "what", "how", "why",
    "which", "do", "does", "i", "you", "can", "from",
];

/// Splits text into index terms. Chinese runs go through jieba's search-mode
/// segmentation (which also emits the shorter words inside long ones); other
/// runs are split on non-alphanumerics, keeping `_` so identifiers like
/// `max_tokens` stay whole.
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut run = String::new();
    let mut run_is_cjk = false;
    let flush = |run: &mut String, cjk: bool, out: &mut Vec<String>| {
        if run.is_empty() {
            return;
        }
        if cjk {
            out.extend(
                jieba()
                    .cut_for_search(run, true)
                    .into_iter()
                    .map(str::to_string),
            );
        } else {
            out.push(run.to_lowercase());
        }
        run.clear();
    };
    for c in text.chars() {
        let word_char = c.is_alphanumeric() || c == '_';
        if !word_char {
            flush(&mut run, run_is_cjk, &mut out);
            continue;
        }
        let cjk = is_cjk(c);
        if !run.is_empty() && cjk != run_is_cjk {
            flush(&mut run, run_is_cjk, &mut out);
        }
        run_is_cjk = cjk;
        run.push(c);
    }
    flush(&mut run, run_is_cjk, &mut out);
    out
}

/// The text stored in the full-text index: terms separated by spaces, so the
/// FTS tokenizer only has to split on whitespace.
pub fn index_text(text: &str) -> String {
    terms(text).join(" ")
}

/// The distinct non-stopword terms of a question, in order.
pub fn query_terms(question: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    terms(question)
        .into_iter()
        .filter(|t| !STOPWORDS.contains(&t.as_str()))
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

/// A term as an FTS5 string (a phrase when the FTS tokenizer splits it).
pub fn quote(term: &str) -> String {
    format!("\"{}\"", term.replace('"', "\"\""))
}

/// An FTS5 MATCH expression: the terms quoted and joined by OR (BM25 ranks
/// documents matching more and rarer terms first). `None` for no terms.
pub fn match_expr(terms: &[String]) -> Option<String> {
    let quoted: Vec<String> = terms.iter().map(|t| quote(t)).collect();
    (!quoted.is_empty()).then(|| quoted.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_chinese_segmentation_and_english_words() {
        let t = terms("RAG检索增强生成, max_tokens=320 与 LangChain");
        assert!(t.contains(&"rag".to_string()), "{t:?}");
        assert!(t.contains(&"检索".to_string()), "{t:?}");
        assert!(t.contains(&"max_tokens".to_string()), "{t:?}");
        assert!(t.contains(&"320".to_string()), "{t:?}");
        assert!(t.contains(&"langchain".to_string()), "{t:?}");
    }

    #[test]
    fn query_drops_stopwords_and_duplicates() {
        let match_query = |q: &str| match_expr(&query_terms(q));
        assert_eq!(
            match_query("什么是 RAG 的 RAG?").as_deref(),
            Some("\"rag\"")
        );
        assert_eq!(match_query("的 了 ?!"), None);
        assert_eq!(match_query("say \"hi\""), Some("\"say\" OR \"hi\"".into()));
    }
}
