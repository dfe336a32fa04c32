//! `--watch` end to end: the real binary, the real embedding model, notes
//! saved, replaced, renamed and deleted the ways editors and git do it while
//! a client keeps searching.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// How long anything the watcher does may take before a test gives up: the
/// machine may be busy; the tests never time what they wait for.
const EVENTUALLY: Duration = Duration::from_secs(120);

/// A workspace with the three topic documents, indexed; `watch`: its
/// `[watch]` settings.
fn indexed(watch: &str) -> Workspace {
    let ws = Workspace::new(&format!(
        "[server]\nworkers = 1\n\n[embed]\nsessions = 1\n\n[watch]\n{watch}"
    ));
    write_topic_docs(&ws);
    ws.build_index();
    ws
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The corpus paths of a lexical search's results for `word` (only chunks
/// holding the word match), each with its text.
async fn lexical(served: &Served, word: &str) -> Vec<(String, String)> {
    let body = json!({"query": word, "k": 10, "mode": "lexical"});
    let r = http()
        .post(served.at("/api/search"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let found: Value = r.json().await.unwrap();
    found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["path"].as_str().unwrap().to_string(),
                h["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Polls `check` until it holds; panics with `what` and the server's stderr
/// after [`EVENTUALLY`].
async fn eventually<F, Fut>(served: &Served, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + EVENTUALLY;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {EVENTUALLY:?}; stderr:\n{}",
            served.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The number of the last `watch: run N` line on the server's stderr.
fn runs(stderr: &str) -> usize {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("watch: run "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// A client searching in a loop until stopped, counting answers and failures.
struct Searcher {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Searcher {
    fn start(served: &Served, query: &'static str) -> Searcher {
        let (stop, ok) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let failures = Arc::new(Mutex::new(Vec::new()));
        let url = served.at("/api/search");
        let (s, o, f) = (stop.clone(), ok.clone(), failures.clone());
        let task = tokio::spawn(async move {
            let client = http();
            while !s.load(Ordering::Relaxed) {
                let body = json!({"query": query, "k": 5});
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                        Ok(v) if v["results"].is_array() => {
                            o.fetch_add(1, Ordering::Relaxed);
                        }
                        other => f.lock().unwrap().push(format!("{other:?}")),
                    },
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        f.lock().unwrap().push(format!("{status}: {text}"));
                    }
                    Err(e) => f.lock().unwrap().push(e.to_string()),
                }
            }
        });
        Searcher {
            stop,
            ok,
            failures,
            task,
        }
    }

    /// Stops searching; (answers, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn saved_replaced_renamed_and_deleted_notes_reach_search_while_it_answers() {
    if !model_available() {
        return;
    }
    let ws = indexed("debounce_ms = 200\n");
    let served = Served::start(&ws, &["--watch"], &[]);
    eventually(&served, "the first run", || async {
        runs(&served.stderr()) >= 1
    })
    .await;
    let searcher = Searcher::start(&served, "how do I fine-tune a model with little memory");
    let note = ws.corpus().join("notes/kites.md");

    // Saved: a new note in a new folder is found.
    std::fs::create_dir_all(note.parent().unwrap()).unwrap();
    std::fs::write(
        &note,
        "# Kites\n\nA zephyrkite climbs on a steady sea breeze.\n",
    )
    .unwrap();
    eventually(&served, "the saved note is searchable", || async {
        let found = lexical(&served, "zephyrkite").await;
        found.len() == 1 && found[0].0 == "notes/kites.md" && found[0].1.contains("sea breeze")
    })
    .await;

    // Replaced as editors do (a temporary file renamed over it): only the new text.
    write_atomically(&note, "# Kites\n\nA quokkamarble rolls down the dune.\n");
    eventually(&served, "the replaced note shows its new text", || async {
        lexical(&served, "quokkamarble").await.len() == 1
            && lexical(&served, "zephyrkite").await.is_empty()
    })
    .await;

    // Saved in place, many times over: each save is found.
    for i in 0..5 {
        let word = format!("lanternfish{i}");
        std::fs::write(&note, format!("# Kites\n\nA {word} glows in the deep.\n")).unwrap();
        eventually(&served, &format!("save {i}"), || async {
            lexical(&served, &word).await.len() == 1
        })
        .await;
    }

    // Renamed: under its new path only; then deleted: gone.
    let renamed = ws.corpus().join("notes/sea-kites.md");
    std::fs::rename(&note, &renamed).unwrap();
    eventually(&served, "the renamed note", || async {
        let found = lexical(&served, "lanternfish4").await;
        found.len() == 1 && found[0].0 == "notes/sea-kites.md"
    })
    .await;
    let runs_before = runs(&served.stderr());
    std::fs::remove_file(&renamed).unwrap();
    eventually(&served, "the deleted note is gone", || async {
        lexical(&served, "lanternfish4").await.is_empty()
    })
    .await;

    let (answered, failures) = searcher.finish().await;
    assert!(failures.is_empty(), "failed searches: {failures:?}");
    assert!(answered > 10, "only {answered} searches answered");
    let stderr = served.stderr();
    // The rename kept the note's vectors; the deletion read no file.
    assert!(
        stderr.contains("1 added, 0 changed, 1 deleted; 0 chunks embedded, 1 kept"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "watch: run {} (1 changed path, 0 files read): 0 added, 0 changed, 1 deleted",
            runs_before + 1
        )),
        "{stderr}"
    );
    assert_eq!(served.terminate(Duration::from_secs(20)), Some(0));
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// What `git checkout` does to each file it changes: unlink, then create and
/// write anew.
fn check_out(corpus: &Path, files: usize, version: &str) {
    for i in 0..files {
        let path = corpus.join(format!("repo/note-{i:03}.md"));
        let _ = std::fs::remove_file(&path);
        std::fs::write(
            &path,
            format!("# Note {i}\n\nVersion {version} of note {i}: checkout{version}x{i}.\n"),
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkout_of_500_files_is_one_index_run() {
    if !model_available() {
        return;
    }
    // Generous: the run must wait for the end of the checkout even when a
    // busy machine pauses the writer.
    let ws = indexed("debounce_ms = 1000\n");
    std::fs::create_dir_all(ws.corpus().join("repo")).unwrap();
    check_out(&ws.corpus(), 500, "one");
    ws.build_index();
    let served = Served::start(&ws, &["--watch"], &[]);
    eventually(&served, "the first run", || async {
        runs(&served.stderr()) >= 1
    })
    .await;
    let searcher = Searcher::start(&served, "version of a note");
    check_out(&ws.corpus(), 500, "two");
    eventually(&served, "the checkout is indexed", || async {
        lexical(&served, "checkouttwox499").await.len() == 1
    })
    .await;
    let (answered, failures) = searcher.finish().await;
    // Give any stray second run time to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stderr = served.stderr();
    assert_eq!(runs(&stderr), 2, "{stderr}");
    assert!(
        stderr.contains(
            "watch: run 2 (500 changed paths, 500 files read): 0 added, 500 changed, 0 deleted"
        ),
        "{stderr}"
    );
    assert!(failures.is_empty(), "failed searches: {failures:?}");
    assert!(answered > 0);
    assert!(lexical(&served, "checkoutonex7").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_note_is_a_warning_and_watching_goes_on() {
    if !model_available() {
        return;
    }
    let ws = indexed("debounce_ms = 200\n");
    let served = Served::start(&ws, &["--watch"], &[]);
    eventually(&served, "the first run", || async {
        runs(&served.stderr()) >= 1
    })
    .await;
    std::fs::write(
        ws.corpus().join("broken.md"),
        b"# Broken\n\n\xff\xfe not text\n",
    )
    .unwrap();
    std::fs::write(
        ws.corpus().join("header.md"),
        "---\ntitle: \"never closed\n---\n# Header\n\nA wobblecrane stands in a broken header.\n",
    )
    .unwrap();
    eventually(&served, "the warnings", || async {
        let err = served.stderr();
        err.contains("warning: skipped corpus/broken.md: not UTF-8")
            && err.contains("warning: corpus/header.md: front matter")
    })
    .await;
    // The note with the broken header is indexed without it; the next save works.
    std::fs::write(
        ws.corpus().join("fine.md"),
        "# Fine\n\nA glimmerwort grows.\n",
    )
    .unwrap();
    eventually(&served, "a later save", || async {
        lexical(&served, "glimmerwort").await.len() == 1
            && lexical(&served, "wobblecrane").await.len() == 1
    })
    .await;
    assert_eq!(served.terminate(Duration::from_secs(20)), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn polling_finds_saves_and_deletions_without_events() {
    if !model_available() {
        return;
    }
    let ws = indexed("debounce_ms = 200\npoll_ms = 200\n");
    let served = Served::start(&ws, &["--watch", "--poll"], &[]);
    eventually(&served, "the first run", || async {
        runs(&served.stderr()) >= 1
    })
    .await;
    assert!(
        served.stderr().contains("by polling every 200 ms"),
        "{}",
        served.stderr()
    );
    let note = ws.corpus().join("polled.md");
    std::fs::write(&note, "# Polled\n\nA pollywog swims.\n").unwrap();
    eventually(&served, "the saved note", || async {
        lexical(&served, "pollywog").await.len() == 1
    })
    .await;
    std::fs::remove_file(&note).unwrap();
    eventually(&served, "the deleted note", || async {
        lexical(&served, "pollywog").await.is_empty()
    })
    .await;
    assert_eq!(served.terminate(Duration::from_secs(20)), Some(0));
}

/// `ragmap index --watch` in `ws`, its output collected.
struct IndexWatch {
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

impl IndexWatch {
    fn start(ws: &Workspace, wrapper: &[&str]) -> IndexWatch {
        let binary = env!("CARGO_BIN_EXE_ragmap");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.arg("-C")
            .arg(ws.path())
            .args(["index", "--watch"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let collect = |pipe: Box<dyn std::io::Read + Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let sink = text.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut sink = sink.lock().unwrap();
                    sink.push_str(&line);
                    sink.push('\n');
                }
            });
            text
        };
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let err = collect(Box::new(child.stderr.take().unwrap()));
        IndexWatch { child, out, err }
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.out.lock().unwrap(),
            self.err.lock().unwrap()
        )
    }

    fn wait_for(&self, what: &str, check: impl Fn(&str, &str) -> bool) {
        let deadline = Instant::now() + EVENTUALLY;
        while !check(&self.out.lock().unwrap(), &self.err.lock().unwrap()) {
            assert!(Instant::now() < deadline, "{what}: {}", self.output());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends `signal` and waits for the exit code.
    fn stop(mut self, signal: &str) -> Option<i32> {
        self.signal(signal);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "still running: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for IndexWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ragmap search --no-server --json` for `word` (lexical): the paths found.
fn searched(ws: &Workspace, word: &str) -> Vec<String> {
    let out = ws.run(&["search", word, "--mode", "lexical", "--no-server", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let hits: Value = serde_json::from_str(&stdout(&out)).unwrap();
    hits.as_array()
        .unwrap()
        .iter()
        .map(|h| h["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn index_watch_updates_the_index_shares_it_with_index_runs_and_stops_on_ctrl_c() {
    if !model_available() {
        return;
    }
    let ws = indexed("debounce_ms = 200\n");
    let watching = IndexWatch::start(&ws, &[]);
    watching.wait_for("the first run", |out, _| out.contains("run 1 (full scan"));
    ws.write_doc(
        "moths.md",
        "# Moths\n\nA mothlantern circles the porch light.\n",
    );
    watching.wait_for("the run", |out, _| out.contains("run 2 (1 changed path"));
    assert_eq!(searched(&ws, "mothlantern"), ["moths.md"]);
    // An index run by hand meanwhile takes the lock as usual.
    let by_hand = ws.run(&["index"]);
    assert_eq!(by_hand.status.code(), Some(0), "{}", stderr(&by_hand));
    assert_eq!(watching.stop("INT"), Some(0));
}

#[test]
fn an_overflowed_event_queue_means_one_full_scan() {
    if !model_available() {
        return;
    }
    let ws = indexed("debounce_ms = 200\n");
    let watching = IndexWatch::start(&ws, &[]);
    watching.wait_for("watching", |out, err| {
        out.contains("run 1 (full scan") && err.contains("watching ")
    });
    // Stopped, the watcher reads no events while two notes are written over
    // and over: far more events than the kernel queues (16,384 by default).
    watching.signal("STOP");
    let (a, b) = (ws.corpus().join("a.md"), ws.corpus().join("b.md"));
    for i in 0..12_000 {
        std::fs::write(
            if i % 2 == 0 { &a } else { &b },
            format!("# Flood\n\nfloodword{i}\n"),
        )
        .unwrap();
    }
    watching.signal("CONT");
    watching.wait_for("the full scan", |out, err| {
        err.contains("the file-system event queue overflowed")
            && err.contains("scanning the whole corpus")
            && out.contains("(full scan")
            && out.contains("2 added")
    });
    assert_eq!(searched(&ws, "floodword11999"), ["b.md"]);
    assert_eq!(watching.stop("TERM"), Some(0));
}

#[test]
fn past_the_watch_limit_the_corpus_is_polled() {
    if !model_available() {
        return;
    }
    let ws = indexed("debounce_ms = 200\npoll_ms = 200\n");
    for dir in ["one", "two", "three"] {
        ws.write_doc(
            &format!("{dir}/note.md"),
            &format!("# {dir}\n\nA note in {dir}.\n"),
        );
    }
    // A user namespace of its own with a limit of one watched folder, as on
    // a machine whose fs.inotify.max_user_watches is used up.
    let probe = Command::new("unshare")
        .args([
            "-U",
            "-r",
            "sh",
            "-c",
            "echo 1 > /proc/sys/user/max_inotify_watches",
        ])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        unavailable::<()>("unshare cannot create a user namespace with its own inotify limit");
        return;
    }
    let script = "echo 1 > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\"";
    let watching = IndexWatch::start(&ws, &["unshare", "-U", "-r", "sh", "-c", script]);
    watching.wait_for("the fallback", |out, err| {
        err.contains("limit of watched folders is reached")
            && err.contains("by polling every 200 ms")
            && out.contains("run 1 (full scan")
    });
    ws.write_doc("two/later.md", "# Later\n\nA snailcomet crawls.\n");
    watching.wait_for("the polled change", |out, _| {
        out.contains("run 2 (1 changed path")
    });
    assert_eq!(searched(&ws, "snailcomet"), ["two/later.md"]);
    assert_eq!(watching.stop("TERM"), Some(0));
}

/// Five sections, each its own chunk at `[chunk] max_tokens = 40`.
fn sections(edited: usize, word: &str) -> String {
    let topics = [
        "harbours",
        "glaciers",
        "orchards",
        "volcanoes",
        "lighthouses",
    ];
    let mut text = String::from("# Field notes\n\n");
    for (i, topic) in topics.iter().enumerate() {
        let extra = if i == edited { word } else { "" };
        text.push_str(&format!(
            "## {topic}\n\nThese notes describe {topic} seen on the trip, how they looked and where they were. {extra}\n\n"
        ));
    }
    text
}

#[test]
fn a_scoped_run_reads_only_its_paths_and_keeps_the_vectors_of_unchanged_chunks() {
    if !model_available() {
        return;
    }
    let ws =
        Workspace::new("[chunk]\nmax_tokens = 40\noverlap_tokens = 0\n\n[embed]\nsessions = 1\n");
    write_topic_docs(&ws);
    ws.write_doc("trip/notes.md", &sections(9, ""));
    ws.write_doc("trip/more.md", "# More\n\nMore about the trip.\n");
    ws.build_index();
    let mut models = ragmap::index::Models::default();
    let mut scoped = |paths: &[&str]| {
        let scope = ragmap::index::Scope::Paths(paths.iter().map(|p| p.to_string()).collect());
        let options = ragmap::index::BuildOptions {
            rebuild: false,
            progress: false,
        };
        ragmap::index::build_in(&ws.config(), &options, &scope, &mut models).unwrap()
    };

    // One section edited: one file read, its chunk embedded, the other four kept.
    ws.write_doc("trip/notes.md", &sections(2, "quillfeather"));
    // Changed outside the scope: not looked at by this run.
    ws.write_doc("en/garden.md", "# Growing tomatoes\n\nChanged meanwhile.\n");
    let edit = scoped(&["trip/notes.md"]);
    assert_eq!(
        (edit.scanned, edit.changed, edit.unchanged),
        (1, 1, 4),
        "{edit:?}"
    );
    assert_eq!(edit.chunks_embedded, 1, "{edit:?}");
    assert_eq!(edit.chunks_reused, 4, "{edit:?}");
    assert_eq!(searched(&ws, "quillfeather"), ["trip/notes.md"]);
    assert_eq!(searched(&ws, "meanwhile"), Vec::<String>::new());

    // A folder gone: its documents are deleted without reading anything.
    std::fs::remove_dir_all(ws.corpus().join("trip")).unwrap();
    let gone = scoped(&["trip"]);
    assert_eq!(
        (gone.scanned, gone.deleted, gone.documents),
        (0, 2, 3),
        "{gone:?}"
    );
    assert_eq!(searched(&ws, "quillfeather"), Vec::<String>::new());

    // A full run finds what the scoped ones did not look at.
    let full = ws.build_index();
    assert_eq!((full.scanned, full.changed), (3, 1), "{full:?}");
    assert_eq!(searched(&ws, "meanwhile"), ["en/garden.md"]);
}
