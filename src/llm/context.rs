//! What a server says about the model it serves: the context window a request
//! may fill, what kind of server it is (which sampling options it takes), and
//! which sampling settings it or the model already has. Read once per process
//! by [`ChatBackend::model_info`](super::ChatBackend::model_info):
//!
//! - llama.cpp's `llama-server`: `GET /v1/models` → `data[].meta.n_ctx` (the
//!   context of one slot: `-c` divided by `-np`), else `GET /props` →
//!   `default_generation_settings.n_ctx` (or a top-level `n_ctx`, older
//!   builds); `/props` also holds the sampling the server was started with.
//! - vLLM: `GET /v1/models` → `data[].max_model_len`; other OpenAI-compatible
//!   servers that list `context_length`, `max_context_length` or
//!   `context_window` beside the model id.
//! - Ollama: `POST /api/show` → `model_info["<architecture>.context_length"]`,
//!   and the Modelfile's `parameters` (its own `repeat_penalty`, …). Ollama
//!   runs a request with the `num_ctx` it is sent, and silently cuts a longer
//!   prompt from the start, so ragmap sends the context it fits the prompt to.
//! - OpenAI itself says nothing: the configured `context_tokens` stands, and a
//!   refusal ([`Refusal`]) tells the rest.

use serde_json::Value;

/// The kind of server, as far as its request options differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServerKind {
    /// An OpenAI-compatible server that takes only OpenAI's options.
    #[default]
    Unknown,
    /// llama.cpp's `llama-server`: also `repeat_penalty`, `dry_multiplier`, ….
    LlamaCpp,
    Ollama,
}

/// What the server told about its model; empty when it told nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelInfo {
    /// The tokens one request may fill (prompt and answer together).
    pub context_tokens: Option<usize>,
    /// Where `context_tokens` was read, e.g. `GET /v1/models data[].meta.n_ctx`.
    pub source: Option<String>,
    pub server: ServerKind,
    /// Sampling options the server or the model already sets itself
    /// (`repeat_penalty`, …): ragmap's defaults leave these alone.
    pub own_sampling: Vec<String>,
}

/// The sampling options ragmap may set; the names are llama.cpp's and Ollama's.
pub const SAMPLING_KEYS: [&str; 4] = [
    "repeat_penalty",
    "dry_multiplier",
    "frequency_penalty",
    "presence_penalty",
];

impl ModelInfo {
    /// `GET /v1/models`: the entry for `model` (or the only one): llama.cpp's
    /// `meta.n_ctx`, vLLM's `max_model_len`, or another server's length field.
    pub fn from_openai_models(doc: &Value, model: &str) -> ModelInfo {
        let entries = doc.get("data").and_then(Value::as_array);
        let entry = entries.and_then(|list| {
            list.iter()
                .find(|m| m.get("id").and_then(Value::as_str) == Some(model))
                .or_else(|| (list.len() == 1).then(|| &list[0]))
        });
        let Some(entry) = entry else {
            return ModelInfo::default();
        };
        let llama = entry.get("owned_by").and_then(Value::as_str) == Some("llamacpp")
            || entry.pointer("/meta/n_ctx_train").is_some();
        let mut info = ModelInfo {
            server: if llama {
                ServerKind::LlamaCpp
            } else {
                ServerKind::Unknown
            },
            ..ModelInfo::default()
        };
        for field in [
            "/meta/n_ctx",
            "/max_model_len",
            "/context_length",
            "/max_context_length",
            "/context_window",
        ] {
            if let Some(n) = positive(entry.pointer(field)) {
                info.context_tokens = Some(n);
                info.source = Some(format!("GET /v1/models data[]{}", field.replace('/', ".")));
                break;
            }
        }
        info
    }

    /// llama.cpp's `GET /props`: the slot's context and the sampling the
    /// server was started with (anything but llama.cpp's neutral values is
    /// the user's own).
    pub fn from_llama_props(doc: &Value) -> ModelInfo {
        let settings = doc.get("default_generation_settings");
        let context = settings
            .and_then(|s| positive(s.get("n_ctx")))
            .map(|n| (n, "GET /props default_generation_settings.n_ctx"))
            .or_else(|| positive(doc.get("n_ctx")).map(|n| (n, "GET /props n_ctx")));
        let params = settings.and_then(|s| s.get("params"));
        let neutral = [
            ("repeat_penalty", 1.0),
            ("dry_multiplier", 0.0),
            ("frequency_penalty", 0.0),
            ("presence_penalty", 0.0),
        ];
        let own_sampling = neutral
            .iter()
            .filter(|(key, off)| {
                params
                    .and_then(|p| p.get(key))
                    .and_then(Value::as_f64)
                    .is_some_and(|v| (v - off).abs() > 1e-6)
            })
            .map(|(key, _)| key.to_string())
            .collect();
        ModelInfo {
            context_tokens: context.map(|(n, _)| n),
            source: context.map(|(_, s)| s.to_string()),
            server: ServerKind::LlamaCpp,
            own_sampling,
        }
    }

    /// Ollama's `POST /api/show`: the model's trained context length and the
    /// sampling its Modelfile sets.
    pub fn from_ollama_show(doc: &Value) -> ModelInfo {
        let info = doc.get("model_info").and_then(Value::as_object);
        let arch = info
            .and_then(|i| i.get("general.architecture"))
            .and_then(Value::as_str);
        let context = info.and_then(|i| {
            arch.and_then(|a| positive(i.get(&format!("{a}.context_length"))))
                .or_else(|| {
                    i.iter()
                        .find(|(k, _)| k.ends_with(".context_length"))
                        .and_then(|(_, v)| positive(Some(v)))
                })
        });
        let parameters = doc.get("parameters").and_then(Value::as_str).unwrap_or("");
        let own_sampling = parameters
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|k| SAMPLING_KEYS.contains(k))
            .map(str::to_string)
            .collect();
        ModelInfo {
            context_tokens: context,
            source: context
                .map(|_| "POST /api/show model_info.<architecture>.context_length".to_string()),
            server: ServerKind::Ollama,
            own_sampling,
        }
    }

    /// `self`, with what `other` knows and `self` does not.
    pub fn or(mut self, other: ModelInfo) -> ModelInfo {
        if self.context_tokens.is_none() {
            self.context_tokens = other.context_tokens;
            self.source = other.source;
        }
        if self.server == ServerKind::Unknown {
            self.server = other.server;
        }
        for key in other.own_sampling {
            if !self.own_sampling.contains(&key) {
                self.own_sampling.push(key);
            }
        }
        self
    }
}

fn positive(v: Option<&Value>) -> Option<usize> {
    v.and_then(Value::as_u64)
        .filter(|&n| n > 0)
        .and_then(|n| usize::try_from(n).ok())
}

/// What a server said when it refused a prompt as too long: its context and
/// the prompt's real size, when it said them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refusal {
    pub context_tokens: Option<usize>,
    pub prompt_tokens: Option<usize>,
}

impl Refusal {
    /// Reads the numbers of a refusal's message, as each server words it:
    ///
    /// - llama.cpp: `request (2402 tokens) exceeds the available context size
    ///   (2048 tokens), try increasing it` (also as JSON `n_prompt_tokens`, `n_ctx`),
    ///   or `input (2402 tokens) is larger than the max context size (2048 tokens)`
    /// - OpenAI: `This model's maximum context length is 8192 tokens. However,
    ///   your messages resulted in 9000 tokens. …` (code `context_length_exceeded`)
    /// - vLLM: `This model's maximum context length is 4096 tokens. However, you
    ///   requested 5000 tokens (4488 in the messages, 512 in the completion). …`,
    ///   newer: `… is 4096 tokens and your request has 3700 input tokens (…)`
    /// - Hugging Face TGI: `` `inputs` tokens + `max_new_tokens` must be <= 4096.
    ///   Given: 4000 `inputs` tokens and 512 `max_new_tokens` ``
    /// - LM Studio: `… the model is loaded with context length of only 4096 tokens …`
    /// - Ollama cuts a chat prompt silently; its embedding refusal (`the input
    ///   length exceeds the context length`) says no numbers.
    pub fn from_message(message: &str) -> Refusal {
        const CONTEXT: [&str; 6] = [
            "available context size (",
            "max context size (",
            "maximum context length is ",
            "maximum context length of ",
            "must be <= ",
            "context length of only ",
        ];
        const PROMPT: [&str; 6] = [
            "request (",
            "input (",
            "your messages resulted in ",
            "requested ",
            "your request has ",
            "given: ",
        ];
        let lower = message.to_ascii_lowercase();
        let mut prompt = PROMPT.iter().find_map(|p| number_after(&lower, p));
        // vLLM counts the answer in "requested": the prompt is "N in the messages".
        if let Some(n) = number_before(&lower, " in the messages") {
            prompt = Some(n);
        }
        Refusal {
            context_tokens: CONTEXT.iter().find_map(|p| number_after(&lower, p)),
            prompt_tokens: prompt,
        }
    }
}

/// The whole number right after `phrase` in `text` (commas between digits
/// allowed: `256,000`).
fn number_after(text: &str, phrase: &str) -> Option<usize> {
    let start = text.find(phrase)? + phrase.len();
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The whole number right before `phrase` in `text`.
fn number_before(text: &str, phrase: &str) -> Option<usize> {
    let end = text.find(phrase)?;
    let digits: String = text[..end]
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn llama_cpp_models_and_props() {
        // As llama-server (this project's build) answers, trimmed.
        let models = json!({"object":"list","data":[{"id":"SmolLM2-135M-Instruct.Q4_1.gguf","object":"model","owned_by":"llamacpp","meta":{"vocab_type":2,"n_vocab":49152,"n_ctx":2048,"n_ctx_train":8192}}]});
        let info = ModelInfo::from_openai_models(&models, "default");
        assert_eq!(info.context_tokens, Some(2048));
        assert_eq!(info.server, ServerKind::LlamaCpp);
        assert_eq!(
            info.source.as_deref(),
            Some("GET /v1/models data[].meta.n_ctx")
        );
        // Older builds list only the trained context: not the server's.
        let old = json!({"data":[{"id":"m","meta":{"n_ctx_train":8192}}]});
        let info = ModelInfo::from_openai_models(&old, "m");
        assert_eq!(
            (info.context_tokens, info.server),
            (None, ServerKind::LlamaCpp)
        );

        let props = json!({"default_generation_settings":{"n_ctx":1024,"params":{"repeat_penalty":1.0,"dry_multiplier":0.5,"frequency_penalty":0.0}},"total_slots":2});
        let info = ModelInfo::from_llama_props(&props);
        assert_eq!(info.context_tokens, Some(1024));
        assert_eq!(info.own_sampling, ["dry_multiplier"]);
        let top = ModelInfo::from_llama_props(&json!({"n_ctx": 512}));
        assert_eq!(top.context_tokens, Some(512));
        assert_eq!(top.source.as_deref(), Some("GET /props n_ctx"));
    }

    #[test]
    fn other_openai_compatible_model_lists() {
        let vllm = json!({"object":"list","data":[{"id":"Qwen/Qwen2.5-7B-Instruct","object":"model","owned_by":"vllm","max_model_len":32768}]});
        let info = ModelInfo::from_openai_models(&vllm, "Qwen/Qwen2.5-7B-Instruct");
        assert_eq!(
            (info.context_tokens, info.server),
            (Some(32768), ServerKind::Unknown)
        );
        // Several models, none named: nothing is known.
        let openai = json!({"data":[{"id":"gpt-4o","owned_by":"system"},{"id":"gpt-4o-mini"}]});
        assert_eq!(
            ModelInfo::from_openai_models(&openai, "default"),
            ModelInfo::default()
        );
        assert_eq!(
            ModelInfo::from_openai_models(&json!({"error": "x"}), "m"),
            ModelInfo::default()
        );
    }

    #[test]
    fn ollama_show() {
        let show = json!({
            "parameters": "num_ctx                        8192\nrepeat_penalty                 1.2\nstop                           \"<|im_end|>\"",
            "details": {"family": "qwen2"},
            "model_info": {"general.architecture": "qwen2", "qwen2.context_length": 32768, "qwen2.embedding_length": 3584}
        });
        let info = ModelInfo::from_ollama_show(&show);
        assert_eq!(info.context_tokens, Some(32768));
        assert_eq!(info.server, ServerKind::Ollama);
        assert_eq!(info.own_sampling, ["repeat_penalty"]);
        let bare = ModelInfo::from_ollama_show(&json!({"model_info": {}}));
        assert_eq!(bare.context_tokens, None);
    }

    #[test]
    fn refusals_of_every_server_are_read() {
        let cases = [
            (
                "request (2402 tokens) exceeds the available context size (2048 tokens), try increasing it",
                Some(2048),
                Some(2402),
            ),
            (
                "input (5000 tokens) is larger than the max context size (4096 tokens). skipping",
                Some(4096),
                Some(5000),
            ),
            (
                "This model's maximum context length is 8192 tokens. However, your messages resulted in 9,120 tokens. Please reduce the length of the messages.",
                Some(8192),
                Some(9120),
            ),
            (
                "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4488 in the messages, 512 in the completion). Please reduce the length of the messages or completion.",
                Some(4096),
                Some(4488),
            ),
            (
                "'max_tokens' or 'max_completion_tokens' is too large: 512. This model's maximum context length is 4096 tokens and your request has 3700 input tokens (512 > 4096 - 3700).",
                Some(4096),
                Some(3700),
            ),
            (
                "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 512 `max_new_tokens`",
                Some(4096),
                Some(4000),
            ),
            (
                "Trying to keep the first 5000 tokens when context the overflows. However, the model is loaded with context length of only 4096 tokens, which is not enough.",
                Some(4096),
                None,
            ),
            ("the input length exceeds the context length", None, None),
        ];
        for (message, context, prompt) in cases {
            let r = Refusal::from_message(message);
            assert_eq!(
                (r.context_tokens, r.prompt_tokens),
                (context, prompt),
                "{message}"
            );
        }
    }
}
