//! `ragmap index`: build or update the index, report what changed; with
//! `--watch`, keep it updated as the corpus changes.

use std::io::IsTerminal;
use std::time::Duration;

use ragmap::config::Config;
use ragmap::exit;
use ragmap::index::{self, BuildOptions, BuildReport};
use ragmap::term::sanitize;
use ragmap::watch::{self, Notice};

use super::setup;

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
    print_summary(&report);
    Ok(exit::SUCCESS)
}

fn print_summary(report: &BuildReport) {
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
}

/// `ragmap index --watch`: a full run now (rebuilding with `--rebuild`),
/// then one run per burst of changes, until Ctrl-C or SIGTERM.
pub fn watch(config: &Config, rebuild: bool) -> anyhow::Result<u8> {
    if rebuild {
        run(config, true, false)?;
    }
    let quiet = super::output::quiet();
    let watching =
        watch::watch(
            config,
            watch::Options::from_config(config),
            move |notice| match notice {
                Notice::Watching(line) if !quiet => eprintln!("{}", sanitize(&line)),
                Notice::Watching(_) => {}
                Notice::Warning(line) => eprintln!("warning: {}", sanitize(&line)),
                Notice::Indexed(run) => {
                    for line in run.warnings() {
                        eprintln!("warning: {line}");
                    }
                    println!("{}", run.summary());
                }
            },
        )?;
    setup::runtime()?.block_on(async {
        let mut check = tokio::time::interval(Duration::from_millis(500));
        let ended = async {
            while !watching.is_finished() {
                check.tick().await;
            }
        };
        tokio::select! {
            _ = ragmap::server::shutdown_signal() => {}
            _ = ended => {}
        }
    });
    if !watching.stop(Duration::from_secs(2)) {
        eprintln!(
            "stopped; the index run in progress was abandoned (the index keeps its last state)"
        );
    }
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
