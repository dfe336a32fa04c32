//! `--watch`: keeps the index in step with the corpus folder while `ragmap
//! index --watch` or `ragmap serve --watch` runs.
//!
//! File-system events (through `notify`, debounced per path by
//! `notify-debouncer-full`, which pairs the two halves of a rename) name the
//! markdown files and folders that were created, written, renamed or
//! removed. They are collected until the corpus has been quiet for
//! `[watch] debounce_ms`, so an editor's save (a temporary file renamed over
//! the note) or a `git checkout` of hundreds of files is one index run,
//! which reads only the paths named ([`Scope::Paths`]) and keeps the vectors
//! of unchanged chunks. Runs happen one at a time on one thread; a run that
//! finds the index locked by another `ragmap index` waits for it.
//!
//! Where events cannot be trusted the watcher says so in one line and falls
//! back: an overflowed event queue, or the system's limit of watched folders
//! reached, means a full scan (and, for the limit, polling from then on); a
//! corpus on a network file system is polled (`[watch] poll`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, PollWatcher, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{
    new_debouncer_opt, DebounceEventResult, DebouncedEvent, Debouncer, NoCache, RecommendedCache,
};

use crate::config::{Config, Poll};
use crate::corpus;
use crate::index::{self, BuildOptions, BuildReport, IndexError, Models, Scope};
use crate::term::sanitize;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("corpus folder {0} does not exist; create it or set [paths] corpus in config.toml")]
    NoCorpus(PathBuf),
    #[error("cannot watch {path}: {detail}; try `--poll`")]
    Watch { path: PathBuf, detail: String },
    #[error("cannot start the watcher: {0}")]
    Thread(std::io::Error),
}

/// How changes are noticed and grouped (`[watch]`, `--poll`).
#[derive(Debug, Clone)]
pub struct Options {
    /// Quiet time that ends a burst of changes.
    pub debounce: Duration,
    pub poll: Poll,
    pub poll_interval: Duration,
}

impl Options {
    pub fn from_config(config: &Config) -> Options {
        Options {
            debounce: Duration::from_millis(config.watch.debounce_ms.max(10)),
            poll: config.watch.poll,
            poll_interval: Duration::from_millis(config.watch.poll_ms.max(10)),
        }
    }
}

/// What the watcher tells its owner, who prints it.
#[derive(Debug)]
pub enum Notice {
    /// Watching started (or changed method): how changes are noticed.
    Watching(String),
    /// One index run finished.
    Indexed(Run),
    /// Something went wrong, or a fallback was taken; watching goes on.
    Warning(String),
}

/// One index run of the watcher.
#[derive(Debug)]
pub struct Run {
    /// Counts from 1.
    pub number: usize,
    /// The changed paths it looked at; `None` for a full scan.
    pub paths: Option<usize>,
    pub report: BuildReport,
}

impl Run {
    /// One line: what the run read, what it changed and how long it took.
    pub fn summary(&self) -> String {
        let r = &self.report;
        let looked = match self.paths {
            None => format!("full scan, {} files read", r.scanned),
            Some(n) => format!(
                "{n} changed path{}, {} file{} read",
                plural(n),
                r.scanned,
                plural(r.scanned)
            ),
        };
        let changed = r.added + r.changed + r.deleted;
        let what = if changed == 0 && r.rebuilt.is_none() {
            "nothing to re-index".to_string()
        } else {
            format!(
                "{} added, {} changed, {} deleted; {} chunks embedded, {} kept",
                r.added, r.changed, r.deleted, r.chunks_embedded, r.chunks_reused
            )
        };
        let what = match &r.rebuilt {
            Some(why) => format!("rebuilt ({why}): {what}"),
            None => what,
        };
        format!(
            "run {} ({looked}): {what}; {} documents in {:.2} s",
            self.number, r.documents, r.total_seconds
        )
    }

    /// One line per file skipped or read without its front matter, naming it.
    pub fn warnings(&self) -> Vec<String> {
        let skipped = self.report.skipped.iter().map(|s| ("skipped ", s));
        let partly = self.report.warnings.iter().map(|w| ("", w));
        skipped
            .chain(partly)
            .map(|(what, s)| {
                format!(
                    "{what}corpus/{}: {}",
                    sanitize(&s.rel_path),
                    sanitize(&s.reason)
                )
            })
            .collect()
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The watcher, running until [`Watching::stop`].
pub struct Watching {
    signals: Sender<Signal>,
    thread: JoinHandle<()>,
}

impl Watching {
    /// Whether the watcher stopped by itself (it never should).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops watching: at once between runs; a run in progress gets `grace`
    /// to finish, then is abandoned (nothing of it is committed: the index
    /// keeps its last state). True when the watcher ended within `grace`.
    pub fn stop(self, grace: Duration) -> bool {
        let _ = self.signals.send(Signal::Stop);
        let deadline = Instant::now() + grace;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.thread.join();
        true
    }
}

/// Starts watching the corpus of `config` on a thread of its own: a full
/// scan first (what changed while nothing watched), then one run per burst
/// of changes. `notices` is called on that thread.
pub fn watch(
    config: &Config,
    options: Options,
    notices: impl FnMut(Notice) + Send + 'static,
) -> Result<Watching, WatchError> {
    let corpus = config.corpus_dir();
    if !corpus.is_dir() {
        return Err(WatchError::NoCorpus(corpus));
    }
    // Events name paths as watched; the canonical form matches them to the
    // corpus whichever way it was reached.
    let corpus = corpus.canonicalize().unwrap_or(corpus);
    let (signals, received) = mpsc::channel();
    let source = Source::open(&corpus, &options, &signals)?;
    let runner = Runner {
        config: config.clone(),
        models: Models::kept(),
        corpus,
        options,
        signals: signals.clone(),
        received,
        notices: Box::new(notices),
        source,
        runs: 0,
        waiting: false,
    };
    let thread = std::thread::Builder::new()
        .name("ragmap-watch".into())
        .spawn(move || runner.run())
        .map_err(WatchError::Thread)?;
    Ok(Watching { signals, thread })
}

/// What reaches the indexing thread.
#[derive(Debug)]
enum Signal {
    /// Corpus paths (relative, `/`-separated) that changed.
    Changed(Vec<String>),
    /// Events were lost: only a full scan finds what changed.
    Rescan(String),
    /// The system's limit of watched folders was reached.
    WatchLimit,
    /// How the corpus is watched (from the source, whose notices the
    /// indexing thread sends on).
    Watching(String),
    Warning(String),
    Stop,
}

/// Where events come from; dropping it stops them.
enum Source {
    Events(#[allow(dead_code)] Debouncer<RecommendedWatcher, RecommendedCache>),
    Polling(#[allow(dead_code)] Debouncer<PollWatcher, NoCache>),
}

const LIMIT_LINE: &str = "the system's limit of watched folders is reached (fs.inotify.max_user_watches; raise it with `sudo sysctl fs.inotify.max_user_watches=524288`)";

impl Source {
    /// Events, or polling when asked for, when the file system sends no
    /// events, or when the system cannot watch every folder.
    fn open(
        corpus: &Path,
        options: &Options,
        signals: &Sender<Signal>,
    ) -> Result<Source, WatchError> {
        let remote = network_file_system(corpus);
        let poll = match (options.poll, remote) {
            (Poll::Always, _) => Some("--poll or [watch] poll = \"always\"".to_string()),
            (Poll::Auto, Some(kind)) => Some(format!(
                "{kind} is a network file system, which reports no changes made elsewhere"
            )),
            _ => None,
        };
        if let Some(reason) = poll {
            return Source::polling(corpus, options, signals, &reason);
        }
        let watched = new_debouncer_opt::<_, RecommendedWatcher, RecommendedCache>(
            options.debounce / 2,
            None,
            handler(corpus, signals.clone()),
            RecommendedCache::new(),
            notify::Config::default(),
        )
        .and_then(|mut debouncer| {
            debouncer.watch(corpus, RecursiveMode::Recursive)?;
            Ok(debouncer)
        });
        match watched {
            Ok(debouncer) => {
                note(
                    signals,
                    format!("watching {} for changes", corpus.display()),
                );
                Ok(Source::Events(debouncer))
            }
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                Source::polling(corpus, options, signals, LIMIT_LINE)
            }
            Err(e) => Err(WatchError::Watch {
                path: corpus.to_path_buf(),
                detail: e.to_string(),
            }),
        }
    }

    fn polling(
        corpus: &Path,
        options: &Options,
        signals: &Sender<Signal>,
        reason: &str,
    ) -> Result<Source, WatchError> {
        let config = notify::Config::default()
            .with_poll_interval(options.poll_interval)
            .with_compare_contents(false);
        let failed = |e: notify::Error| WatchError::Watch {
            path: corpus.to_path_buf(),
            detail: e.to_string(),
        };
        let mut debouncer = new_debouncer_opt::<_, PollWatcher, NoCache>(
            options.debounce / 2,
            None,
            handler(corpus, signals.clone()),
            NoCache,
            config,
        )
        .map_err(failed)?;
        debouncer
            .watch(corpus, RecursiveMode::Recursive)
            .map_err(failed)?;
        note(
            signals,
            format!(
                "watching {} by polling every {} ms: {reason}",
                corpus.display(),
                options.poll_interval.as_millis()
            ),
        );
        Ok(Source::Polling(debouncer))
    }
}

fn note(signals: &Sender<Signal>, line: String) {
    let _ = signals.send(Signal::Watching(line));
}

/// Turns the debouncer's output into signals for the indexing thread.
fn handler(
    corpus: &Path,
    signals: Sender<Signal>,
) -> impl FnMut(DebounceEventResult) + Send + 'static {
    let corpus = corpus.to_path_buf();
    move |result| match result {
        Ok(events) => {
            let mut changed = Vec::new();
            for event in &events {
                if event.need_rescan() {
                    let _ = signals.send(Signal::Rescan(
                        "the file-system event queue overflowed (fs.inotify.max_queued_events)"
                            .into(),
                    ));
                }
                changed.extend(changed_paths(&corpus, event));
            }
            if !changed.is_empty() {
                let _ = signals.send(Signal::Changed(changed));
            }
        }
        Err(errors) => {
            for e in errors {
                let signal = match e.kind {
                    notify::ErrorKind::MaxFilesWatch => Signal::WatchLimit,
                    _ => Signal::Warning(format!("watching the corpus: {e}")),
                };
                let _ = signals.send(signal);
            }
        }
    }
}

/// The corpus paths an event says changed, relative and `/`-separated:
/// markdown files written, created, renamed or removed, and folders created,
/// renamed or removed (their documents come and go with them). Reads (the
/// index run's own among them), other files and hidden names are ignored.
fn changed_paths(corpus: &Path, event: &DebouncedEvent) -> Vec<String> {
    let structural = matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    );
    let written = matches!(
        event.kind,
        EventKind::Any
            | EventKind::Modify(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    );
    if !structural && !written {
        return Vec::new();
    }
    event
        .paths
        .iter()
        .filter(|path| {
            if corpus::is_markdown(path) {
                return true;
            }
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.') || n.ends_with('~'));
            // A folder, or what may have been one: gone, with no extension.
            let folder = path.is_dir() || (!path.exists() && path.extension().is_none());
            structural && folder && !hidden
        })
        .filter_map(|path| {
            let rel = path.strip_prefix(corpus).ok()?;
            (!rel.as_os_str().is_empty()).then(|| corpus::rel_path(corpus, path))
        })
        .collect()
}

/// The kind of network file system `path` is on, when it is one.
#[cfg(target_os = "linux")]
fn network_file_system(path: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed struct statfs to fill.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    // Magic numbers of linux/magic.h (and fs/smb's).
    Some(match stat.f_type as u64 {
        0x6969 => "NFS",
        0x517b | 0xff53_4d42 | 0xfe53_4d42 => "SMB",
        0x0102_1997 => "9p (WSL's Windows drives)",
        0x6573_5546 => "FUSE",
        0x5346_414f => "AFS",
        0x00c3_6400 => "Ceph",
        _ => return None,
    })
}

#[cfg(not(target_os = "linux"))]
fn network_file_system(_path: &Path) -> Option<&'static str> {
    None
}

/// Changes waiting for the next run.
#[derive(Debug, Default)]
struct Pending {
    paths: BTreeSet<String>,
    /// Why everything must be read, when it must.
    full: Option<String>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.full.is_none()
    }

    fn merge(&mut self, other: Pending) {
        self.paths.extend(other.paths);
        self.full = self.full.take().or(other.full);
    }

    fn scope(&self) -> Scope {
        match self.full {
            Some(_) => Scope::Everything,
            None => Scope::Paths(self.paths.clone()),
        }
    }
}

/// How long a run that found the index locked waits before trying again.
const LOCKED_RETRY: Duration = Duration::from_secs(1);

/// The longest a burst of changes is collected: a corpus that never stays
/// quiet (a note appended to every second) is still indexed, in parts.
const LONGEST_BURST: Duration = Duration::from_secs(10);

/// The indexing thread: collects changes, runs the index, reports.
struct Runner {
    config: Config,
    /// Loaded by the first run that embeds, kept for the next ones.
    models: Models,
    corpus: PathBuf,
    options: Options,
    signals: Sender<Signal>,
    received: Receiver<Signal>,
    notices: Box<dyn FnMut(Notice) + Send>,
    source: Source,
    runs: usize,
    /// Whether the last run found another `ragmap index` holding the index.
    waiting: bool,
}

impl Runner {
    fn run(mut self) {
        // The build splits documents on a pool of its own, not the one the
        // server's requests use. Runs keep the normal priority: at nice 10 a
        // run got a few percent of a core beside other busy processes, and a
        // saved note took 12 s to become searchable.
        let pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("ragmap-watch-{i}"))
            .build()
            .ok();
        let mut pending = Pending {
            full: Some("start".into()),
            ..Pending::default()
        };
        let mut retry_at = Some(Instant::now());
        loop {
            let wait = retry_at.map_or(Duration::from_secs(3600), |at| {
                at.saturating_duration_since(Instant::now())
            });
            match self.received.recv_timeout(wait) {
                Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(signal) => {
                    self.absorb(signal, &mut pending);
                    if !self.settle(&mut pending) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if pending.is_empty() || retry_at.is_some_and(|at| at > Instant::now()) {
                continue;
            }
            retry_at = match &pool {
                Some(pool) => pool.install(|| self.index(&mut pending)),
                None => self.index(&mut pending),
            };
        }
    }

    /// Takes signals until none came for the debounce time (or the burst
    /// went on for [`LONGEST_BURST`]); false on Stop.
    fn settle(&mut self, pending: &mut Pending) -> bool {
        let started = Instant::now();
        while started.elapsed() < LONGEST_BURST {
            match self.received.recv_timeout(self.options.debounce) {
                Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
                Ok(signal) => self.absorb(signal, pending),
                Err(RecvTimeoutError::Timeout) => return true,
            }
        }
        true
    }

    fn absorb(&mut self, signal: Signal, pending: &mut Pending) {
        match signal {
            Signal::Changed(paths) => pending.paths.extend(paths),
            Signal::Rescan(why) => {
                (self.notices)(Notice::Warning(format!("{why}: scanning the whole corpus")));
                pending.full = Some(why);
            }
            Signal::WatchLimit => {
                if let Source::Events(_) = self.source {
                    self.fall_back_to_polling(pending);
                }
            }
            Signal::Watching(line) => (self.notices)(Notice::Watching(line)),
            Signal::Warning(line) => (self.notices)(Notice::Warning(line)),
            Signal::Stop => {}
        }
    }

    /// Events for some folders are missing from now on: poll instead, and
    /// read everything once.
    fn fall_back_to_polling(&mut self, pending: &mut Pending) {
        let line = format!("{LIMIT_LINE}: scanning the whole corpus");
        (self.notices)(Notice::Warning(line));
        pending.full = Some("watch limit".into());
        match Source::polling(&self.corpus, &self.options, &self.signals, LIMIT_LINE) {
            Ok(source) => self.source = source,
            Err(e) => (self.notices)(Notice::Warning(format!(
                "{e}; changes are noticed only in the folders already watched"
            ))),
        }
    }

    /// One index run over what is pending; when the index is locked by
    /// another run, the changes stay pending and the time to retry is returned.
    fn index(&mut self, pending: &mut Pending) -> Option<Instant> {
        let taken = std::mem::take(pending);
        let scope = taken.scope();
        let options = BuildOptions {
            rebuild: false,
            progress: false,
        };
        let (config, models) = (&self.config, &mut self.models);
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            index::build_in(config, &options, &scope, models)
        }));
        let result = match built {
            Ok(result) => result,
            Err(_) => {
                self.models = Models::kept();
                (self.notices)(Notice::Warning(
                    "an index run failed unexpectedly; the index keeps its last state, watching goes on".into(),
                ));
                return None;
            }
        };
        match result {
            Ok(report) => {
                self.runs += 1;
                self.waiting = false;
                let paths = taken.full.is_none().then_some(taken.paths.len());
                let number = self.runs;
                (self.notices)(Notice::Indexed(Run {
                    number,
                    paths,
                    report,
                }));
                None
            }
            Err(IndexError::Locked(_)) => {
                if !std::mem::replace(&mut self.waiting, true) {
                    (self.notices)(Notice::Warning(
                        "another `ragmap index` is running; indexing after it".into(),
                    ));
                }
                pending.merge(taken);
                Some(Instant::now() + LOCKED_RETRY)
            }
            Err(e) => {
                (self.notices)(Notice::Warning(format!(
                    "indexing failed: {e}; the index keeps its last state, the next change tries again"
                )));
                pending.merge(taken);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};
    use notify::Event;

    fn event(kind: EventKind, paths: &[&Path]) -> DebouncedEvent {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(p.to_path_buf());
        }
        DebouncedEvent::new(e, Instant::now())
    }

    #[test]
    fn only_markdown_files_and_folders_count() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("notes")).unwrap();
        std::fs::write(root.join("notes/a.md"), "x").unwrap();
        std::fs::write(root.join("notes/b.txt"), "x").unwrap();
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Content));
        let changed = |kind, paths: &[&str]| {
            let paths: Vec<PathBuf> = paths.iter().map(|p| root.join(p)).collect();
            let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
            changed_paths(root, &event(kind, &refs))
        };
        assert_eq!(changed(write, &["notes/a.md"]), ["notes/a.md"]);
        assert!(changed(write, &["notes/b.txt"]).is_empty());
        // The index run's own reads are no change.
        let opened = EventKind::Access(AccessKind::Open(AccessMode::Any));
        assert!(changed(opened, &["notes/a.md"]).is_empty());
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(changed(closed, &["notes/a.md"]), ["notes/a.md"]);
        // An editor's save: its temporary file renamed over the note.
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert_eq!(
            changed(renamed, &["notes/.a.md.swp", "notes/a.md"]),
            ["notes/a.md"]
        );
        // Folders made, moved or removed carry their documents along; a
        // folder's own attributes changing does not.
        let created = EventKind::Create(CreateKind::Folder);
        assert_eq!(changed(created, &["notes"]), ["notes"]);
        let removed = EventKind::Remove(RemoveKind::Any);
        assert_eq!(changed(removed, &["gone"]), ["gone"]);
        assert!(changed(removed, &["gone.txt", ".hidden", "a.md~"]).is_empty());
        assert!(changed(write, &["notes"]).is_empty());
        assert!(changed(created, &[""]).is_empty(), "the corpus itself");
    }

    #[test]
    fn a_rescan_reads_everything_and_paths_accumulate() {
        let mut pending = Pending::default();
        assert!(pending.is_empty());
        pending.paths.insert("a.md".into());
        assert_eq!(
            pending.scope(),
            Scope::Paths(BTreeSet::from(["a.md".to_string()]))
        );
        pending.merge(Pending {
            paths: BTreeSet::from(["b.md".to_string()]),
            full: Some("overflow".into()),
        });
        assert_eq!(pending.paths.len(), 2);
        assert_eq!(pending.scope(), Scope::Everything);
    }

    #[test]
    fn an_overflowed_queue_asks_for_a_full_scan() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let mut handle = handler(dir.path(), tx);
        let overflow = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        handle(Ok(vec![DebouncedEvent::new(overflow, Instant::now())]));
        assert!(matches!(rx.try_recv(), Ok(Signal::Rescan(_))));
        handle(Err(vec![notify::Error::new(
            notify::ErrorKind::MaxFilesWatch,
        )]));
        assert!(matches!(rx.try_recv(), Ok(Signal::WatchLimit)));
    }
}
