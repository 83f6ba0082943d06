//! Tests of `session gc` against registries that change under it: a locked copy is left for a later
//! run, and a session that comes back to life, or writes, while cleanup runs keeps its directory
//! and state.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::backend::NodeFuture;
use crate::session::{SessionEntry, SessionStore};

/// The registry writes the fake registries below ignore: gc only reads and forgets.
macro_rules! no_op_writes {
    () => {
        fn register<'a>(&'a self, _: &'a str, _: &'a SessionEntry) -> NodeFuture<'a, ()> {
            Box::pin(async { Ok(()) })
        }
        fn touch<'a>(&'a self, _: &'a str, _: &'a SessionEntry) -> NodeFuture<'a, ()> {
            Box::pin(async { Ok(()) })
        }
        fn end<'a>(&'a self, _: &'a str, _: &'a str, _: u64) -> NodeFuture<'a, bool> {
            Box::pin(async { Ok(false) })
        }
    };
}

/// A registry holding one session, `s1`: silent at the first look, then (when
/// `comes_back`) active again from the second look on, as if it wrote in between.
struct Flaky {
    looks: AtomicUsize,
    comes_back: bool,
}

impl SessionStore for Flaky {
    fn label(&self) -> String {
        "flaky".into()
    }
    no_op_writes!();
    fn entries<'a>(&'a self, _: &'a str) -> NodeFuture<'a, Vec<SessionEntry>> {
        let first = self.looks.fetch_add(1, Ordering::SeqCst) == 0;
        let active = if first || !self.comes_back {
            1
        } else {
            now_ms()
        };
        Box::pin(async move {
            Ok(vec![SessionEntry {
                id: "s1".into(),
                started_ms: 1,
                last_active_ms: active,
                ..Default::default()
            }])
        })
    }
    fn forget<'a>(&'a self, _: &'a str, _: &'a [String]) -> NodeFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

fn local_locks(root: &Path) -> crate::Result<Coordinator> {
    let locks = root.join(".claude/.tractatus/locks");
    std::fs::create_dir_all(&locks).unwrap();
    Coordinator::local(
        crate::Config::new(vec![]),
        crate::Identity::current("t"),
        locks,
    )
}

/// gc with `older_than` zero, `session-state.json` per session, on local locks.
async fn gc_at(sessions: &Sessions, root: &Path) -> Collected {
    let per_session = [".claude/session-state.json".to_owned()];
    sessions
        .gc(Duration::ZERO, &per_session, || async { local_locks(root) })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_session_whose_copy_is_locked_is_left_for_a_later_run() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let dir = root.join(SESSIONS_DIR).join("s1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("session-state.json"), "{}").unwrap();
    let store = Arc::new(Flaky {
        looks: AtomicUsize::new(0),
        comes_back: false,
    });
    let sessions = Sessions::new(
        vec![store],
        "ns".into(),
        root.clone(),
        Duration::from_secs(60),
        Duration::from_secs(5),
    );
    let writer = local_locks(&root).unwrap();
    let held = writer
        .try_acquire(".claude/sessions/s1/session-state.json")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let collected = gc_at(&sessions, &root).await;
    assert!(started.elapsed() < COPY_LOCK_WAIT + Duration::from_secs(3));
    assert_eq!(collected.removed, []);
    assert_eq!(collected.busy.len(), 1, "{collected:?}");
    assert_eq!(collected.busy[0].id, "s1");
    assert!(dir.join("session-state.json").exists());
    held.release().await.unwrap();
    let collected = gc_at(&sessions, &root).await;
    assert_eq!(collected.removed.len(), 1, "{collected:?}");
    assert!(!dir.exists());
}

async fn gc_with(comes_back: bool) -> (Vec<Removed>, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = root.join(SESSIONS_DIR).join("s1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("session-state.json"), "{}").unwrap();
    let store = Arc::new(Flaky {
        looks: AtomicUsize::new(0),
        comes_back,
    });
    let sessions = Sessions::new(
        vec![store],
        "ns".into(),
        root.to_path_buf(),
        Duration::from_secs(60),
        Duration::from_secs(5),
    );
    let removed = gc_at(&sessions, root).await.removed;
    let mut left: Vec<String> = std::fs::read_dir(root.join(SESSIONS_DIR))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    left.sort();
    (removed, left)
}

#[tokio::test]
async fn a_session_that_comes_back_to_life_during_cleanup_keeps_its_directory() {
    let (removed, left) = gc_with(true).await;
    assert_eq!(removed, []);
    assert_eq!(left, ["s1"], "no tombstone left, the directory back");
    let (removed, left) = gc_with(false).await;
    assert_eq!(removed.len(), 1);
    assert!(left.is_empty(), "{left:?}");
}

/// A registry holding one session, `s1`, silent at the first look; at the second look
/// (while gc holds `s1`'s directory as a tombstone) the session comes back: it writes its
/// per-session file (a first write seeds the copy from the shared template) and is active.
struct Returning {
    looks: AtomicUsize,
    root: std::path::PathBuf,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<crate::Result<()>>>>,
}

impl SessionStore for Returning {
    fn label(&self) -> String {
        "returning".into()
    }
    no_op_writes!();
    fn entries<'a>(&'a self, _: &'a str) -> NodeFuture<'a, Vec<SessionEntry>> {
        let first = self.looks.fetch_add(1, Ordering::SeqCst) == 0;
        if !first {
            let root = self.root.clone();
            let (done, finished) = std::sync::mpsc::channel();
            let writer = std::thread::spawn(move || {
                let copy = root.join(SESSIONS_DIR).join("s1/session-state.json");
                let r = crate::session::seed_from_shared(
                    &root,
                    &root.join(".claude/session-state.json"),
                    &copy,
                );
                let _ = done.send(());
                r
            });
            // A seeding that does not wait for gc is done by now; one that waits is not.
            let _ = finished.recv_timeout(Duration::from_millis(300));
            *self.writer.lock().unwrap() = Some(writer);
        }
        let active = if first { 1 } else { now_ms() };
        Box::pin(async move {
            Ok(vec![SessionEntry {
                id: "s1".into(),
                started_ms: 1,
                last_active_ms: active,
                ..Default::default()
            }])
        })
    }
    fn forget<'a>(&'a self, _: &'a str, _: &'a [String]) -> NodeFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn a_session_that_writes_while_cleanup_holds_its_directory_keeps_its_state() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join(SESSIONS_DIR).join("s1")).unwrap();
    std::fs::write(root.join(".claude/session-state.json"), "{\"n\": 0}").unwrap();
    let copy = root.join(SESSIONS_DIR).join("s1/session-state.json");
    std::fs::write(&copy, "{\"n\": 7}").unwrap();
    let store = Arc::new(Returning {
        looks: AtomicUsize::new(0),
        root: root.clone(),
        writer: std::sync::Mutex::new(None),
    });
    let sessions = Sessions::new(
        vec![store.clone()],
        "ns".into(),
        root.clone(),
        Duration::from_secs(60),
        Duration::from_secs(5),
    );
    let removed = gc_at(&sessions, &root).await.removed;
    let writer = store.writer.lock().unwrap().take().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(removed, []);
    let left: Vec<String> = std::fs::read_dir(root.join(SESSIONS_DIR))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n != ".gitignore")
        .collect();
    assert_eq!(left, ["s1"], "no tombstone left");
    assert_eq!(
        std::fs::read_to_string(&copy).unwrap(),
        "{\"n\": 7}",
        "the session's own state, not the template"
    );
}
