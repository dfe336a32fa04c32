//! Scratch workspaces, the real binary run in them, and the checks on its
//! output that many tests share.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ragmap::config::Config;
use ragmap::corpus::{self, FrontMatter};
use ragmap::crawl::{CrawlOptions, Entry};

/// A scratch workspace with an empty corpus/ and the given config.toml text.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new(config_toml: &str) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("corpus")).unwrap();
        std::fs::write(dir.path().join("config.toml"), config_toml).unwrap();
        Workspace { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn corpus(&self) -> PathBuf {
        self.dir.path().join("corpus")
    }

    pub fn write_doc(&self, rel: &str, text: &str) {
        let p = self.corpus().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn config(&self) -> Config {
        Config::load(self.path()).unwrap()
    }

    /// `ragmap index` through the library (incremental, no progress bar).
    pub fn build_index(&self) -> ragmap::index::BuildReport {
        let options = ragmap::index::BuildOptions {
            rebuild: false,
            progress: false,
        };
        ragmap::index::build(&self.config(), &options).unwrap()
    }

    /// `roadmap.md` in the workspace (not in the corpus): `headings` (markdown
    /// heading lines), then one list item per `(title, url)`.
    pub fn write_roadmap(&self, headings: &str, links: &[(impl Display, impl Display)]) {
        let mut md = format!("{}\n\n", headings.trim_end());
        for (title, url) in links {
            md.push_str(&format!("- [{title}](<{url}>)\n"));
        }
        std::fs::write(self.roadmap_path(), md).unwrap();
    }

    pub fn roadmap_path(&self) -> PathBuf {
        self.path().join("roadmap.md")
    }

    /// The roadmap's path as `--roadmap` and [`CrawlOptions`] take it.
    pub fn roadmap(&self) -> String {
        self.roadmap_path().display().to_string()
    }

    /// Crawl options for the workspace's roadmap, following links `depth` hops.
    pub fn crawl_options(&self, depth: u32) -> CrawlOptions {
        CrawlOptions {
            roadmap: Some(self.roadmap()),
            depth,
            ..Default::default()
        }
    }

    /// The stored document of a crawl entry: front matter and body.
    pub fn document(&self, e: &Entry) -> (FrontMatter, String) {
        let rel = e
            .document
            .as_ref()
            .unwrap_or_else(|| panic!("no document for {e:?}"));
        let text = std::fs::read_to_string(self.corpus().join(rel)).unwrap();
        let (front, body) = corpus::parse(&text).unwrap();
        (front, body.to_string())
    }

    /// The real binary with `-C <workspace>` and `args`, output discarded.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ragmap"));
        cmd.arg("-C")
            .arg(self.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// Runs the real binary in this workspace.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.run_with_input(args, env, "")
    }

    /// Runs the real binary with `input` on its standard input.
    pub fn run_with_input(&self, args: &[&str], env: &[(&str, &str)], input: &str) -> Output {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // A binary that exits before reading everything closes the pipe: fine.
        let _ = stdin.write_all(input.as_bytes());
        drop(stdin);
        child.wait_with_output().unwrap()
    }
}

/// Starts `cmd`, SIGKILLs it after `delay` and reaps it.
pub fn kill_after(cmd: &mut Command, delay: Duration) {
    let mut child = cmd.spawn().unwrap();
    std::thread::sleep(delay);
    let _ = child.kill(); // SIGKILL on Unix
    let _ = child.wait();
}

/// Three documents on unrelated topics (cooking in Chinese, gardening and
/// LoRA in English) that retrieval tests rank against.
pub fn write_topic_docs(ws: &Workspace) {
    ws.write_doc(
        "zh/cooking.md",
        "# 红烧肉做法\n\n五花肉切块焯水，加冰糖炒出糖色，再放入生抽、老抽和八角，小火慢炖一个小时即可出锅。\n",
    );
    ws.write_doc(
        "en/garden.md",
        "# Growing tomatoes\n\nPlant tomato seedlings in full sun, water them deeply twice a week and stake the stems once they start to flower.\n",
    );
    ws.write_doc(
        "en/finetune.md",
        "# Fine-tuning with LoRA\n\nLoRA freezes the pretrained weights and trains small low-rank adapter matrices, which cuts the memory needed to fine-tune a large model.\n",
    );
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A user-facing failure: the given exit code, one line on stderr, no panic.
pub fn assert_clean_failure(o: &Output, code: i32, must_mention: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected one line, got: {err}"
    );
    assert!(
        err.contains(must_mention),
        "expected {must_mention:?} in: {err}"
    );
}
