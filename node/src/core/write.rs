//! The state-file calls: `begin` (a read under a lease, committed by JavaScript), `read`, and
//! the one-step writes `set`, `merge` and `append`, each on its own lease or joining a
//! `withLock`'s (`*_under`). A write through the CLI's own code path is redone once when its
//! file's directory was collected meanwhile, as the CLI's `state` does.

use std::future::Future;
use std::path::Path;

use serde_json::Value;
use tractatus_lock::state::{Edit, NoArray, PendingWrite, StateFile, parse_pointer, push};
use tractatus_lock::workspace::Workspace;
use tractatus_lock::{Error, Lease};

use super::{Failure, Leases, Out, Outcome, Settings, discover, ended, open, outcome};

fn to_text(v: &Value) -> String {
    // Compact: JavaScript parses it.
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

fn parse_value(text: &str, what: &str) -> Out<Value> {
    serde_json::from_str(text)
        .map_err(|e| Failure::bad_data(format!("{what} is not valid JSON: {e}")))
}

/// A state file read under its lease, waiting for JavaScript's new document.
pub struct Pending {
    write: PendingWrite,
    /// The `withLock` leases this write joined.
    under: Option<Leases>,
}

/// Take `file`'s lease and read it; `parse` builds the document (for `append`), else only its
/// text is kept (for JavaScript).
pub async fn begin(s: &Settings, file: &str, parse: bool) -> Out<(Pending, Option<String>)> {
    let o = open(s).await?;
    let (c, a) = (&o.coordinator, &o.acquire);
    let write = once_more_if_collected(&o.workspace, file, |state| async move {
        if parse {
            state.begin(c, a).await
        } else {
            state.begin_text(c, a).await
        }
    })
    .await?;
    Ok((Pending { write, under: None }, o.notice))
}

/// Run `write` on `file` freshly opened, and once more when its directory was collected after
/// it was opened (`session gc` and a session's copy; [`Error::is_directory_gone`]), as the
/// CLI's `state` does: nothing was written, and the copy is found again (gc put it back) or
/// seeded afresh (gc removed it).
async fn once_more_if_collected<T, F, Fut>(
    workspace: &Workspace,
    file: &str,
    mut write: F,
) -> Result<T, Error>
where
    F: FnMut(StateFile) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let at = workspace.resolve(Path::new(file))?;
    let mut again = true;
    loop {
        let state = workspace.state_file_at(&at)?;
        match write(state).await {
            Err(e) if again && e.is_directory_gone() => again = false,
            done => return done,
        }
    }
}

/// [`begin`] joining `file`'s lease among `leases`; `None` when its lock is not among them.
pub async fn begin_under(
    s: &Settings,
    leases: &Leases,
    file: &str,
    parse: bool,
) -> Out<Option<Pending>> {
    let state = discover(s)?.state_file(Path::new(file))?;
    let held = leases.read().await;
    let Some(lease) = find(held.as_deref(), state.name())? else {
        return Ok(None);
    };
    let write = if parse {
        state.begin_under(lease).await?
    } else {
        state.begin_text_under(lease).await?
    };
    Ok(Some(Pending {
        write,
        under: Some(leases.clone()),
    }))
}

/// The lease named `name` among a `withLock`'s, if any; `LEASE_LOST` once they are released.
fn find<'l>(held: Option<&'l [Lease]>, name: &str) -> Out<Option<&'l Lease>> {
    let held = held.ok_or_else(|| ended(name))?;
    Ok(held.iter().find(|l| l.name() == name))
}

impl Pending {
    /// The document as the file's own text; `None` when the file does not exist yet.
    pub fn document(&self) -> Option<&str> {
        self.write.document_text()
    }

    pub fn token(&self) -> u64 {
        self.write.token()
    }

    /// Commit JavaScript's text as it is (its layout and final newline chosen there);
    /// `CONFLICT` when the file changed meanwhile.
    pub async fn commit(&mut self, text: &str) -> Out<Outcome> {
        let Some(leases) = self.under.clone() else {
            return outcome(self.write.commit_text(text).await?);
        };
        let held = leases.read().await;
        if held.is_none() {
            return Err(ended(self.write.file().name()));
        }
        outcome(self.write.commit_text(text).await?)
    }

    pub fn reload(&mut self) -> Out<()> {
        Ok(self.write.reload()?)
    }

    pub async fn release(self) -> Out<()> {
        Ok(self.write.release().await?)
    }
}

/// Read `file` (or the value at `pointer`) with no lease: JSON text, `None` when absent.
pub fn read(s: &Settings, file: &str, pointer: Option<&str>) -> Out<Option<String>> {
    let workspace = discover(s)?;
    let state = workspace.state_file_to_read(Path::new(file))?;
    let pointer = pointer.map(parse_pointer).transpose()?;
    Ok(state.read(pointer.as_ref())?.as_ref().map(to_text))
}

fn to_edit(spec: &EditSpec) -> Out<Edit> {
    Ok(match spec {
        EditSpec::Set { pointer, json } => Edit::set(pointer, json)?,
        EditSpec::Merge { json } => {
            if !matches!(parse_value(json, "the given patch")?, Value::Object(_)) {
                return Err(Failure::usage(
                    "mergeJson takes an object patch (RFC 7396); use setJson to replace a value",
                ));
            }
            Edit::merge(json)?
        }
        EditSpec::Append { .. } => {
            return Err(Failure::usage("internal: append is not a one-step edit"));
        }
    })
}

/// A write as JavaScript asks for it, its JSON still text.
pub enum EditSpec {
    Set {
        pointer: String,
        json: String,
    },
    Merge {
        json: String,
    },
    /// Push onto the array at `pointer`, keeping its last `keep` entries (a ring).
    Append {
        pointer: String,
        json: String,
        keep: Option<u32>,
    },
}

/// `set`, `merge` or `append`: take `file`'s lease, edit, commit, release.
pub async fn write(s: &Settings, file: &str, spec: EditSpec) -> Out<(Outcome, Option<String>)> {
    match spec {
        EditSpec::Append {
            pointer,
            json,
            keep,
        } => append(s, file, &pointer, &json, keep).await,
        spec => edit(s, file, &spec).await,
    }
}

/// [`write`] under `file`'s lease among `leases`; `None` when its lock is not among them.
pub async fn write_under(
    s: &Settings,
    leases: &Leases,
    file: &str,
    spec: EditSpec,
) -> Out<Option<Outcome>> {
    match spec {
        EditSpec::Append {
            pointer,
            json,
            keep,
        } => append_under(s, leases, file, &pointer, &json, keep).await,
        spec => edit_under(s, leases, file, &spec).await,
    }
}

/// `set` or `merge`, the CLI's own code path (redone once on a conflict).
async fn edit(s: &Settings, file: &str, edit: &EditSpec) -> Out<(Outcome, Option<String>)> {
    let edit = to_edit(edit)?;
    let o = open(s).await?;
    let (c, a) = (&o.coordinator, &o.acquire);
    let done = once_more_if_collected(&o.workspace, file, |state| {
        let edit = edit.clone();
        async move { state.write(c, a, edit).await }
    })
    .await?;
    Ok((outcome(done)?, o.notice))
}

/// [`edit`] under `file`'s lease among `leases`; `None` when its lock is not among them.
async fn edit_under(
    s: &Settings,
    leases: &Leases,
    file: &str,
    edit: &EditSpec,
) -> Out<Option<Outcome>> {
    let edit = to_edit(edit)?;
    let state = discover(s)?.state_file(Path::new(file))?;
    let held = leases.read().await;
    let Some(lease) = find(held.as_deref(), state.name())? else {
        return Ok(None);
    };
    Ok(Some(outcome(state.write_under(lease, edit).await?)?))
}

/// Push `json` onto the array at `pointer`, keeping its last `keep` entries (a ring).
async fn append(
    s: &Settings,
    file: &str,
    pointer: &str,
    json: &str,
    keep: Option<u32>,
) -> Out<(Outcome, Option<String>)> {
    let value = append_value(pointer, json, keep)?;
    let (pending, notice) = begin(s, file, true).await?;
    Ok((
        append_and_release(pending, pointer, value, keep).await?,
        notice,
    ))
}

/// `append` under `file`'s lease among `leases`; `None` when its lock is not among them.
async fn append_under(
    s: &Settings,
    leases: &Leases,
    file: &str,
    pointer: &str,
    json: &str,
    keep: Option<u32>,
) -> Out<Option<Outcome>> {
    let value = append_value(pointer, json, keep)?;
    let Some(pending) = begin_under(s, leases, file, true).await? else {
        return Ok(None);
    };
    // The read guard is taken again for the commit only: a release meanwhile ends it.
    let held = leases.read().await;
    if held.is_none() {
        let _ = pending.release().await;
        return Err(ended(file));
    }
    Ok(Some(
        append_and_release(pending, pointer, value, keep).await?,
    ))
}

fn append_value(pointer: &str, json: &str, keep: Option<u32>) -> Out<Value> {
    parse_pointer(pointer)?;
    let value = parse_value(json, "the given value")?;
    if keep == Some(0) {
        return Err(Failure::usage("keep must be at least 1"));
    }
    Ok(value)
}

async fn append_and_release(
    mut pending: Pending,
    pointer: &str,
    value: Value,
    keep: Option<u32>,
) -> Out<Outcome> {
    let result = append_under_lease(&mut pending.write, pointer, value, keep).await;
    let released = pending.release().await;
    let done = result?;
    // A failed release after a commit changes nothing about the commit.
    if !done.committed {
        released?;
    }
    Ok(done)
}

async fn append_under_lease(
    write: &mut PendingWrite,
    pointer: &str,
    value: Value,
    keep: Option<u32>,
) -> Out<Outcome> {
    let parsed = parse_pointer(pointer)?;
    let mut conflicts = 0;
    loop {
        let mut doc = write
            .document()
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        let keep = keep.map(|k| k as usize);
        push(&mut doc, &parsed, value.clone(), keep).map_err(|e| match e {
            NoArray::Found(kind) => Failure::bad_data(format!(
                "the value at {pointer} is {kind}, not an array; nothing written"
            )),
            NoArray::Missing => Failure::bad_data(format!(
                "no array at {pointer} to append to; nothing written (create it once with \
                 setJson(file, '{pointer}', []))"
            )),
        })?;
        match write.commit(&doc).await {
            Err(Error::Conflict { .. }) if conflicts == 0 => {
                conflicts += 1;
                write.reload()?;
            }
            other => return outcome(other?),
        }
    }
}
