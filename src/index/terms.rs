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

/// What a chunk's full-text row holds, by field: BM25 weighs a match in
/// the page's title or URL above one in its body (see [`FieldWeights`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldTerms {
    pub title: String,
    pub url: String,
    pub heading: String,
    pub body: String,
}

impl FieldTerms {
    /// The index text of a chunk of the document titled `title` at `source`
    /// (its URL or corpus path), under `heading` (its heading path).
    pub fn of(title: &str, source: &str, heading: &str, body: &str) -> FieldTerms {
        FieldTerms {
            title: index_text(title),
            url: index_text(&url_words(source)),
            heading: index_text(heading),
            body: index_text(body),
        }
    }
}

/// BM25 weight of a match in each field (FTS5 column weights).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldWeights {
    pub title: f64,
    pub url: f64,
    pub heading: f64,
    pub body: f64,
}

impl Default for FieldWeights {
    fn default() -> Self {
        FieldWeights {
            title: 1.0,
            url: 1.0,
            heading: 1.0,
            body: 1.0,
        }
    }
}

/// The words of a URL or path: scheme dropped, percent-escapes decoded (so
/// `%E5%9B%BE%E8%A7%A3` reads 图解), separators turned into spaces. Page
/// URLs name the project, model or topic a page is about, often in the
/// other language than its text: `github.com/vllm-project/vllm`.
pub fn url_words(source: &str) -> String {
    let rest = source.split_once("://").map_or(source, |(_, r)| r);
    let decoded = percent_encoding::percent_decode_str(rest).decode_utf8_lossy();
    decoded
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect()
}

/// The names a question uses, as terms for matching page titles and URLs:
/// the Latin-script words of a Chinese question (libraries, models, papers,
/// commands: "vLLM", "GPT-3", "top_p"), and in other questions the words that
/// look like names (a capital or digit past the first letter, or a capital
/// not starting the sentence: "FastGPT", "Qwen-7B", "Dify"). A hyphenated
/// name also yields its parts joined ("GPT-3" → gpt, 3, gpt3), since titles
/// and URLs write it either way.
pub fn name_terms(question: &str) -> Vec<String> {
    let chinese = question.chars().any(is_cjk);
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut sentence_start = true;
    for raw in question.split(|c: char| c.is_whitespace() || is_cjk(c)) {
        let ends_sentence = raw
            .trim_end_matches(|c: char| "\"'”)）".contains(c))
            .ends_with(['.', '?', '!', '。', '？', '！']);
        let words = raw.split(|c: char| !(c.is_alphanumeric() || "-_.".contains(c)));
        for word in words {
            let word = word.trim_matches(|c: char| !c.is_alphanumeric());
            if word.is_empty() {
                continue;
            }
            let first = std::mem::replace(&mut sentence_start, false);
            if !(chinese || looks_like_name(word, first)) {
                continue;
            }
            let parts: Vec<String> = terms(word)
                .into_iter()
                .filter(|t| !STOPWORDS.contains(&t.as_str()))
                .collect();
            let joined = (parts.len() > 1).then(|| parts.concat());
            // A model's name without its version: InternLM3 is an InternLM.
            let unversioned: Vec<String> =
                parts.iter().filter_map(|p| without_version(p)).collect();
            // A bare number ("3" of GPT-3) names nothing on its own.
            let parts = parts
                .into_iter()
                .filter(|t| !t.chars().all(|c| c.is_ascii_digit()));
            for t in parts.chain(joined).chain(unversioned) {
                if seen.insert(t.clone()) {
                    out.push(t);
                }
            }
        }
        if ends_sentence {
            sentence_start = true;
        }
    }
    out
}

/// `internlm3` → `internlm`: a name of three or more letters followed by a
/// version number.
fn without_version(term: &str) -> Option<String> {
    let letters = term.trim_end_matches(|c: char| c.is_ascii_digit());
    (letters.len() < term.len()
        && letters.chars().count() >= 3
        && letters.chars().all(char::is_alphabetic))
    .then(|| letters.to_string())
}

/// A word of an English sentence that is probably a name: a capital or a
/// digit past its first letter ("FastGPT", "Qwen-7B", "GPU"), a leading
/// digit ("7B"), or a capital that does not start the sentence ("Dify").
pub fn looks_like_name(word: &str, starts_sentence: bool) -> bool {
    let mut chars = word.chars();
    let first = chars.next();
    let inner = chars.any(|c| c.is_uppercase() || c.is_ascii_digit());
    inner
        || first.is_some_and(|c| c.is_ascii_digit())
        || (first.is_some_and(char::is_uppercase) && !starts_sentence)
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
    fn url_words_decode_escapes_and_split_paths() {
        assert_eq!(
            index_text(&url_words(
                "http://127.0.0.1:8719/github.com/vllm-project/vllm/index.html"
            )),
            "127 0 0 1 8719 github com vllm project vllm index html"
        );
        let t = terms(&url_words(
            "https://x.io/%E5%9B%BE%E8%A7%A3transformer/C1/1.%20Ollama%20%E4%BB%8B%E7%BB%8D.html",
        ));
        for w in ["图解", "transformer", "ollama", "介绍"] {
            assert!(t.contains(&w.to_string()), "{t:?}");
        }
        // A corpus path has no scheme; a bad escape is kept as it is.
        assert_eq!(url_words("notes/my-notes.md"), "notes my notes md");
        assert_eq!(terms(&url_words("a%ZZb")), ["a", "zzb"]);
    }

    #[test]
    fn names_of_chinese_and_english_questions() {
        assert_eq!(
            name_terms("vLLM 用什么技术管理 KV cache？"),
            ["vllm", "kv", "cache"]
        );
        assert_eq!(
            name_terms("训练 GPT-3 估计花了多少 GPU 年"),
            ["gpt", "gpt3", "gpu"]
        );
        assert_eq!(
            name_terms("How many tokens was InternLM3 trained on?"),
            ["internlm3", "internlm"]
        );
        assert_eq!(
            name_terms("Which Postgres extension does FastGPT's docker deployment use?"),
            ["postgres", "fastgpt"]
        );
        assert_eq!(
            name_terms("What is the minimum GPU memory to fine-tune Qwen-7B? In Dify, how?"),
            ["gpu", "qwen", "7b", "qwen7b", "dify"]
        );
        assert!(name_terms("how does retrieval work?").is_empty());
        assert!(name_terms("什么是检索增强生成？").is_empty());
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
