//! `ragmap index` killed with SIGKILL at many points leaves an index that opens
//! and answers with either the old state or the new one; the next run completes.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn doc(i: usize, version: &str) -> String {
    format!(
        "# Topic {i} {version}\n\nDocument {i} ({version}) explains retrieval step {i}: chunking, embedding, indexing and answering, with {} more words.\n\n## Details\n\n{}\n",
        i * 3,
        "检索增强生成把文档切块、向量化并建立索引。 Retrieval augmented generation splits documents. ".repeat(6)
    )
}

#[test]
fn index_survives_sigkill_at_ten_points() {
    if !model_available() {
        return;
    }
    let ws = Workspace::new("[chunk]\nmax_tokens = 96\noverlap_tokens = 8\n");
    for i in 0..12 {
        ws.write_doc(&format!("d{i}.md"), &doc(i, "v1"));
    }
    let first = ws.run(&["index"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let old_docs = 12;

    // Measure one full run of the change to spread the kill points over it.
    let mut version = 2;
    let mut change = |ws: &Workspace| {
        // Edit half the documents, add one, delete one: a mix only a torn write could produce.
        for i in (0..12).step_by(2) {
            ws.write_doc(&format!("d{i}.md"), &doc(i, &format!("v{version}")));
        }
        ws.write_doc("extra.md", &doc(99, &format!("v{version}")));
        version += 1;
    };
    change(&ws);
    let started = Instant::now();
    let timed = ws.run(&["index"]);
    assert!(timed.status.success(), "{}", stderr(&timed));
    let full = started.elapsed();
    let new_docs = 13;

    for point in 0..10u32 {
        change(&ws);
        let delay = full.mul_f64(0.05 + 0.1 * point as f64);
        kill_after(&mut ws.command(&["index"]), delay);

        let out = ws.run(&["status", "--json"]);
        assert!(
            out.status.success(),
            "point {point} ({delay:?}): {}",
            stderr(&out)
        );
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let docs = status["documents"].as_i64().unwrap();
        assert!(
            docs == old_docs || docs == new_docs,
            "point {point}: {docs} documents"
        );
        let out = ws.run(&["search", "retrieval step", "--mode", "lexical", "--json"]);
        assert!(out.status.success(), "point {point}: {}", stderr(&out));
        let out = ws.run(&["search", "检索增强生成", "--json", "-k", "3"]);
        assert!(out.status.success(), "point {point}: {}", stderr(&out));

        let resumed = ws.run(&["index"]);
        assert!(
            resumed.status.success(),
            "point {point}: {}",
            stderr(&resumed)
        );
        let out = ws.run(&["status", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(status["documents"].as_i64(), Some(new_docs));
        assert_eq!(status["changed_since"].as_array().map(Vec::len), Some(0));
    }
    // No temporary or orphaned vector files are left behind.
    let leftovers: Vec<String> = std::fs::read_dir(ws.path().join("index"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".usearch"))
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[test]
fn second_index_run_on_the_same_workspace_is_refused_clearly() {
    if !model_available() {
        return;
    }
    let ws = Workspace::new("");
    for i in 0..30 {
        ws.write_doc(&format!("d{i}.md"), &doc(i, "v1"));
    }
    let mut first = ws.command(&["index"]).spawn().unwrap();
    // Wait until the first run holds the lock.
    wait_for_file(&ws.path().join("index/.lock"), Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(100));
    let second = ws.run(&["index"]);
    let first_status = first.wait().unwrap();
    assert!(first_status.success());
    assert_clean_failure(&second, 1, "another `ragmap index` is running");
    // After the holder ends (or dies), the lock is free again.
    let third = ws.run(&["index"]);
    assert!(third.status.success(), "{}", stderr(&third));
}
