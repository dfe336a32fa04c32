//! The question file: one JSON object a line, checked on load.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::metrics::normalize;
use super::EvalError;
use crate::prompt::{detect_language, Language};

/// One line of the question file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub id: String,
    pub question: String,
    pub gold: Vec<String>,
    #[serde(default)]
    pub answer_keywords: Vec<String>,
    #[serde(default)]
    pub lang: Option<String>,
    #[serde(default)]
    pub cross_language: bool,
}

impl Question {
    /// `zh` or `en`: as given, else detected from the question text.
    pub fn language(&self) -> &str {
        match self.lang.as_deref() {
            Some(l) => l,
            None => language_code(detect_language(&self.question)),
        }
    }
}

pub(crate) fn language_code(language: Language) -> &'static str {
    match language {
        Language::Chinese => "zh",
        Language::English => "en",
    }
}

/// Reads a question file; any bad line is an error naming `file:line`.
pub fn load_questions(path: &Path) -> Result<Vec<Question>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut questions: Vec<Question> = Vec::new();
    let mut ids: HashSet<String> = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |message: String| EvalError::Line {
            path: path.to_path_buf(),
            line,
            message,
        };
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let q: Question = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
        if q.id.trim().is_empty() {
            return Err(bad("empty \"id\"".into()));
        }
        if !ids.insert(q.id.clone()) {
            return Err(bad(format!("duplicate id {:?}", q.id)));
        }
        if q.question.trim().is_empty() {
            return Err(bad("empty \"question\"".into()));
        }
        if q.gold.is_empty() {
            return Err(bad(
                "empty \"gold\": list at least one URL or corpus path".into()
            ));
        }
        if let Some(g) = q.gold.iter().find(|g| normalize(g).is_empty()) {
            return Err(bad(format!("gold entry {g:?} names no document")));
        }
        if let Some(l) = q.lang.as_deref() {
            if l != "zh" && l != "en" {
                return Err(bad(format!("\"lang\" must be \"zh\" or \"en\", not {l:?}")));
            }
        }
        questions.push(q);
    }
    if questions.is_empty() {
        return Err(EvalError::NoQuestions(path.to_path_buf()));
    }
    Ok(questions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn loads_questions_and_names_bad_lines() {
        let (_d, p) = write(
            "{\"id\":\"1\",\"question\":\"什么是RAG？\",\"gold\":[\"a.com/x\"]}\n\n{\"id\":\"2\",\"question\":\"What is LoRA?\",\"gold\":[\"b.com\"],\"lang\":\"zh\",\"cross_language\":true,\"answer_keywords\":[\"rank\"]}\n",
        );
        let qs = load_questions(&p).unwrap();
        assert_eq!(qs.len(), 2);
        assert_eq!(qs[0].language(), "zh");
        assert_eq!(qs[1].language(), "zh");
        assert!(qs[1].cross_language);

        for (text, line, needle) in [
            ("{\"id\":\"1\",\"question\":\"q\",\"gold\":[\"a\"]}\nnot json\n", 2, "expected"),
            ("{\"id\":\"1\",\"question\":\"q\",\"gold\":[]}\n", 1, "empty \"gold\""),
            ("{\"id\":\"1\",\"question\":\"q\"}\n", 1, "gold"),
            ("{\"id\":\"1\",\"question\":\" \",\"gold\":[\"a\"]}\n", 1, "question"),
            ("{\"id\":\"1\",\"question\":\"q\",\"gold\":[\"a\"],\"lang\":\"fr\"}\n", 1, "lang"),
            ("{\"id\":\"1\",\"question\":\"q\",\"gold\":[\"a\"]}\n{\"id\":\"1\",\"question\":\"q\",\"gold\":[\"a\"]}\n", 2, "duplicate"),
            ("{\"id\":\"1\",\"question\":\"q\",\"gold\":[\"a\"],\"extra\":1}\n", 1, "extra"),
            ("{\"id\":\"1\",\"question\":\"q\",\"gold\":[\"https://\"]}\n", 1, "names no document"),
        ] {
            let (_d, p) = write(text);
            let err = load_questions(&p).unwrap_err().to_string();
            let prefix = format!("{}:{line}: ", p.display());
            assert!(err.starts_with(&prefix), "{err}");
            assert!(err.contains(needle), "{err}");
        }
        let (_d, p) = write("\n\n");
        assert!(matches!(load_questions(&p), Err(EvalError::NoQuestions(_))));
    }
}
