//! The two-phase write: [`StateFile::begin`] takes the file's lease and reads the document,
//! the caller computes the new one however it likes (a Rust closure, a JS callback on another
//! thread, a child command), and [`PendingWrite::commit`] lands it with the fencing check and
//! the compare-and-swap against the bytes read. [`StateFile::write`] is built on it, so there is
//! one way a state file is written.

use std::sync::Arc;

use serde_json::Value;

use super::fence::FenceRecord;
use super::load::{self, Loaded};
use super::{Edit, StateFile, WriteOutcome, lean, to_node_json};
use crate::dir_handle::DirHandle;
use crate::{AcquireOptions, Coordinator, Error, FencingToken, Lease, Result};

/// How deep a document may nest (arrays and objects) and still be read back: `serde_json`
/// refuses the 128th level. A deeper document is refused when written rather than committed and
/// then unreadable by every later command.
pub const MAX_DEPTH: usize = 127;

/// Where a write's lease comes from: acquired (or joined from an ancestor process), or joined
/// from a lease held in this process.
#[derive(Clone, Copy)]
pub(super) enum Via<'a> {
    Acquire(&'a Coordinator, &'a AcquireOptions),
    Under(&'a Lease),
}

/// A state file read under its lease, waiting for the new document. Release it with
/// [`PendingWrite::release`] on every path: [`PendingWrite::commit`] does not release.
pub struct PendingWrite {
    file: StateFile,
    /// The file's directory, opened once: the read, the compare and the rename all go
    /// through it. `None` when the directory does not exist.
    dir: Option<Arc<DirHandle>>,
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
        self.begin_with(Via::Acquire(coordinator, opts), true).await
    }

    /// [`StateFile::begin`] under a lease the caller holds in this process (a lock taken with
    /// [`Coordinator::acquire`] or `lock run`'s library call): the write joins it
    /// ([`Lease::join`]) instead of waiting for it. Releasing the write leaves `lease` held,
    /// and it commits with `lease`'s token, fenced as `lease` itself would be.
    ///
    /// Errors: usage (64) when `lease` is not this file's lock; [`Error::LeaseLost`] (76)
    /// when the coordinator no longer confirms it; [`Error::Fenced`] (76) when a higher token,
    /// or the same token of another lease, has committed; as [`StateFile::begin`] otherwise.
    pub async fn begin_under(&self, lease: &Lease) -> Result<PendingWrite> {
        self.begin_with(Via::Under(lease), true).await
    }

    /// [`StateFile::begin`] for a caller that parses the text itself (the Node addon hands it
    /// to `JSON.parse`): the file is checked (UTF-8, JSON, depth) but no document is built, so
    /// [`PendingWrite::document`] is `None` and [`PendingWrite::document_text`] has it.
    pub async fn begin_text(
        &self,
        coordinator: &Coordinator,
        opts: &AcquireOptions,
    ) -> Result<PendingWrite> {
        self.begin_with(Via::Acquire(coordinator, opts), false)
            .await
    }

    /// [`StateFile::begin_under`] without building the document, as [`StateFile::begin_text`].
    pub async fn begin_text_under(&self, lease: &Lease) -> Result<PendingWrite> {
        self.begin_with(Via::Under(lease), false).await
    }

    /// [`StateFile::begin`]; with `parse` false the document is only checked, not built
    /// ([`PendingWrite::document`] is then `None`).
    pub(super) async fn begin_with(&self, via: Via<'_>, parse: bool) -> Result<PendingWrite> {
        let fence = FenceRecord::new(&self.root, &self.name)?;
        let dir = self.dir_handle()?;
        let mut lease = match via {
            Via::Acquire(coordinator, opts) => coordinator.acquire(&self.name, opts).await?,
            Via::Under(held) => {
                if held.name() != self.name {
                    return Err(Error::usage(format!(
                        "the lease of '{}' is not the lock of {} ('{}')",
                        held.name(),
                        self.path.display(),
                        self.name
                    )));
                }
                held.join().await?
            }
        };
        let committed = match fence.read() {
            Ok(c) => c,
            Err(e) => {
                let _ = lease.release().await;
                return Err(e);
            }
        };
        if !committed.admits(&lease) {
            let coordinator = lease.coordinator().clone();
            let fresh = match via {
                Via::Acquire(_, opts) if !lease.is_joined() => opts,
                // A joined lease is its holder's: there is no fresh one to take in its place.
                _ => {
                    let token = lease.token();
                    let _ = lease.release().await;
                    return Err(Error::Fenced {
                        name: self.name.clone(),
                        token,
                        committed: committed.token,
                    });
                }
            };
            // Our lease is valid, so a token at or below a committed one means the coordinator's
            // counter was reset (Redis flushed, backend switched): lift it and take a fresh lease.
            // Released explicitly on every path: a dropped lease is released by a background
            // task, which a short-lived process may never run.
            let raised = coordinator.raise_floor(&self.name, committed.token).await;
            let _ = lease.release().await;
            raised?;
            lease = coordinator.acquire(&self.name, fresh).await?;
        }
        lease.keep_alive(lease.config().max_hold);
        if let Some(dir) = &dir {
            self.remove_abandoned_temp_files(dir, &lease);
        }
        let mut pending = PendingWrite {
            file: self.clone(),
            dir,
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

    /// The bytes read, as text: valid UTF-8 JSON within [`MAX_DEPTH`], checked when read.
    /// `None` when the file does not exist yet.
    pub fn document_text(&self) -> Option<&str> {
        // `reload` refused anything but UTF-8, so this never turns bytes into `None`.
        self.bytes().and_then(|b| std::str::from_utf8(b).ok())
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
        let read = match &self.dir {
            Some(dir) => {
                self.file.check_in_place(dir)?;
                load::load(
                    dir,
                    &self.file.file_name,
                    std::path::Path::new(self.file.name()),
                )?
            }
            None => None,
        };
        self.document = match &read {
            Some(r) if self.parsed => Some(self.file.parse(&r.bytes)?),
            Some(r) => {
                // Checked here so that `document_text` and the lean edits can rely on it (a
                // syntax-only check does not look inside strings).
                std::str::from_utf8(&r.bytes).map_err(|e| {
                    Error::bad_data(format!(
                        "{} is not valid UTF-8 (at byte {}); nothing written",
                        self.file.name(),
                        e.valid_up_to()
                    ))
                })?;
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
        self.land(to_node_json(doc)).await
    }

    /// Commit `text` as it is, byte for byte (the caller chose its layout and final newline),
    /// after checking that it is one JSON value that reads back: valid syntax, nesting at most
    /// [`MAX_DEPTH`], no lone surrogate escapes. Otherwise as [`PendingWrite::commit`]:
    /// fenced, compare-and-swapped, [`WriteOutcome::Unchanged`] when the bytes are the ones read.
    ///
    /// Errors: bad data (65) when `text` is not such a value; as [`PendingWrite::commit`].
    pub async fn commit_text(&mut self, text: &str) -> Result<WriteOutcome> {
        self.ready()?;
        check_text(text).map_err(|e| {
            Error::bad_data(format!(
                "{}: the new document {e}; nothing written",
                self.file.name()
            ))
        })?;
        let token = self.lease.token();
        if self.bytes() == Some(text.as_bytes()) {
            return Ok(WriteOutcome::Unchanged { token });
        }
        self.land_bytes(text.as_bytes()).await
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
                Error::bad_data(format!("{} is not valid UTF-8 ({e})", self.file.name()))
            })?,
            None => "{}",
        };
        // The syntax check at read skips `\u` escapes; a lone surrogate (which Node writes for
        // a string cut inside a pair) cannot become a Rust string, so the lean edit could not
        // re-lay it out. Refused as `merge` and `get` refuse it (65), the file untouched.
        if has_surrogate_escape(text) {
            serde_json::from_str::<Value>(text).map_err(|e| self.file.not_json(e))?;
        }
        let new = lean::edit_text(text, edit, self.file.name())?;
        self.land(new).await
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

    /// Commit `text` in the library's layout: a final newline when the file had one.
    async fn land(&mut self, mut text: String) -> Result<WriteOutcome> {
        let token = self.lease.token();
        if self.bytes().is_some_and(|b| b.ends_with(b"\n")) {
            text.push('\n');
        }
        if self.bytes() == Some(text.as_bytes()) {
            return Ok(WriteOutcome::Unchanged { token });
        }
        self.land_bytes(text.as_bytes()).await
    }

    async fn land_bytes(&mut self, new: &[u8]) -> Result<WriteOutcome> {
        let token = self.lease.token();
        let window = self
            .file
            .commit(
                self.dir.as_deref(),
                &self.lease,
                &self.fence,
                self.read.as_ref(),
                new,
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

/// Whether `text` is one JSON value that a later read accepts, without building it: the depth
/// first (the syntax check below does not enforce it), then the syntax. That check skips
/// `\u` escapes without judging them, so text with a surrogate escape, rare, is parsed whole
/// to refuse a lone one, which no read could turn back into a string.
fn check_text(text: &str) -> std::result::Result<(), String> {
    if text_deeper_than(text.as_bytes(), MAX_DEPTH) {
        return Err(format!(
            "nests deeper than {MAX_DEPTH} levels, the most that can be read back"
        ));
    }
    let invalid = |e: serde_json::Error| format!("is not valid JSON ({e})");
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(invalid)?;
    if has_surrogate_escape(text) {
        serde_json::from_str::<Value>(text).map_err(invalid)?;
    }
    Ok(())
}

/// Whether `text` has a `\u` escape of a UTF-16 surrogate (rare; such text is parsed whole to
/// judge it).
fn has_surrogate_escape(text: &str) -> bool {
    text.contains("\\ud") || text.contains("\\uD")
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
mod tests;
