//! `ragmap index`: build or update the index, report what changed.

use std::io::IsTerminal;

use ragmap::config::Config;
use ragmap::exit;
use ragmap::index::{self, BuildOptions};
use ragmap::term::sanitize;

pub fn run(config: &Config, rebuild: bool, json: bool) -> anyhow::Result<u8> {
    let progress = std::io::stderr().is_terminal() && !json && !super::output::quiet();
    let report = index::build(config, &BuildOptions { rebuild, progress })?;
    for s in &report.skipped {
        eprintln!(
            "warning: skipped corpus/{}: {}",
            sanitize(&s.rel_path),
            sanitize(&s.reason)
        );
    }
    for w in &report.warnings {
        eprintln!(
            "warning: corpus/{}: {}",
            sanitize(&w.rel_path),
            sanitize(&w.reason)
        );
    }
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["skipped"] = report
            .skipped
            .iter()
            .map(|s| serde_json::json!({"path": s.rel_path, "reason": s.reason}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(exit::SUCCESS);
    }
    if let Some(migrated) = &report.migrated {
        println!("updated the index format: {migrated}");
    }
    if let Some(reason) = &report.rebuilt {
        println!("rebuilding the whole index: {reason}");
    }
    let tokens_per_sec = if report.embed_seconds > 0.0 {
        report.tokens_embedded as f64 / report.embed_seconds
    } else {
        0.0
    };
    println!(
        "indexed {} documents: {} added, {} changed, {} deleted, {} unchanged; {} chunks embedded ({} tokens, {:.0} tokens/s) in {:.1}s",
        report.documents,
        report.added,
        report.changed,
        report.deleted,
        report.unchanged,
        report.chunks_embedded,
        report.tokens_embedded,
        tokens_per_sec,
        report.total_seconds
    );
    Ok(exit::SUCCESS)
}

/// `ragmap index --to`: the index copied, vectors and all, to a database or a folder.
pub fn copy(config: &Config, to: &str, json: bool) -> anyhow::Result<u8> {
    let report = index::copy(config, to)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "copied {} documents ({} chunks, nothing re-embedded) from {} to {} in {:.1}s",
            report.documents, report.chunks, report.from, report.to, report.seconds
        );
    }
    Ok(exit::SUCCESS)
}
