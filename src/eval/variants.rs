//! `--compare` specs: modes, each with `:key=value` overrides of `[retrieve]`.

use super::{EvalError, K};
use crate::config::{Retrieve, RetrieveMode};

/// A retrieval configuration to evaluate.
#[derive(Debug, Clone)]
pub struct Variant {
    /// As written on the command line, e.g. `hybrid:rrf_k=30`.
    pub name: String,
    /// For the document ranking: [`K`] slots, one chunk per document unless
    /// overridden.
    pub settings: Retrieve,
    /// For answers: as `ask` retrieves, with this variant's overrides.
    pub answer_settings: Retrieve,
}

/// Parses `hybrid,vector,lexical,hybrid:lexical_weight=0.5:rrf_k=30`: modes
/// separated by commas, each optionally followed by `:key=value` overrides of
/// the `[retrieve]` settings. Evaluation defaults to one chunk per document.
pub fn parse_variants(spec: &str, base: &Retrieve) -> Result<Vec<Variant>, EvalError> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |message: String| EvalError::Variant {
            spec: item.to_string(),
            message,
        };
        let mut parts = item.split(':');
        let mode = match parts.next().unwrap_or_default().trim() {
            "hybrid" => RetrieveMode::Hybrid,
            "vector" => RetrieveMode::Vector,
            "lexical" => RetrieveMode::Lexical,
            other => return Err(bad(format!("unknown mode {other:?}"))),
        };
        let mut settings = Retrieve {
            mode,
            ..base.clone()
        };
        let mut cap_given = false;
        for kv in parts {
            let (key, value) = kv
                .split_once('=')
                .ok_or_else(|| bad(format!("{kv:?} is not key=value")))?;
            let (key, value) = (key.trim(), value.trim());
            let float = || {
                value
                    .parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| bad(format!("{key} needs a non-negative number, not {value:?}")))
            };
            let int = || {
                value
                    .parse::<usize>()
                    .map_err(|_| bad(format!("{key} needs a whole number, not {value:?}")))
            };
            match key {
                "candidates" => settings.candidates = int()?,
                "vector_weight" => settings.vector_weight = float()?,
                "lexical_weight" => settings.lexical_weight = float()?,
                "rrf_k" => settings.rrf_k = float()?,
                "max_chunks_per_doc" => {
                    settings.max_chunks_per_doc = int()?.max(1);
                    cap_given = true;
                }
                "dedup_threshold" => settings.dedup_threshold = float()?,
                "expansion_weight" => settings.expansion_weight = float()?,
                "title_weight" => settings.title_weight = float()?,
                "url_weight" => settings.url_weight = float()?,
                "heading_weight" => settings.heading_weight = float()?,
                "name_weight" => settings.name_weight = float()?,
                _ => return Err(bad(format!(
                    "unknown setting {key:?} (candidates, vector_weight, lexical_weight, rrf_k, max_chunks_per_doc, dedup_threshold, expansion_weight, title_weight, url_weight, heading_weight, name_weight)"
                ))),
            }
        }
        let answer_settings = settings.clone();
        if !cap_given {
            settings.max_chunks_per_doc = 1;
        }
        settings.top_k = K;
        out.push(Variant {
            name: item.to_string(),
            settings,
            answer_settings,
        });
    }
    if out.is_empty() {
        return Err(EvalError::Variant {
            spec: spec.to_string(),
            message: "no mode given".into(),
        });
    }
    Ok(out)
}

/// The mode as written in config.toml and on the command line.
pub fn mode_name(mode: RetrieveMode) -> &'static str {
    match mode {
        RetrieveMode::Hybrid => "hybrid",
        RetrieveMode::Vector => "vector",
        RetrieveMode::Lexical => "lexical",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_variants() {
        let base = Retrieve::default();
        let vs = parse_variants(
            "hybrid, vector,lexical,hybrid:lexical_weight=0.5:rrf_k=30:candidates=80",
            &base,
        )
        .unwrap();
        let names: Vec<&str> = vs.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "hybrid",
                "vector",
                "lexical",
                "hybrid:lexical_weight=0.5:rrf_k=30:candidates=80"
            ]
        );
        assert_eq!(vs[1].settings.mode, RetrieveMode::Vector);
        assert!(vs.iter().all(|v| v.settings.max_chunks_per_doc == 1));
        assert_eq!(vs[0].settings.lexical_weight, base.lexical_weight);
        assert_eq!(vs[3].settings.lexical_weight, 0.5);
        assert_eq!(vs[3].settings.rrf_k, 30.0);
        assert_eq!(vs[3].settings.candidates, 80);
        // Answers keep the configured per-document cap unless the variant sets one.
        assert_eq!(
            vs[0].answer_settings.max_chunks_per_doc,
            base.max_chunks_per_doc
        );
        assert_eq!(vs[3].answer_settings.rrf_k, 30.0);
        let capped = parse_variants("vector:max_chunks_per_doc=3", &base).unwrap();
        assert_eq!(capped[0].settings.max_chunks_per_doc, 3);
        assert_eq!(capped[0].answer_settings.max_chunks_per_doc, 3);
        for bad in [
            "",
            "fuzzy",
            "hybrid:rrf_k",
            "hybrid:rrf_k=x",
            "hybrid:rrf_k=-1",
            "hybrid:colour=red",
        ] {
            assert!(parse_variants(bad, &base).is_err(), "{bad}");
        }
    }
}
