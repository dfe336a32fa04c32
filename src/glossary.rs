//! The bilingual glossary (`data/glossary.txt`, plus the user's own file):
//! concepts named in Chinese and in English, so that a question written in one
//! language can search the lexical index in the other too.
//!
//! The small embedding model bridges languages only loosely, and BM25 not at
//! all: "量化需要多少显存" shares no term with an English page about
//! quantization. Expanding the question with the concept's names in the other
//! language gives such a page lexical evidence; retrieval weighs those terms
//! below the question's own ([`crate::config::Retrieve::expansion_weight`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::index::terms;
use crate::lang::is_cjk;

/// The glossary shipped with ragmap.
pub const BUILTIN: &str = include_str!("../data/glossary.txt");
const BUILTIN_NAME: &str = "data/glossary.txt (built in)";

#[derive(Debug, thiserror::Error)]
pub enum GlossaryError {
    #[error("cannot read glossary {path}: {source}; fix [retrieve] glossary in config.toml")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("glossary {origin} line {line}: {message}")]
    Line {
        origin: String,
        line: usize,
        message: String,
    },
}

/// One concept: its names written with Chinese characters, and the others.
#[derive(Debug, Clone)]
struct Concept {
    chinese: Vec<String>,
    latin: Vec<String>,
    /// Each name as the index's terms, joined by spaces (computed once:
    /// segmenting the Chinese ones takes jieba).
    chinese_terms: Vec<String>,
    latin_terms: Vec<String>,
}

/// A parsed glossary, ready to expand questions.
#[derive(Debug, Clone, Default)]
pub struct Glossary {
    concepts: Vec<Concept>,
    /// Chinese names (as written) with their concept, longest first so that
    /// "向量数据库" claims its characters before "数据库" could.
    chinese: Vec<(String, usize)>,
    /// Latin-script names as index terms ("fine-tuning" → [fine, tuning]),
    /// longest first, with their concept.
    latin: Vec<(Vec<String>, usize)>,
}

/// Where each name was defined, to report a name listed twice.
struct Seen {
    lines: std::collections::HashMap<String, (String, usize)>,
}

impl Glossary {
    /// The built-in glossary. It is checked by a test, so the empty fallback
    /// (no expansion) is never used in a release; it only keeps a broken
    /// build from panicking.
    pub fn builtin() -> &'static Glossary {
        static BUILT: OnceLock<Glossary> = OnceLock::new();
        BUILT.get_or_init(|| Glossary::parse(BUILTIN, BUILTIN_NAME).unwrap_or_default())
    }

    /// The built-in glossary extended with the lines of `extra`, when given.
    pub fn load(extra: Option<&Path>) -> Result<Glossary, GlossaryError> {
        let Some(path) = extra else {
            return Ok(Glossary::builtin().clone());
        };
        let text = std::fs::read_to_string(path).map_err(|source| GlossaryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut seen = Seen {
            lines: Default::default(),
        };
        let mut concepts = Vec::new();
        read_lines(BUILTIN, BUILTIN_NAME, &mut seen, &mut concepts)?;
        read_lines(&text, &path.display().to_string(), &mut seen, &mut concepts)?;
        Ok(Glossary::from_concepts(concepts))
    }

    /// Parses glossary text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Glossary, GlossaryError> {
        let mut seen = Seen {
            lines: Default::default(),
        };
        let mut concepts = Vec::new();
        read_lines(text, origin, &mut seen, &mut concepts)?;
        Ok(Glossary::from_concepts(concepts))
    }

    fn from_concepts(concepts: Vec<Concept>) -> Glossary {
        let mut chinese = Vec::new();
        let mut latin = Vec::new();
        for (i, c) in concepts.iter().enumerate() {
            chinese.extend(c.chinese.iter().map(|n| (n.to_lowercase(), i)));
            latin.extend(c.latin.iter().map(|n| (terms::terms(n), i)));
        }
        chinese.sort_by_key(|b| std::cmp::Reverse(b.0.chars().count()));
        latin.retain(|(t, _)| !t.is_empty());
        latin.sort_by_key(|b| std::cmp::Reverse(b.0.len()));
        Glossary {
            concepts,
            chinese,
            latin,
        }
    }

    /// Whether `term` (one index term, e.g. "llm") is by itself a name of a
    /// concept: a word of the field, not the name of a project or model.
    pub fn is_term(&self, term: &str) -> bool {
        self.latin
            .iter()
            .any(|(name, _)| name.len() == 1 && name[0] == term)
    }

    /// Concepts known.
    pub fn len(&self) -> usize {
        self.concepts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.concepts.is_empty()
    }

    /// The names, in the other language, of the concepts `question` names:
    /// the English names of a Chinese term found in it, the Chinese names of
    /// an English one. Each name once, in the order the concepts appear.
    pub fn expand(&self, question: &str) -> Vec<String> {
        self.expand_limited(question, usize::MAX)
    }

    /// [`Glossary::expand`] with at most `per_concept` names of each concept:
    /// the first ones its line lists, which name it most often.
    pub fn expand_limited(&self, question: &str, per_concept: usize) -> Vec<String> {
        self.pick(question, per_concept, |c, from_chinese| {
            if from_chinese {
                &c.latin
            } else {
                &c.chinese
            }
        })
    }

    /// [`Glossary::expand_limited`], each name as the index's terms joined by
    /// spaces ("fine-tuning" → "fine tuning").
    pub fn expand_terms(&self, question: &str, per_concept: usize) -> Vec<String> {
        self.pick(question, per_concept, |c, from_chinese| {
            if from_chinese {
                &c.latin_terms
            } else {
                &c.chinese_terms
            }
        })
    }

    /// Up to `per_concept` of `names(concept, named_in_chinese)` for each
    /// concept the question names, each once.
    fn pick(
        &self,
        question: &str,
        per_concept: usize,
        names: impl Fn(&Concept, bool) -> &Vec<String>,
    ) -> Vec<String> {
        let lower = question.to_lowercase();
        let mut by_chinese: Vec<usize> = Vec::new();
        let mut claimed: Vec<(usize, usize)> = Vec::new();
        for (name, concept) in &self.chinese {
            for (start, m) in lower.match_indices(name.as_str()) {
                let end = start + m.len();
                if claimed.iter().all(|&(s, e)| end <= s || start >= e) {
                    claimed.push((start, end));
                    by_chinese.push(*concept);
                }
            }
        }
        let words = latin_words(question);
        let mut by_latin: Vec<usize> = Vec::new();
        let mut taken = vec![false; words.len()];
        for (name, concept) in &self.latin {
            if name.len() > words.len() {
                continue;
            }
            for start in 0..=words.len() - name.len() {
                let span = start..start + name.len();
                if words[span.clone()] == name[..] && !taken[span.clone()].iter().any(|t| *t) {
                    taken[span].iter_mut().for_each(|t| *t = true);
                    by_latin.push(*concept);
                }
            }
        }
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut concepts: Vec<(usize, bool)> = by_chinese
            .iter()
            .map(|&c| (c, true))
            .chain(by_latin.iter().map(|&c| (c, false)))
            .collect();
        concepts.sort_unstable();
        concepts.dedup();
        for &(c, from_chinese) in &concepts {
            for n in names(&self.concepts[c], from_chinese)
                .iter()
                .take(per_concept)
            {
                if seen.insert(n.to_lowercase()) {
                    out.push(n.clone());
                }
            }
        }
        out
    }
}

/// The question's Latin-script words as index terms, in order; a Chinese run
/// in between ends a sequence, so "fine微调tuning" is not "fine tuning".
fn latin_words(question: &str) -> Vec<String> {
    let mut out = Vec::new();
    for run in question.split(|c: char| is_cjk(c)) {
        out.extend(terms::terms(run));
        // A separator no Latin name contains.
        out.push(String::new());
    }
    out
}

fn read_lines(
    text: &str,
    origin: &str,
    seen: &mut Seen,
    concepts: &mut Vec<Concept>,
) -> Result<(), GlossaryError> {
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |message: String| GlossaryError::Line {
            origin: origin.to_string(),
            line,
            message,
        };
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let names: Vec<&str> = raw.split('|').map(str::trim).collect();
        if names.iter().any(|n| n.is_empty()) {
            return Err(bad(
                "empty name; write the names separated by \"|\", e.g. 微调 | fine-tuning".into(),
            ));
        }
        let (chinese, latin): (Vec<&str>, Vec<&str>) =
            names.iter().partition(|n| n.chars().any(is_cjk));
        if chinese.is_empty() || latin.is_empty() {
            return Err(bad(format!(
                "{raw:?} needs a name with Chinese characters and one without, separated by \"|\", e.g. 微调 | fine-tuning"
            )));
        }
        if let Some(n) = chinese
            .iter()
            .find(|n| n.chars().filter(|c| is_cjk(*c)).count() < 2)
        {
            return Err(bad(format!(
                "{n:?} is a single Chinese character, which occurs inside too many words; use a word of two or more"
            )));
        }
        if let Some(n) = latin.iter().find(|n| terms::terms(n).is_empty()) {
            return Err(bad(format!("{n:?} holds no letters or digits")));
        }
        for n in &names {
            let key = n.to_lowercase();
            if let Some((first_origin, first_line)) = seen.lines.get(&key) {
                return Err(bad(format!(
                    "{n:?} is already listed at {first_origin} line {first_line}; a name belongs to one concept"
                )));
            }
            seen.lines.insert(key, (origin.to_string(), line));
        }
        let joined = |names: &[&str]| -> Vec<String> {
            names.iter().map(|n| terms::terms(n).join(" ")).collect()
        };
        concepts.push(Concept {
            chinese_terms: joined(&chinese),
            latin_terms: joined(&latin),
            chinese: chinese.iter().map(|n| n.to_string()).collect(),
            latin: latin.iter().map(|n| n.to_string()).collect(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glossary(text: &str) -> Glossary {
        Glossary::parse(text, "test").unwrap()
    }

    fn error(text: &str) -> String {
        Glossary::parse(text, "mine.txt").unwrap_err().to_string()
    }

    #[test]
    fn the_shipped_glossary_parses() {
        let g = Glossary::parse(BUILTIN, BUILTIN_NAME).unwrap();
        assert!(g.len() >= 300, "{} concepts", g.len());
        assert_eq!(Glossary::builtin().len(), g.len());
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        let cases = [
            (
                "# ok\n微调 | fine-tuning\n量化\n",
                3,
                "needs a name with Chinese characters",
            ),
            (
                "quantization | quantize\n",
                1,
                "needs a name with Chinese characters",
            ),
            (
                "微调 | fine-tuning\n\n量化 | | quantization\n",
                3,
                "empty name",
            ),
            ("树 | tree\n", 1, "single Chinese character"),
            (
                "微调 | fine-tuning\n精调 | Fine-Tuning\n",
                2,
                "already listed at mine.txt line 1",
            ),
            ("量化 | --\n", 1, "holds no letters"),
        ];
        for (text, line, message) in cases {
            let err = error(text);
            assert!(
                err.starts_with(&format!("glossary mine.txt line {line}: ")),
                "{text:?}: {err}"
            );
            assert!(err.contains(message), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn a_users_file_extends_the_builtin_one_and_is_checked_against_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine.txt");
        std::fs::write(&path, "# my terms\n炼丹 | model training alchemy\n").unwrap();
        let g = Glossary::load(Some(&path)).unwrap();
        assert_eq!(g.len(), Glossary::builtin().len() + 1);
        assert_eq!(g.expand("炼丹的技巧"), ["model training alchemy"]);
        assert!(g.expand("怎么微调").iter().any(|n| n == "fine-tuning"));

        std::fs::write(&path, "\n\n微调 | fine tuning\n").unwrap();
        let err = Glossary::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("mine.txt line 3"), "{err}");
        assert!(err.contains("already listed at data/glossary.txt"), "{err}");

        let missing = dir.path().join("absent.txt");
        let err = Glossary::load(Some(&missing)).unwrap_err().to_string();
        assert!(
            err.contains("absent.txt") && err.contains("[retrieve] glossary"),
            "{err}"
        );
    }

    #[test]
    fn chinese_terms_expand_to_english_and_back() {
        let g = glossary(
            "微调 | fine-tuning | finetune\n量化 | quantization\n向量数据库 | vector database\n数据库 | database\n",
        );
        assert_eq!(
            g.expand("LoRA 微调需要多少显存？"),
            ["fine-tuning", "finetune"]
        );
        assert_eq!(g.expand("How much memory does Fine-Tuning need?"), ["微调"]);
        assert_eq!(g.expand("what is a finetune"), ["微调"]);
        // Named in both languages: each side adds the other's names (the
        // caller drops those the question already has).
        assert_eq!(
            g.expand("微调 (fine-tuning) 和量化"),
            ["微调", "fine-tuning", "finetune", "quantization"]
        );
        // The longest name claims its characters: 向量数据库, not 数据库 as well.
        assert_eq!(g.expand("怎么选向量数据库"), ["vector database"]);
        assert_eq!(
            g.expand("数据库和向量数据库"),
            ["vector database", "database"]
        );
        assert!(g.expand("与本题无关的问题").is_empty());
    }

    #[test]
    fn expansion_can_keep_the_first_names_of_each_concept() {
        let g =
            glossary("生成 | generation | generate | generated\n微调 | fine-tuning | finetune\n");
        assert_eq!(
            g.expand_limited("微调后生成", 1),
            ["generation", "fine-tuning"]
        );
        assert_eq!(g.expand_limited("微调后生成", 2).len(), 4);
        assert_eq!(g.expand("微调后生成").len(), 5);
    }

    #[test]
    fn latin_names_match_whole_words_only() {
        let g = glossary("微调 | fine-tuning\n检索增强生成 | RAG\n");
        assert!(g.expand("refine tuning forks").is_empty());
        assert!(g.expand("a fine tuning-fork").len() == 1);
        assert!(g.expand("storage").is_empty());
        assert_eq!(g.expand("What is RAG?"), ["检索增强生成"]);
        // A Chinese run breaks a sequence of words.
        assert!(g.expand("fine微调tuning").len() <= 1);
        assert!(!g.expand("fine微调tuning").contains(&"微调".to_string()));
    }
}
