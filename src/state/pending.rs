//! The two-phase write: [`StateFile::begin`] takes the file's lease and reads the document,
//! the caller computes the new one however it likes (a Rust closure, a JS callback on another
//! thread, a child command), and [`PendingWrite::commit`] lands it with the fencing check and
//! the compare-and-swap against the bytes read. [`StateFile::write`] is built on it, so there is
//! one way a state file is written.

use serde_json::Value;

use super::fence::FenceRecord;
use super::load::{self, Loaded};
use super::{Edit, StateFile, WriteOutcome, lean, to_node_json};
use crate::{AcquireOptions, Coordinator, Error, FencingToken, Lease, Result};

/// How deep a document may nest (arrays and objects) and still be read back: `serde_json`
/// refuses the 128th level. A deeper document is refused when written rather than committed and
/// then unreadable by every later command.
pub const MAX_DEPTH: usize = 127;

/// A state file read under its lease, waiting for the new document. Release it with
/// [`PendingWrite::release`] on every path: [`PendingWrite::commit`] does not release.
pub struct PendingWrite {
    file: StateFile,
    lease: Lease,
    fence: FenceRecord,
    read: Option<Loaded>,
    document: Option<Value>,
    /// Whether the document is parsed into `document`, or only checked (the lean edits).
    parsed: bool,
    committed: bool,
}

impl StateFile {
    /// Take the file's lease and read and parse the file. The lease is renewed until released
    /// (up to the coordinator's `max_hold`). A lease whose token is not above the file's last
    /// committed one (the coordinator's counter was reset) is given up, the counter raised,
    /// and a fresh lease taken.
    ///
    /// Errors: those of [`Coordinator::acquire`]; bad data (65) when the file is not a regular
    /// file or not valid JSON; cannot write (73) when the fence record cannot be made. The
    /// lease is released on every error.
    pub async fn begin(
        &self,
        coordinator: &Coordinator,
        opts: &AcquireOptions,
    ) -> Result<PendingWrite> {
        self.begin_with(coordinator, opts, true).await
    }

    /// [`StateFile::begin`]; with `parse` false the document is only checked, not built
    /// ([`PendingWrite::document`] is then `None`).
    pub(super) async fn begin_with(
        &self,
        coordinator: &Coordinator,
        opts: &AcquireOptions,
        parse: bool,
    ) -> Result<PendingWrite> {
        let fence = FenceRecord::new(&self.work_dir, &self.name)?;
        let mut lease = coordinator.acquire(&self.name, opts).await?;
        let committed = match fence.read() {
            Ok(c) => c,
            Err(e) => {
                let _ = lease.release().await;
                return Err(e);
            }
        };
        if lease.token() <= committed {
            // Our lease is valid, so a token at or below a committed one means the coordinator's
            // counter was reset (Redis flushed, backend switched): lift it and take a fresh lease.
            // Released explicitly on every path: a dropped lease is released by a background
            // task, which a short-lived process may never run.
            let raised = coordinator.raise_floor(&self.name, committed).await;
            let _ = lease.release().await;
            raised?;
            lease = coordinator.acquire(&self.name, opts).await?;
        }
        lease.keep_alive(coordinator.config().max_hold);
        self.remove_abandoned_temp_files(&lease);
        let mut pending = PendingWrite {
            file: self.clone(),
            lease,
            fence,
            read: None,
            document: None,
            parsed: parse,
            committed: false,
        };
        match pending.reload() {
            Ok(()) => Ok(pending),
            Err(e) => {
                let _ = pending.release().await;
                Err(e)
            }
        }
    }
}

impl PendingWrite {
    /// The document as read; `None` when the file does not exist yet.
    pub fn document(&self) -> Option<&Value> {
        self.document.as_ref()
    }

    /// The lease's fencing token.
    pub fn token(&self) -> FencingToken {
        self.lease.token()
    }

    /// The lease, to watch it ([`Lease::lost`]) or check it ([`Lease::check_valid`]).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The state file.
    pub fn file(&self) -> &StateFile {
        &self.file
    }

    /// Read the file again under the same lease, after [`Error::Conflict`]: the next commit
    /// compares against what is read now.
    pub fn reload(&mut self) -> Result<()> {
        // The old document goes first: two copies of a large one need not coexist.
        self.document = None;
        self.read = None;
        let read = load::load(self.file.path())?;
        self.document = match &read {
            Some(r) if self.parsed => Some(self.file.parse(&r.bytes)?),
            Some(r) => {
                self.file.check(&r.bytes)?;
                None
            }
            None => None,
        };
        self.read = read;
        Ok(())
    }

    /// Commit `doc` atomically: in Node's layout, with a final newline when the file had one,
    /// after checking that the lease is valid, that no higher fencing token has committed and
    /// that the file still holds the bytes read. Identical bytes are not rewritten
    /// ([`WriteOutcome::Unchanged`]).
    ///
    /// Errors: [`Error::Conflict`] (76) when the file changed since it was read ([`reload`]
    /// and redo the change); [`Error::LeaseLost`] or [`Error::Fenced`] (76); bad data (65)
    /// when `doc` nests deeper than [`MAX_DEPTH`]; cannot write (73). A `PendingWrite` commits
    /// once: a second commit is a usage error (its token is spent).
    ///
    /// [`reload`]: PendingWrite::reload
    pub async fn commit(&mut self, doc: &Value) -> Result<WriteOutcome> {
        self.ready()?;
        if let Some(depth) = deeper_than(doc, MAX_DEPTH) {
            return Err(self.too_deep(depth));
        }
        self.commit_text(to_node_json(doc)).await
    }

    /// `set` or `append` applied to the bytes read without building the document (see
    /// `lean.rs`), then committed as [`PendingWrite::commit`] does.
    pub(super) async fn commit_edit(&mut self, edit: Edit) -> Result<WriteOutcome> {
        self.ready()?;
        // The file read back within the limit; only the new value, where it goes, can pass it.
        let (above, value) = match &edit {
            Edit::Append(p, v) => (p.tokens.len() + 1, v),
            Edit::Set(p, v) => (p.tokens.len(), v),
            _ => return Err(Error::internal("only set and append edit the text")),
        };
        if let Some(depth) = deeper_than(value, MAX_DEPTH.saturating_sub(above)) {
            return Err(self.too_deep(above + depth));
        }
        let text = match &self.read {
            Some(r) => std::str::from_utf8(&r.bytes).map_err(|e| {
                Error::bad_data(format!(
                    "{} is not valid UTF-8 ({e})",
                    self.file.path().display()
                ))
            })?,
            None => "{}",
        };
        let new = lean::edit_text(text, edit, self.file.name())?;
        self.commit_text(new).await
    }

    /// Not committed yet, and the lease still valid (no temp file is written for nothing).
    fn ready(&self) -> Result<()> {
        if self.committed {
            return Err(Error::usage(format!(
                "{}: this write was already committed under token {}; begin a new one",
                self.file.name(),
                self.lease.token()
            )));
        }
        self.lease.check_valid()
    }

    fn too_deep(&self, depth: usize) -> Error {
        Error::bad_data(format!(
            "{}: the new document nests {depth} or more levels deep; at most {MAX_DEPTH} can be \
             read back; nothing written",
            self.file.name()
        ))
    }

    async fn commit_text(&mut self, mut text: String) -> Result<WriteOutcome> {
        let token = self.lease.token();
        let read = self.read.as_ref();
        if read.is_some_and(|r| r.bytes.ends_with(b"\n")) {
            text.push('\n');
        }
        if read.map(|r| r.bytes.as_slice()) == Some(text.as_bytes()) {
            return Ok(WriteOutcome::Unchanged { token });
        }
        let window = self
            .file
            .commit(
                &self.lease,
                &self.fence,
                read.map(|r| r.bytes.as_slice()),
                text.as_bytes(),
                read.map(|r| r.mode),
            )
            .await?;
        self.committed = true;
        Ok(WriteOutcome::Committed { token, window })
    }

    /// Release the lease. Errors with [`Error::LeaseLost`] when it was no longer ours; after a
    /// commit that changes nothing about the write, which stands.
    pub async fn release(self) -> Result<()> {
        self.lease.release().await
    }

    /// The bytes read; `None` when the file does not exist.
    pub(super) fn bytes(&self) -> Option<&[u8]> {
        self.read.as_ref().map(|r| r.bytes.as_slice())
    }

    /// The document as read, moved out (no copy) for an edit in place; the next
    /// [`PendingWrite::reload`] reads it again.
    pub(super) fn take_document(&mut self) -> Option<Value> {
        self.document.take()
    }
}

/// True when the JSON text `bytes` nests deeper than `limit`. `serde_json` enforces its limit
/// when it builds a value but not when it only checks the syntax, and the lean edits recurse
/// once per level: this scan (iterative, no allocation) keeps them to what a parse accepts.
pub(super) fn text_deeper_than(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// `Some(limit + 1)` when `doc` nests deeper than `limit` (scalars are 0, `[]` is 1).
/// Iterative: a document handed in by a library caller may be deeper than the stack allows to
/// recurse.
fn deeper_than(doc: &Value, limit: usize) -> Option<usize> {
    let mut stack = vec![(doc, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let depth = match v {
            Value::Array(_) | Value::Object(_) => depth + 1,
            _ => continue,
        };
        if depth > limit {
            return Some(depth);
        }
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, depth))),
            Value::Object(m) => stack.extend(m.values().map(|c| (c, depth))),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    /// A Node addon holds a `PendingWrite` across threads and awaits its futures on a
    /// multi-threaded runtime: all of them must be `Send`. Compiling is the test.
    #[allow(dead_code)]
    fn the_two_phases_are_send(
        file: StateFile,
        c: Coordinator,
        o: AcquireOptions,
        mut p: PendingWrite,
        v: Value,
    ) {
        fn send<T: Send + 'static>(_: &T) {}
        fn send_now<T: Send>(_: T) {}
        send_now(file.begin(&c, &o));
        send_now(file.write(
            &c,
            &o,
            Edit::Append(crate::state::parse_pointer("").unwrap(), v.clone()),
        ));
        send_now(p.commit(&v));
        send(&p);
        send_now(p.release());
    }

    #[test]
    fn the_depth_limit_is_what_serde_json_reads_back() {
        let deepest: Value = serde_json::from_str(&nested(MAX_DEPTH)).unwrap();
        assert_eq!(deeper_than(&deepest, MAX_DEPTH), None);
        assert!(serde_json::from_str::<Value>(&nested(MAX_DEPTH + 1)).is_err());
        let mut deeper = Value::Array(vec![deepest]);
        assert_eq!(deeper_than(&deeper, MAX_DEPTH), Some(MAX_DEPTH + 1));
        // Wider documents are judged by their deepest branch.
        deeper = serde_json::json!({"a": 1, "b": [[1]], "c": {"d": deeper}});
        assert_eq!(deeper_than(&deeper, MAX_DEPTH), Some(MAX_DEPTH + 1));
        assert_eq!(deeper_than(&serde_json::json!(3), 0), None);
        assert_eq!(deeper_than(&serde_json::json!({"a": [1]}), 2), None);
        assert_eq!(deeper_than(&serde_json::json!({"a": [1]}), 1), Some(2));
        // The text scan agrees, and brackets inside strings do not count.
        assert!(!text_deeper_than(nested(MAX_DEPTH).as_bytes(), MAX_DEPTH));
        assert!(text_deeper_than(
            nested(MAX_DEPTH + 1).as_bytes(),
            MAX_DEPTH
        ));
        assert!(!text_deeper_than(br#"[{"a": "[[[\"[[", "b": [1]}]"#, 3));
        assert!(text_deeper_than(br#"[{"a": "]]]\"]]", "b": [[1]]}]"#, 3));
    }
}
