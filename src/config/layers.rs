//! Where each setting comes from: the defaults, `config.toml`, the
//! environment (`RAGMAP_<SECTION>_<KEY>` for every key, plus a few older
//! short names), and command-line flags, each layer over the one before. The
//! origin of every value is kept for `ragmap config`.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::{Config, ConfigError};

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File,
    /// The environment variable that set it.
    Env(String),
    /// The flag that set it, e.g. `--model`.
    Flag(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File => f.write_str("config.toml"),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// `section.key` → origin; keys not listed have their default.
pub type Origins = BTreeMap<String, Origin>;

/// Names kept from before every key had its `RAGMAP_<SECTION>_<KEY>`; the
/// long name wins when both are set.
const ALIASES: &[(&str, &str)] = &[
    ("RAGMAP_LLM_URL", "llm.base_url"),
    ("RAGMAP_ASSETS", "paths.assets"),
    ("RAGMAP_MODEL_DIR", "embed.model_dir"),
    ("RAGMAP_ORT_DYLIB", "embed.ort_dylib"),
];

/// The environment variable that overrides `section.key`.
pub fn env_var(section: &str, key: &str) -> String {
    format!("RAGMAP_{}_{}", section, key).to_ascii_uppercase()
}

/// Every `(section, key)` of the configuration with its default, in the order
/// the shipped config.toml documents them (keys it does not name last).
pub fn keys() -> Vec<(String, String, Json)> {
    let defaults = serde_json::to_value(Config::default()).unwrap_or(Json::Null);
    let Json::Object(sections) = defaults else {
        return Vec::new();
    };
    let shipped = shipped_order();
    let mut out = Vec::new();
    for (section, table) in &sections {
        let Json::Object(table) = table else { continue };
        let mut names: Vec<&String> = table.keys().collect();
        let rank = |k: &String| {
            shipped
                .iter()
                .position(|(s, n)| s == section && n == k)
                .unwrap_or(usize::MAX)
        };
        names.sort_by_key(|k| (rank(k), (*k).clone()));
        for name in names {
            out.push((section.clone(), name.clone(), table[name].clone()));
        }
    }
    let section_rank = |s: &str| {
        shipped
            .iter()
            .position(|(sec, _)| sec == s)
            .unwrap_or(usize::MAX)
    };
    out.sort_by_key(|(s, _, _)| section_rank(s));
    out
}

/// `(section, key)` in the order of the shipped config.toml, commented-out
/// keys (`# key = …`) included.
fn shipped_order() -> Vec<(String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in include_str!("../../config.toml").lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let line = line.strip_prefix("# ").unwrap_or(line);
        if let Some((key, _)) = line.split_once(" = ") {
            if !section.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                out.push((section.clone(), key.to_string()));
            }
        }
    }
    out
}

/// Reads the environment over `table` (config.toml's contents), recording
/// each variable used in `origins`. A value that does not fit its key is an
/// error naming the variable.
pub fn apply_env(
    table: &mut toml::Table,
    origins: &mut Origins,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (section, key, default) in keys() {
        let dotted = format!("{section}.{key}");
        let long = env_var(&section, &key);
        let alias = ALIASES
            .iter()
            .find(|(_, k)| *k == dotted)
            .map(|(var, _)| var.to_string());
        let found = std::iter::once(long)
            .chain(alias)
            .find_map(|var| get(&var).filter(|v| !v.is_empty()).map(|v| (var, v)));
        let Some((var, raw)) = found else { continue };
        let invalid = |message: String| ConfigError::Env {
            var: var.clone(),
            value: raw.clone(),
            message,
        };
        let value = typed(&raw, &default).map_err(invalid)?;
        let mut candidate = table.clone();
        insert(&mut candidate, &section, &key, value);
        if let Err(e) = candidate.clone().try_into::<Config>() {
            let retry_with = match &default {
                // Enum values (`provider`, `mode`, …) are lower case; accept any case.
                Json::String(_) => Some(toml::Value::String(raw.to_ascii_lowercase())),
                // An unset optional key that takes a number (`repeat_penalty`).
                Json::Null => raw.trim().parse::<f64>().ok().map(toml::Value::Float),
                _ => None,
            };
            let mut retry = table.clone();
            let fits = retry_with.is_some_and(|value| {
                insert(&mut retry, &section, &key, value);
                retry.clone().try_into::<Config>().is_ok()
            });
            if !fits {
                return Err(invalid(e.message().to_string()));
            }
            candidate = retry;
        }
        *table = candidate;
        origins.insert(dotted, Origin::Env(var));
    }
    Ok(())
}

fn insert(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(key.to_string(), value);
    }
}

/// An environment value as the TOML value its key takes, judged by the
/// default's type (unset optional keys are paths or URLs: strings).
fn typed(raw: &str, default: &Json) -> Result<toml::Value, String> {
    let text = raw.trim();
    Ok(match default {
        Json::Bool(_) => toml::Value::Boolean(match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err("expected true or false".into()),
        }),
        Json::Number(n) if n.is_f64() => toml::Value::Float(
            text.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or("expected a number")?,
        ),
        Json::Number(_) => toml::Value::Integer(
            text.parse::<i64>()
                .map_err(|_| "expected a whole number".to_string())?,
        ),
        Json::Array(_) if text.starts_with('[') => {
            let parsed: toml::Table = toml::from_str(&format!("v = {text}"))
                .map_err(|e| format!("not a TOML array: {}", e.message()))?;
            parsed.get("v").cloned().ok_or("not a TOML array")?
        }
        Json::Array(_) => toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}

/// The keys `table` (config.toml's contents) sets, as origins.
pub fn file_origins(table: &toml::Table, origins: &mut Origins) {
    for (section, value) in table {
        if let toml::Value::Table(keys) = value {
            for key in keys.keys() {
                origins.insert(format!("{section}.{key}"), Origin::File);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn load(file: &str, vars: &[(&str, &str)]) -> Result<(Config, Origins), ConfigError> {
        let mut table: toml::Table = toml::from_str(file).unwrap();
        let mut origins = Origins::new();
        file_origins(&table, &mut origins);
        apply_env(&mut table, &mut origins, &env(vars))?;
        Ok((table.try_into().unwrap(), origins))
    }

    #[test]
    fn every_key_has_its_variable_typed_by_its_default() {
        let (c, origins) = load(
            "[retrieve]\ntop_k = 3\n",
            &[
                ("RAGMAP_RETRIEVE_TOP_K", "9"),
                ("RAGMAP_RETRIEVE_VECTOR_WEIGHT", "2"),
                ("RAGMAP_LLM_REWRITE", "no"),
                ("RAGMAP_LLM_PROVIDER", "Ollama"),
                ("RAGMAP_SERVER_CORS_ORIGINS", "http://a, http://b"),
                ("RAGMAP_CRAWL_BLOCK_PRIVATE", "always"),
                ("RAGMAP_LLM_URL", "http://alias/v1"),
                ("RAGMAP_CHUNK_MAX_TOKENS", ""),
                ("RAGMAP_LLM_REPEAT_PENALTY", "1.15"),
            ],
        )
        .unwrap();
        assert_eq!(c.retrieve.top_k, 9);
        assert_eq!(c.retrieve.vector_weight, 2.0);
        assert!(!c.llm.rewrite);
        assert_eq!(c.llm.provider, super::super::Provider::Ollama);
        assert_eq!(c.server.cors_origins, ["http://a", "http://b"]);
        assert_eq!(c.crawl.block_private, super::super::BlockPrivate::Always);
        assert_eq!(c.llm.base_url.as_deref(), Some("http://alias/v1"));
        assert_eq!(c.chunk.max_tokens, Config::default().chunk.max_tokens);
        assert_eq!(c.llm.repeat_penalty, Some(1.15));
        assert_eq!(
            origins["retrieve.top_k"],
            Origin::Env("RAGMAP_RETRIEVE_TOP_K".into())
        );
        assert_eq!(
            origins["llm.base_url"],
            Origin::Env("RAGMAP_LLM_URL".into())
        );
        assert!(!origins.contains_key("chunk.max_tokens"));
    }

    #[test]
    fn the_long_name_wins_over_the_old_one() {
        let (c, _) = load(
            "",
            &[
                ("RAGMAP_LLM_URL", "http://old/v1"),
                ("RAGMAP_LLM_BASE_URL", "http://new/v1"),
            ],
        )
        .unwrap();
        assert_eq!(c.llm.base_url.as_deref(), Some("http://new/v1"));
    }

    #[test]
    fn invalid_values_are_errors_naming_the_variable() {
        for (var, value, says) in [
            ("RAGMAP_LLM_PROVIDER", "bogus", "openai"),
            ("RAGMAP_RETRIEVE_TOP_K", "many", "whole number"),
            ("RAGMAP_SERVER_PORT", "70000", "70000"),
            ("RAGMAP_LLM_REWRITE", "maybe", "true or false"),
            ("RAGMAP_RETRIEVE_MODE", "fuzzy", "hybrid"),
            ("RAGMAP_LLM_REPEAT_PENALTY", "strong", "f32"),
        ] {
            let err = load("", &[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var) && err.contains(says), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn keys_follow_the_shipped_file() {
        let keys = keys();
        let names: Vec<String> = keys.iter().map(|(s, k, _)| format!("{s}.{k}")).collect();
        assert_eq!(names[0], "paths.corpus");
        let at = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(at("llm.provider") < at("llm.base_url") && at("llm.base_url") < at("llm.model"));
        assert!(at("retrieve.top_k") < at("llm.provider"));
        assert!(names.contains(&"embed.ort_dylib".to_string()));
    }
}
