//! `ragmap status`: what is indexed, the last crawl, what changed since.

use ragmap::config::Config;
use ragmap::crawl;
use ragmap::exit;
use ragmap::index;
use ragmap::term::sanitize;

pub fn run(config: &Config, json: bool) -> anyhow::Result<u8> {
    let last_crawl = crawl::load_report(&crawl::report_path(config));
    let status = index::status(config)?;
    if json {
        let mut value = serde_json::to_value(&status)?;
        value["crawl"] = match &last_crawl {
            Some(report) => serde_json::json!({
                "finished_at": report.finished_at,
                "interrupted": report.interrupted,
                "outcomes": report.counts().iter().map(|(k, v)| (k.as_str().to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            }),
            None => serde_json::Value::Null,
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(exit::SUCCESS);
    }
    match &last_crawl {
        Some(report) => println!("crawl:     {}", sanitize(&crawl::status_line(report))),
        None => println!("crawl:     none yet (ragmap crawl)"),
    }
    let (counts, about) = (&status.counts, &status.description);
    println!("index:     {}", about.location);
    println!("documents: {}", counts.documents);
    println!("chunks:    {} ({} tokens)", counts.chunks, counts.tokens);
    println!("size:      {:.1} MB", about.bytes_on_disk as f64 / 1e6);
    let dimensions = about
        .dimensions
        .map_or(String::new(), |d| format!(" ({d} dimensions)"));
    println!(
        "model:     {}{dimensions}",
        about.model.as_deref().unwrap_or("?")
    );
    println!("chunking:  {}", about.settings.as_deref().unwrap_or("?"));
    println!("built:     {}", about.built_at.as_deref().unwrap_or("?"));
    if status.changed_since.is_empty() {
        println!("changes since the last build: none");
    } else {
        println!(
            "changes since the last build: {} (run `ragmap index`)",
            status.changed_since.len()
        );
        for c in status.changed_since.iter().take(20) {
            println!("  {}", sanitize(c));
        }
    }
    Ok(exit::SUCCESS)
}
