//! Answer scores: keyword coverage, citations and their validity, gold
//! documents cited, the answer's language.

use serde::Serialize;

use super::metrics::{matches, RankedDoc};
use super::questions::{language_code, Question};
use crate::cite::Citations;
use crate::prompt::{detect_language, Source};

/// One answer, as the model gave it and as scored.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerResult {
    pub text: String,
    /// The model's error, when the answer failed (the text is what arrived before it).
    pub error: Option<String>,
    /// The stream guard stopped the answer because it kept repeating itself
    /// (`error` says what repeated).
    pub looped: bool,
    pub ms: u64,
    #[serde(flatten)]
    pub scores: AnswerScores,
}

/// What one answer is scored on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnswerScores {
    /// Share of the question's keywords found in the answer; `None` when it lists none.
    pub keyword_coverage: Option<f64>,
    pub keywords_missing: Vec<String>,
    /// Every `[n]` the model wrote, in order (those of no source, which the
    /// reader never saw, last).
    pub citations: Vec<usize>,
    /// Cited numbers that are not a source of the prompt (taken out of the
    /// answer as shown).
    pub invalid_citations: Vec<usize>,
    /// A cited source is a gold document.
    pub cites_gold: bool,
    /// A gold document is among the prompt's sources: the most `cites_gold` can be.
    pub gold_in_context: bool,
    /// The answer is written in the question's language (zh or en).
    pub in_question_language: bool,
}

/// Scores an answer against the sources its prompt numbered and the
/// question's gold documents, keywords and language. `removed`: the
/// citations of no source taken out of the answer before it was shown
/// ([`crate::cite::CitationFilter`]); the scores are of what the model wrote.
pub fn score_answer(
    answer: &str,
    removed: &[usize],
    sources: &[Source],
    question: &Question,
) -> AnswerScores {
    let (gold, keywords) = (&question.gold, &question.answer_keywords);
    let is_gold = |s: &Source| {
        let doc = RankedDoc {
            source: s.location.clone(),
            path: s.path.clone(),
            title: s.title.clone(),
        };
        gold.iter().any(|g| matches(&doc, g))
    };
    let citations = Citations::of(answer, sources).with_removed(removed);
    let folded = fold_for_match(answer);
    let keywords_missing: Vec<String> = keywords
        .iter()
        .filter(|k| !folded.contains(&fold_for_match(k)))
        .cloned()
        .collect();
    let keyword_coverage = (!keywords.is_empty())
        .then(|| (keywords.len() - keywords_missing.len()) as f64 / keywords.len() as f64);
    AnswerScores {
        keyword_coverage,
        keywords_missing,
        cites_gold: citations.cited.iter().any(|s| is_gold(s)),
        citations: citations.numbers,
        invalid_citations: citations.invalid,
        gold_in_context: sources.iter().any(is_gold),
        in_question_language: !answer.trim().is_empty()
            && language_code(detect_language(answer)) == question.language(),
    }
}

/// Lower case, full-width ASCII as ASCII, no white space: `6 GB`, `６GB` and
/// `6gb` match.
fn fold_for_match(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            _ => c,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// Mean answer scores over a set of questions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AnswerMetrics {
    pub questions: usize,
    /// Answers the model failed to finish, loops aside (scored on what arrived).
    pub failed: usize,
    /// Share of answers the stream guard stopped because they kept repeating
    /// themselves (scored on what came before).
    pub looping: f64,
    /// Mean over the questions that list keywords.
    pub keyword_coverage: Option<f64>,
    /// Share of answers citing at least one `[n]`.
    pub citing: f64,
    /// Share of citing answers whose every `[n]` is a source of the prompt.
    pub citations_valid: Option<f64>,
    /// Share of answers citing a gold document.
    pub cites_gold: f64,
    /// Share of prompts holding a gold document.
    pub gold_in_context: f64,
    /// Share of answers written in the question's language.
    pub in_question_language: f64,
}

pub fn mean_answers(answers: &[&AnswerResult]) -> AnswerMetrics {
    let n = answers.len();
    if n == 0 {
        return AnswerMetrics::default();
    }
    let share = |count: usize, of: usize| (of > 0).then(|| count as f64 / of as f64);
    let coverages: Vec<f64> = answers
        .iter()
        .filter_map(|a| a.scores.keyword_coverage)
        .collect();
    let citing: Vec<&&AnswerResult> = answers
        .iter()
        .filter(|a| !a.scores.citations.is_empty())
        .collect();
    let valid = citing
        .iter()
        .filter(|a| a.scores.invalid_citations.is_empty())
        .count();
    AnswerMetrics {
        questions: n,
        failed: answers
            .iter()
            .filter(|a| a.error.is_some() && !a.looped)
            .count(),
        looping: answers.iter().filter(|a| a.looped).count() as f64 / n as f64,
        keyword_coverage: (!coverages.is_empty())
            .then(|| coverages.iter().sum::<f64>() / coverages.len() as f64),
        citing: citing.len() as f64 / n as f64,
        citations_valid: share(valid, citing.len()),
        cites_gold: answers.iter().filter(|a| a.scores.cites_gold).count() as f64 / n as f64,
        gold_in_context: answers.iter().filter(|a| a.scores.gold_in_context).count() as f64
            / n as f64,
        in_question_language: answers
            .iter()
            .filter(|a| a.scores.in_question_language)
            .count() as f64
            / n as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::testing::*;
    fn source(number: usize, location: &str, path: &str) -> Source {
        Source {
            number,
            title: format!("title {number}"),
            location: location.to_string(),
            heading: String::new(),
            text: String::new(),
            chunk_id: number as i64,
            path: path.to_string(),
        }
    }

    fn question(text: &str, golds: &[&str], keywords: &[&str]) -> Question {
        Question {
            id: "q".into(),
            question: text.into(),
            gold: gold(golds),
            answer_keywords: keywords.iter().map(|s| s.to_string()).collect(),
            lang: None,
            cross_language: false,
        }
    }

    #[test]
    fn answer_scores_keywords_citations_gold_and_language() {
        let sources = [source(1, A, "web/a.md"), source(2, B, "web/b.md")];
        let q = question(
            "How does vLLM manage memory?",
            &["a.com/x/index.html"],
            &["pagedattention", "KV cache"],
        );
        let s = score_answer(
            "vLLM uses PagedAttention [2]; see also [2, 5].",
            &[],
            &sources,
            &q,
        );
        assert_eq!(s.keyword_coverage, Some(0.5));
        assert_eq!(s.keywords_missing, ["KV cache"]);
        assert_eq!(s.citations, [2, 5]);
        assert_eq!(s.invalid_citations, [5]);
        assert!(!s.cites_gold, "[2] is b.com, not the gold");
        assert!(s.gold_in_context);
        assert!(s.in_question_language);

        // Citing the gold by its corpus path; no keywords listed; a Chinese
        // answer to an English question.
        let q = question("What is the answer?", &["corpus/web/a.md"], &[]);
        let s = score_answer("答案见[1]。", &[], &sources, &q);
        assert_eq!(s.keyword_coverage, None);
        assert!(s.cites_gold && s.invalid_citations.is_empty());
        assert!(!s.in_question_language);

        // Full-width letters, case and spaces do not hide a keyword.
        let q = question("需要多少显存？", &["c.org/z"], &["6gb"]);
        let s = score_answer("需要 ６ＧＢ 显存", &[], &sources, &q);
        assert_eq!(s.keyword_coverage, Some(1.0));
        assert!(!s.gold_in_context && !s.cites_gold);
        assert!(s.in_question_language);
        // An empty answer is in no language.
        assert!(!score_answer("  ", &[], &sources, &q).in_question_language);
    }

    fn answered(
        text: &str,
        error: bool,
        coverage: Option<f64>,
        citations: &[usize],
        invalid: &[usize],
        gold: bool,
    ) -> AnswerResult {
        AnswerResult {
            text: text.to_string(),
            error: error.then(|| "boom".to_string()),
            looped: false,
            ms: 0,
            scores: AnswerScores {
                keyword_coverage: coverage,
                keywords_missing: Vec::new(),
                citations: citations.to_vec(),
                invalid_citations: invalid.to_vec(),
                cites_gold: gold,
                gold_in_context: true,
                in_question_language: !text.is_empty(),
            },
        }
    }

    #[test]
    fn answer_means_count_each_share_over_its_own_base() {
        let a = answered("a [1]", false, Some(1.0), &[1], &[], true);
        let b = answered("b [7]", false, Some(0.5), &[7], &[7], false);
        let c = answered("c", false, None, &[], &[], false);
        let d = answered("", true, Some(0.0), &[], &[], false);
        let m = mean_answers(&[&a, &b, &c, &d]);
        assert_eq!(m.questions, 4);
        assert_eq!(m.failed, 1);
        assert!(close(m.looping, 0.0));
        assert!(
            close(m.keyword_coverage.unwrap(), 0.5),
            "three with keywords"
        );
        assert!(close(m.citing, 0.5));
        assert!(close(m.citations_valid.unwrap(), 0.5), "of the two citing");
        assert!(close(m.cites_gold, 0.25));
        assert!(close(m.gold_in_context, 1.0));
        assert!(close(m.in_question_language, 0.75));
        // Nothing cites: validity has no base.
        let m = mean_answers(&[&c]);
        assert_eq!(m.citations_valid, None);
        assert_eq!(m.keyword_coverage, None);
        assert_eq!(mean_answers(&[]), AnswerMetrics::default());
        // A loop the guard stopped is its own share, not a failure.
        let mut e = answered("a a a", true, None, &[], &[], false);
        e.looped = true;
        let m = mean_answers(&[&a, &d, &e, &c]);
        assert_eq!(m.failed, 1);
        assert!(close(m.looping, 0.25));
    }
}
