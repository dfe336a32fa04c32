//! Ranking metrics per document: Recall@k, MRR@10, nDCG@10, and the rules by
//! which a retrieved document matches a gold entry.

use std::collections::HashSet;

use serde::Serialize;

use super::K;
use crate::retrieve::Hit;

/// Mean metrics over a set of questions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub questions: usize,
    pub recall_at_1: f64,
    pub recall_at_5: f64,
    pub recall_at_10: f64,
    pub mrr_at_10: f64,
    pub ndcg_at_10: f64,
}

/// One ranking against one question's gold documents: the metrics of a set
/// of one question, and where each gold entry was found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scores {
    /// Rank (from 1) at which each gold entry was first found, in gold order.
    pub gold_ranks: Vec<Option<usize>>,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// A ranked document as the metrics see it: its source and corpus path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedDoc {
    pub source: String,
    pub path: String,
    pub title: String,
}

impl From<&Hit> for RankedDoc {
    fn from(h: &Hit) -> Self {
        RankedDoc {
            source: h.chunk.source.clone(),
            path: h.chunk.path.clone(),
            title: h.chunk.title.clone(),
        }
    }
}

/// Scores one ranking. `None` when `gold` is empty (the question cannot be scored).
/// A document appearing again later in the ranking adds nothing; slots keep
/// their positions. Only the first [`K`] slots count.
pub fn score(ranking: &[RankedDoc], gold: &[String]) -> Option<Scores> {
    // Gold entries naming the same document count once.
    let mut golds: Vec<&String> = Vec::new();
    for g in gold {
        if !golds.iter().any(|h| normalize(h) == normalize(g)) {
            golds.push(g);
        }
    }
    if golds.is_empty() {
        return None;
    }
    let mut first_rank: Vec<Option<usize>> = vec![None; golds.len()];
    let mut seen_docs: HashSet<(&str, &str)> = HashSet::new();
    let mut dcg = 0.0;
    let mut mrr = 0.0;
    for (i, doc) in ranking.iter().take(K).enumerate() {
        let rank = i + 1;
        if !seen_docs.insert((doc.source.as_str(), doc.path.as_str())) {
            continue;
        }
        let mut relevant = false;
        for (j, g) in golds.iter().enumerate() {
            if first_rank[j].is_none() && matches(doc, g) {
                first_rank[j] = Some(rank);
                relevant = true;
            }
        }
        if relevant {
            dcg += 1.0 / ((rank + 1) as f64).log2();
            if mrr == 0.0 {
                mrr = 1.0 / rank as f64;
            }
        }
    }
    let ideal: f64 = (1..=golds.len().min(K))
        .map(|rank| 1.0 / ((rank + 1) as f64).log2())
        .sum();
    let recall = |k: usize| {
        first_rank
            .iter()
            .filter(|r| r.is_some_and(|r| r <= k))
            .count() as f64
            / golds.len() as f64
    };
    // Report ranks in the caller's gold order, duplicates sharing their rank.
    let gold_ranks = gold
        .iter()
        .map(|g| {
            golds
                .iter()
                .position(|h| normalize(h) == normalize(g))
                .and_then(|j| first_rank[j])
        })
        .collect();
    Some(Scores {
        gold_ranks,
        metrics: Metrics {
            questions: 1,
            recall_at_1: recall(1),
            recall_at_5: recall(5),
            recall_at_10: recall(10),
            mrr_at_10: mrr,
            ndcg_at_10: dcg / ideal,
        },
    })
}

/// Mean of per-question metrics.
pub fn mean(scores: &[&Metrics]) -> Metrics {
    let n = scores.len();
    if n == 0 {
        return Metrics::default();
    }
    let avg = |f: fn(&Metrics) -> f64| scores.iter().map(|s| f(s)).sum::<f64>() / n as f64;
    Metrics {
        questions: n,
        recall_at_1: avg(|s| s.recall_at_1),
        recall_at_5: avg(|s| s.recall_at_5),
        recall_at_10: avg(|s| s.recall_at_10),
        mrr_at_10: avg(|s| s.mrr_at_10),
        ndcg_at_10: avg(|s| s.ndcg_at_10),
    }
}

/// Whether a retrieved document is the one a gold entry names.
pub fn matches(doc: &RankedDoc, gold: &str) -> bool {
    let gold = gold.trim();
    if gold == doc.source || gold == doc.path || gold == format!("corpus/{}", doc.path) {
        return true;
    }
    let g = normalize(gold);
    if g.is_empty() {
        return false;
    }
    let suffix = format!("/{g}");
    normalize(&doc.source) == g
        || without_host(&doc.source).ends_with(&suffix)
        || format!("/{}", normalize(&doc.path)).ends_with(&suffix)
}

/// Percent-decoded, scheme, fragment and query dropped, `/index.html` and
/// trailing slashes dropped: `https://h/a/index.html#x` → `h/a`.
pub(crate) fn normalize(s: &str) -> String {
    let s = s.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let s = s.split(['#', '?']).next().unwrap_or_default();
    let mut s = percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned();
    if s == "index.html" {
        s.clear();
    } else if s.ends_with("/index.html") {
        s.truncate(s.len() - "/index.html".len());
    }
    s.trim_end_matches('/').to_string()
}

/// The normalized source with its host dropped (`/a/b`); a source without a
/// scheme is taken as a path.
fn without_host(source: &str) -> String {
    let n = normalize(source);
    if source.contains("://") {
        match n.find('/') {
            Some(i) => n[i..].to_string(),
            None => String::new(),
        }
    } else {
        format!("/{}", n.trim_start_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::testing::*;
    fn doc(source: &str) -> RankedDoc {
        RankedDoc {
            source: source.to_string(),
            path: String::new(),
            title: String::new(),
        }
    }

    fn ranking(sources: &[&str]) -> Vec<RankedDoc> {
        sources.iter().map(|s| doc(s)).collect()
    }

    fn gold(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn one_gold_at_rank_one() {
        let s = score(&ranking(&[A, B, C]), &gold(&["a.com/x/index.html"])).unwrap();
        assert_eq!(s.gold_ranks, vec![Some(1)]);
        assert_eq!(
            (
                s.metrics.recall_at_1,
                s.metrics.recall_at_5,
                s.metrics.recall_at_10
            ),
            (1.0, 1.0, 1.0)
        );
        assert_eq!(s.metrics.mrr_at_10, 1.0);
        assert_eq!(s.metrics.ndcg_at_10, 1.0);
    }

    #[test]
    fn one_gold_at_rank_three() {
        let s = score(&ranking(&[B, C, A]), &gold(&["a.com/x/index.html"])).unwrap();
        assert_eq!(s.gold_ranks, vec![Some(3)]);
        assert_eq!(s.metrics.recall_at_1, 0.0);
        assert_eq!(s.metrics.recall_at_5, 1.0);
        assert!(close(s.metrics.mrr_at_10, 1.0 / 3.0));
        // DCG 1/log2(4) = 0.5, ideal 1.
        assert!(close(s.metrics.ndcg_at_10, 0.5));
    }

    #[test]
    fn two_golds_one_found() {
        // Golds at ranks 2 and absent: recall 1/2, MRR 1/2,
        // nDCG = (1/log2 3) / (1 + 1/log2 3).
        let s = score(&ranking(&[C, A]), &gold(&["a.com/x", "d.net/missing"])).unwrap();
        assert_eq!(s.gold_ranks, vec![Some(2), None]);
        assert_eq!(s.metrics.recall_at_1, 0.0);
        assert_eq!(s.metrics.recall_at_5, 0.5);
        assert_eq!(s.metrics.recall_at_10, 0.5);
        assert_eq!(s.metrics.mrr_at_10, 0.5);
        let d = 1.0 / 3f64.log2();
        assert!(close(s.metrics.ndcg_at_10, d / (1.0 + d)));
    }

    #[test]
    fn both_golds_at_the_top_is_perfect() {
        let s = score(&ranking(&[B, A, C]), &gold(&["a.com/x", "b.com/y.html"])).unwrap();
        assert_eq!(s.gold_ranks, vec![Some(2), Some(1)]);
        assert_eq!(s.metrics.recall_at_1, 0.5);
        assert_eq!(s.metrics.recall_at_5, 1.0);
        assert_eq!(s.metrics.ndcg_at_10, 1.0);
    }

    #[test]
    fn duplicates_of_a_document_count_once() {
        // A at 1 and again at 2: the second adds nothing, and the slot stays used.
        let s = score(&ranking(&[A, A, B]), &gold(&["a.com/x", "b.com/y.html"])).unwrap();
        assert_eq!(s.gold_ranks, vec![Some(1), Some(3)]);
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!(close(s.metrics.ndcg_at_10, (1.0 + 0.5) / ideal));
        // A gold listed twice is one gold document.
        let s = score(&ranking(&[A]), &gold(&["a.com/x", "a.com/x/index.html"])).unwrap();
        assert_eq!(s.gold_ranks, vec![Some(1), Some(1)]);
        assert_eq!(s.metrics.recall_at_1, 1.0);
        assert_eq!(s.metrics.ndcg_at_10, 1.0);
    }

    #[test]
    fn gold_not_retrieved_or_beyond_k_scores_zero() {
        let mut long: Vec<RankedDoc> = (0..K).map(|i| doc(&format!("https://n{i}.io/"))).collect();
        long.push(doc(A));
        let s = score(&long, &gold(&["a.com/x"])).unwrap();
        assert_eq!(s.gold_ranks, vec![None]);
        assert_eq!(
            (
                s.metrics.recall_at_10,
                s.metrics.mrr_at_10,
                s.metrics.ndcg_at_10
            ),
            (0.0, 0.0, 0.0)
        );
        let s = score(&[], &gold(&["a.com/x"])).unwrap();
        assert_eq!(s.metrics.recall_at_10, 0.0);
    }

    #[test]
    fn empty_gold_cannot_be_scored() {
        assert!(score(&ranking(&[A]), &[]).is_none());
    }

    #[test]
    fn ties_keep_the_ranking_order() {
        // Two gold documents: whichever comes first in the list gets rank 1.
        let s = score(&ranking(&[B, A]), &gold(&["a.com/x", "b.com/y.html"])).unwrap();
        assert_eq!(s.metrics.mrr_at_10, 1.0);
        assert_eq!(s.gold_ranks, vec![Some(2), Some(1)]);
    }

    #[test]
    fn mean_averages_questions() {
        let a = score(&ranking(&[A]), &gold(&["a.com/x"])).unwrap();
        let b = score(&ranking(&[B, C, A]), &gold(&["a.com/x"])).unwrap();
        let c = score(&ranking(&[B]), &gold(&["a.com/x"])).unwrap();
        let m = mean(&[&a.metrics, &b.metrics, &c.metrics]);
        assert_eq!(m.questions, 3);
        assert!(close(m.recall_at_1, 1.0 / 3.0));
        assert!(close(m.recall_at_5, 2.0 / 3.0));
        assert!(close(m.mrr_at_10, (1.0 + 1.0 / 3.0) / 3.0));
        assert!(close(m.ndcg_at_10, 0.5));
        assert_eq!(mean(&[]), Metrics::default());
    }

    #[test]
    fn gold_matching_rules() {
        let d = doc("http://127.0.0.1:8719/github.com/microsoft/graphrag/index.html");
        assert!(matches(&d, "github.com/microsoft/graphrag/index.html"));
        assert!(matches(
            &d,
            "https://github.com/microsoft/graphrag/index.html"
        ));
        assert!(matches(&d, "microsoft/graphrag/index.html"));
        assert!(matches(&d, "github.com/microsoft/graphrag/"));
        assert!(!matches(&d, "soft/graphrag/index.html"));
        assert!(!matches(&d, "github.com/microsoft/other/index.html"));
        assert!(matches(
            &doc("http://localhost:9000/github.com/microsoft/graphrag/index.html"),
            "github.com/microsoft/graphrag/index.html"
        ));
        assert!(matches(&doc(C), "https://c.org/z"));
        assert!(matches(&doc(C), "c.org/z"));
        // Percent-encoding on either side.
        let zh = doc("http://127.0.0.1:8719/h.io/%E7%AC%AC%E4%B8%80.html");
        assert!(matches(&zh, "h.io/第一.html"));
        assert!(matches(
            &doc("http://h.io/第一.html"),
            "h.io/%E7%AC%AC%E4%B8%80.html"
        ));
        // Local notes by corpus path.
        let note = RankedDoc {
            source: "corpus/notes/a.md".into(),
            path: "notes/a.md".into(),
            title: String::new(),
        };
        assert!(matches(&note, "notes/a.md"));
        assert!(matches(&note, "corpus/notes/a.md"));
        assert!(!matches(&note, "a.com/x"));
    }
}
