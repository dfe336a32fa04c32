//! `ragmap config`: the configuration in effect, as TOML a user could paste
//! into config.toml, each value followed by where it came from; secrets only
//! as present or absent. `--check` asks the chat endpoint whether it answers.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use ragmap::config::{self, Config, Found, Origin};
use ragmap::exit;
use ragmap::llm;
use ragmap::term::sanitize;

use super::setup;

pub fn run(config: &Config, workspace: &Path, found: Found, check: bool) -> anyhow::Result<u8> {
    print!("{}", sanitize(&render(config, workspace, found)));
    if !check {
        return Ok(exit::SUCCESS);
    }
    let (report, code) = check_endpoint(config)?;
    print!("{}", sanitize(&report));
    Ok(code)
}

/// The whole listing.
pub fn render(config: &Config, workspace: &Path, found: Found) -> String {
    let mut out = String::new();
    let shown = std::path::absolute(workspace).unwrap_or_else(|_| workspace.to_path_buf());
    let file = workspace.join(config::CONFIG_FILE);
    let _ = writeln!(out, "# workspace: {} ({found})", shown.display());
    let _ = writeln!(
        out,
        "# config.toml: {}",
        if file.is_file() {
            "present"
        } else {
            "absent (defaults)"
        }
    );
    let values = serde_json::to_value(config).unwrap_or_default();
    let mut section = String::new();
    for (sec, key, _) in config::keys() {
        if sec != section {
            let _ = writeln!(out, "\n[{sec}]");
            section = sec.clone();
        }
        let dotted = format!("{sec}.{key}");
        let origin = config.origin(&dotted);
        let value = shown_value(&dotted, &values[&sec][&key]);
        let note = extra_note(config, &dotted);
        match toml_value(&value) {
            Some(v) => {
                let _ = writeln!(
                    out,
                    "{key} = {v}  # {}{note}",
                    origin_text(&origin, &sec, &key)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "# {key} unset  # {}{note}",
                    origin_text(&origin, &sec, &key)
                );
            }
        }
    }
    out
}

/// A value as it may be shown: database URLs without their password.
fn shown_value(key: &str, value: &serde_json::Value) -> serde_json::Value {
    match (key, value.as_str()) {
        ("index.url" | "index.read_url", Some(url)) => {
            serde_json::Value::String(ragmap::index::postgres::redact(url))
        }
        _ => value.clone(),
    }
}

/// `default (RAGMAP_LLM_MODEL)`: the origin, and for defaults the variable
/// that would override it.
fn origin_text(origin: &Origin, section: &str, key: &str) -> String {
    match origin {
        Origin::Default => format!("default; env {}", config::env_var(section, key)),
        other => other.to_string(),
    }
}

/// What a value means beyond itself: the endpoint it leads to, whether the
/// key it names is set, the paths it resolves to.
fn extra_note(config: &Config, key: &str) -> String {
    match key {
        "llm.base_url" => {
            let (url, origin) = config.llm_endpoint();
            format!("; endpoint {url} ({origin})")
        }
        "llm.api_key_env" | "server.api_key_env" | "embed.api_key_env" => {
            let var = match key {
                "llm.api_key_env" => &config.llm.api_key_env,
                "embed.api_key_env" => &config.embed.api_key_env,
                _ => &config.server.api_key_env,
            };
            let present = std::env::var_os(var).is_some_and(|v| !v.is_empty());
            format!(
                "; {var} is {}",
                if present {
                    "set (value not shown)"
                } else {
                    "not set"
                }
            )
        }
        "llm.provider" => match config.llm.provider {
            config::Provider::Ollama => String::from("; no API key is sent to Ollama"),
            config::Provider::Auto => {
                String::from("; settled when a command talks to the model (--check shows the pick)")
            }
            config::Provider::Openai => String::new(),
        },
        "paths.corpus" => format!("; {}", config.corpus_dir().display()),
        "paths.index" if config.index.database_url().is_some() => {
            String::from("; unused: [index] url names a database")
        }
        "paths.index" => format!("; {}", config.index_dir().display()),
        "index.url" if config.index.database_url().is_some() => {
            String::from("; password not shown")
        }
        "paths.assets" => format!("; {}", config.assets_dir().display()),
        "embed.model_dir" => format!("; {}", config.model_dir().display()),
        "embed.ort_dylib" => format!("; {}", config.ort_dylib().display()),
        _ => String::new(),
    }
}

/// A value as TOML source; `None` for an unset optional key.
fn toml_value(value: &serde_json::Value) -> Option<String> {
    if value.is_null() {
        return None;
    }
    // Floats keep a decimal point so that the line reads back as a float, and
    // an f32 setting prints as written (0.1, not 0.10000000149011612).
    if let Some(f) = value.as_f64().filter(|_| value.is_f64()) {
        let narrow = f as f32;
        return Some(if f64::from(narrow) == f {
            format!("{narrow:?}")
        } else {
            format!("{f:?}")
        });
    }
    toml::Value::try_from(value.clone())
        .ok()
        .map(|v| v.to_string())
}

/// `--check`: whether the endpoint answers, and whether it has the model.
fn check_endpoint(config: &Config) -> anyhow::Result<(String, u8)> {
    let mut out = String::from("\n# check\n");
    let backend = match llm::backend_from_config(config) {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(out, "# endpoint: {e}");
            return Ok((out, e.exit_code()));
        }
    };
    let rt = setup::runtime()?;
    let timeout = Duration::from_secs(5);
    if let Err(e) = rt.block_on(backend.ping(timeout)) {
        let _ = writeln!(out, "# endpoint {}: {e}", backend.base_url());
        if e.is_unreachable() {
            let _ = writeln!(out, "# {}", super::output::unreachable_hint(config));
        }
        return Ok((out, e.exit_code()));
    }
    let _ = writeln!(out, "# endpoint {}: answers", backend.base_url());
    match rt.block_on(backend.models(timeout)) {
        Ok(ids) if ids.is_empty() => {
            let _ = writeln!(out, "# models: none listed");
        }
        Ok(ids) => {
            let has = ids.contains(&config.llm.model);
            let _ = writeln!(out, "# models: {}", ids.join(", "));
            let _ = writeln!(
                out,
                "# model {:?}: {}",
                config.llm.model,
                if has {
                    "listed"
                } else {
                    "not listed (servers that serve one model accept any name; others fail: pass one above with -m)"
                }
            );
        }
        Err(e) => {
            let _ = writeln!(out, "# models: cannot list them: {e}");
        }
    }
    let _ = writeln!(out, "# {}", model_context(config, backend.as_ref(), &rt));
    Ok((out, exit::SUCCESS))
}

/// What the server says about the model's context, against `[llm] context_tokens`.
fn model_context(
    config: &Config,
    backend: &dyn llm::ChatBackend,
    rt: &tokio::runtime::Runtime,
) -> String {
    let configured = config.llm.context_tokens;
    let asked = rt.block_on(backend.model_info(&config.llm.model, Duration::from_secs(5)));
    match asked {
        Ok(llm::ModelInfo {
            context_tokens: Some(n),
            source,
            ..
        }) => format!(
            "context: the server's is {n} tokens ({}); prompts fit {} tokens",
            source.unwrap_or_default(),
            n.min(configured)
        ),
        Ok(_) => format!(
            "context: the server does not say; prompts fit [llm] context_tokens = {configured} (a refusal refits them once)"
        ),
        Err(e) => format!("context: cannot ask: {e}"),
    }
}
