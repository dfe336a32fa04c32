//! Sampling against repetition. Small local models (the bundled SmolLM2-135M,
//! 1–3B quantised models on Ollama) fall into loops at low temperature; a
//! mild repetition penalty, and llama.cpp's DRY sampler, keep them out.
//!
//! Unless the user sets any of `[llm] repeat_penalty`, `dry_multiplier`,
//! `frequency_penalty`, `presence_penalty` (then exactly those are sent, to
//! any server), ragmap sends its defaults only to servers known to take them,
//! and leaves out what the server or the model already sets itself:
//!
//! | server | sent by default |
//! |---|---|
//! | llama.cpp's `llama-server` | `repeat_penalty` 1.1 over the last 256 tokens (`repeat_last_n`), `dry_multiplier` 0.8 over the whole context (`dry_penalty_last_n`) |
//! | Ollama (native API) | `repeat_penalty` 1.1 over the last 256 tokens (`repeat_last_n`), in `options` |
//! | other OpenAI-compatible servers, OpenAI | nothing |

use super::context::{ModelInfo, ServerKind};
use crate::config::Config;

/// Repetition settings of one request; `None` leaves the server's own.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sampling {
    /// Divides the odds of recently used tokens (llama.cpp, Ollama; 1.0: off).
    pub repeat_penalty: Option<f32>,
    /// How many tokens back `repeat_penalty` looks (llama.cpp, Ollama). Their default,
    /// 64, is about one turn of the loops SmolLM2 falls into when a source
    /// holds a site's menu ("**首页** | **提示工程** | **关于** | …", a turn
    /// varied just enough to slip past DRY): 256 sees several turns.
    pub repeat_last_n: Option<u32>,
    /// llama.cpp's DRY ("don't repeat yourself"): penalises extending a
    /// sequence that already occurred (0: off).
    pub dry_multiplier: Option<f32>,
    /// How many tokens back DRY looks (llama.cpp). The server's default, 64,
    /// misses a line of more than 64 tokens written again: SmolLM2 loops
    /// over such lines, and looking back over the whole context stops it.
    pub dry_penalty_last_n: Option<u32>,
    /// OpenAI's penalties, also taken by llama.cpp, vLLM and Ollama (0: off).
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
}

/// ragmap's repetition penalty for small local models.
pub const REPEAT_PENALTY: f32 = 1.1;
/// How far back ragmap's repetition penalty looks, in tokens.
pub const REPEAT_LAST_N: u32 = 256;
/// ragmap's DRY multiplier on llama.cpp (its documented starting value).
pub const DRY_MULTIPLIER: f32 = 0.8;

impl Sampling {
    /// The settings the user made in `[llm]`, when they made any.
    pub fn configured(config: &Config) -> Option<Sampling> {
        let llm = &config.llm;
        let sampling = Sampling {
            repeat_penalty: llm.repeat_penalty,
            dry_multiplier: llm.dry_multiplier,
            frequency_penalty: llm.frequency_penalty,
            presence_penalty: llm.presence_penalty,
            repeat_last_n: None,
            dry_penalty_last_n: None,
        };
        (sampling != Sampling::default()).then_some(sampling)
    }

    /// ragmap's defaults for the server `info` describes, less what the
    /// server or model sets itself.
    pub fn defaults_for(info: &ModelInfo) -> Sampling {
        let own = |key: &str| info.own_sampling.iter().any(|k| k == key);
        let repeat = (!own("repeat_penalty")).then_some(REPEAT_PENALTY);
        match info.server {
            ServerKind::LlamaCpp => {
                let dry = !own("dry_multiplier");
                Sampling {
                    repeat_penalty: repeat,
                    repeat_last_n: repeat.map(|_| REPEAT_LAST_N),
                    dry_multiplier: dry.then_some(DRY_MULTIPLIER),
                    // Its context; this llama.cpp refuses -1 ("the context").
                    dry_penalty_last_n: info
                        .context_tokens
                        .filter(|_| dry)
                        .and_then(|n| u32::try_from(n).ok()),
                    ..Sampling::default()
                }
            }
            // Ollama runs llama.cpp's sampler, with the same 64-token window.
            ServerKind::Ollama => Sampling {
                repeat_penalty: repeat,
                repeat_last_n: repeat.map(|_| REPEAT_LAST_N),
                ..Sampling::default()
            },
            ServerKind::Unknown => Sampling::default(),
        }
    }

    /// `(name, value)` of every setting to send.
    pub fn fields(&self) -> Vec<(&'static str, serde_json::Value)> {
        let number = |v: Option<f32>| v.map(serde_json::Value::from);
        [
            ("repeat_penalty", number(self.repeat_penalty)),
            (
                "repeat_last_n",
                self.repeat_last_n.map(serde_json::Value::from),
            ),
            ("dry_multiplier", number(self.dry_multiplier)),
            (
                "dry_penalty_last_n",
                self.dry_penalty_last_n.map(serde_json::Value::from),
            ),
            ("frequency_penalty", number(self.frequency_penalty)),
            ("presence_penalty", number(self.presence_penalty)),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_server_and_leave_its_own_settings() {
        let info = |server, own: &[&str]| ModelInfo {
            server,
            own_sampling: own.iter().map(|s| s.to_string()).collect(),
            context_tokens: Some(4096),
            ..ModelInfo::default()
        };
        let llama = Sampling::defaults_for(&info(ServerKind::LlamaCpp, &[]));
        assert_eq!(
            llama.fields(),
            [
                ("repeat_penalty", serde_json::json!(1.1f32)),
                ("repeat_last_n", serde_json::json!(256)),
                ("dry_multiplier", serde_json::json!(0.8f32)),
                ("dry_penalty_last_n", serde_json::json!(4096)),
            ]
        );
        let tuned = Sampling::defaults_for(&info(ServerKind::LlamaCpp, &["dry_multiplier"]));
        assert_eq!(
            tuned.fields(),
            [
                ("repeat_penalty", serde_json::json!(1.1f32)),
                ("repeat_last_n", serde_json::json!(256)),
            ]
        );
        let own_penalty = Sampling::defaults_for(&info(ServerKind::LlamaCpp, &["repeat_penalty"]));
        assert_eq!(own_penalty.repeat_last_n, None);
        let ollama = Sampling::defaults_for(&info(ServerKind::Ollama, &[]));
        assert_eq!(
            ollama.fields(),
            [
                ("repeat_penalty", serde_json::json!(1.1f32)),
                ("repeat_last_n", serde_json::json!(256)),
            ]
        );
        let ollama = Sampling::defaults_for(&info(ServerKind::Ollama, &["repeat_penalty"]));
        assert!(ollama.fields().is_empty());
        assert!(Sampling::defaults_for(&info(ServerKind::Unknown, &[]))
            .fields()
            .is_empty());
    }

    #[test]
    fn the_users_settings_replace_the_defaults() {
        let mut config = Config::default();
        assert_eq!(Sampling::configured(&config), None);
        config.llm.frequency_penalty = Some(0.3);
        let own = Sampling::configured(&config).unwrap();
        assert_eq!(
            own.fields(),
            [("frequency_penalty", serde_json::json!(0.3f32))]
        );
    }
}
