//! `ragmap crawl` (the real binary, against ../shared/webcorpus/serve.py)
//! killed with SIGKILL at many points: no half-written document is ever
//! visible, the next run completes with every reachable page, and a second
//! concurrent crawl on the same workspace is refused with one clear line.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ragmap::corpus;

const PAGES: usize = 15;

fn workspace(m: &Mirror, delay_ms: u64) -> Workspace {
    let ws = Workspace::new(&format!("[crawl]\nper_host_delay_ms = {delay_ms}\n"));
    let pages = m.plain_pages(PAGES);
    let links: Vec<(&str, String)> = pages.iter().map(|p| (p.as_str(), m.url(p))).collect();
    ws.write_roadmap("# Crash roadmap\n\n## Pages", &links);
    ws
}

fn crawl_cmd(ws: &Workspace) -> Command {
    ws.command(&["crawl", "--plain", "--roadmap", &ws.roadmap()])
}

/// URLs whose document the last finished run reports as present (and on disk).
fn documented_urls(ws: &Workspace) -> BTreeSet<String> {
    let config = ws.config();
    let report = ragmap::crawl::load_report(&ragmap::crawl::report_path(&config))
        .expect("a finished run leaves a readable report");
    report
        .entries
        .iter()
        .filter(|e| e.outcome.has_document())
        .filter(|e| {
            e.document
                .as_ref()
                .is_some_and(|d| ws.corpus().join(d).is_file())
        })
        .map(|e| e.url.clone())
        .collect()
}

fn temp_files(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .filter(|p| p.contains(".tmp-") || p.ends_with(".partial"))
        .collect()
}

/// What the indexer would read is whole: every `.md` parses, has a body and a
/// URL; leftovers of interrupted atomic writes are never `.md` files.
fn assert_corpus_whole(ws: &Workspace, point: &str) {
    let root = ws.corpus();
    for p in corpus::list_markdown(&root).unwrap() {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.contains(".tmp-") && !name.contains("partial"),
            "{point}: temp file would be indexed: {}",
            p.display()
        );
        let doc = corpus::read_document(&root, &p)
            .unwrap_or_else(|e| panic!("{point}: {}: {}", e.rel_path, e.reason));
        assert!(
            !doc.body.trim().is_empty(),
            "{point}: empty body {}",
            doc.rel_path
        );
        assert!(doc.front.url.is_some(), "{point}: no url {}", doc.rel_path);
        assert_eq!(doc.front.status.as_deref(), Some("ok"), "{point}");
    }
    for t in temp_files(&root) {
        let name = Path::new(&t)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with('.') && !name.ends_with(".md"),
            "{point}: {t}"
        );
    }
    let report = ragmap::crawl::report_path(&ws.config());
    if report.exists() {
        assert!(
            ragmap::crawl::load_report(&report).is_some(),
            "{point}: the crawl report is torn"
        );
    }
}

#[test]
fn crawl_survives_sigkill_at_ten_points() {
    let Some(m) = Mirror::start() else { return };
    let ws = workspace(&m, 100);
    let started = Instant::now();
    let status = crawl_cmd(&ws).status().unwrap();
    let full = started.elapsed();
    assert!(status.success());
    let reachable = documented_urls(&ws);
    assert!(
        reachable.len() >= PAGES - 2,
        "most mirrored pages are reachable: {reachable:?}"
    );
    assert_corpus_whole(&ws, "baseline");
    let web = ws.corpus().join("web");
    let mut partial_points = 0;

    for point in 0..10u32 {
        // Start from an empty folder so that the killed run is writing documents.
        std::fs::remove_dir_all(&web).unwrap();
        let delay = full.mul_f64(0.05 + 0.1 * f64::from(point));
        kill_after(&mut crawl_cmd(&ws), delay);
        let label = format!("point {point} ({delay:?} of {full:?})");
        assert_corpus_whole(&ws, &label);
        let left = corpus::list_markdown(&ws.corpus()).map_or(0, |v| v.len());
        eprintln!("{label}: {left} documents written before the kill");
        if left > 0 && left < reachable.len() {
            partial_points += 1;
        }

        let out = crawl_cmd(&ws).status().unwrap();
        assert!(out.success(), "{label}: the next run fails");
        assert_corpus_whole(&ws, &label);
        let now = documented_urls(&ws);
        let missing: Vec<&String> = reachable.difference(&now).collect();
        assert!(
            missing.is_empty(),
            "{label}: missing after resume: {missing:?}"
        );
        assert!(
            temp_files(&web).is_empty(),
            "{label}: leftovers after a finished run: {:?}",
            temp_files(&web)
        );
    }
    assert!(
        partial_points > 0,
        "no kill landed mid-run; the test did not exercise anything"
    );
}

#[test]
fn second_concurrent_crawl_is_refused_with_one_line() {
    let Some(m) = Mirror::start() else { return };
    let ws = workspace(&m, 300);
    let mut first = crawl_cmd(&ws).spawn().unwrap();
    wait_for_file(&ws.corpus().join(".crawl.lock"), Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    let second = ws.run(&["crawl", "--plain", "--roadmap", &ws.roadmap()]);
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first crawl should still be running"
    );
    assert_clean_failure(&second, 1, "another `ragmap crawl` is running");

    // A killed holder leaves no stale lock: the next run goes ahead.
    let _ = first.kill();
    let _ = first.wait();
    let third = crawl_cmd(&ws).status().unwrap();
    assert!(third.success());
    assert_corpus_whole(&ws, "after the killed holder");
}
