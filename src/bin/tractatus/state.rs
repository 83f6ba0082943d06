//! `state ...`: guarded reads and read-modify-writes of JSON state files.

use std::path::Path;

use tractatus_lock::state::{Edit, WriteOutcome};
use tractatus_lock::{AcquireOptions, Result};

use crate::Context;
use crate::cli::StateCommand;
use crate::output::{self, WaitFeedback};

pub async fn run(ctx: &Context, cmd: StateCommand) -> Result<i32> {
    let (path, edit): (&Path, Option<Edit>) = match &cmd {
        StateCommand::Path { file } => return path_of(ctx, file),
        StateCommand::Get { file, .. } => (file, None),
        StateCommand::Update { file, command } => (file, Some(Edit::Update(command.clone()))),
        StateCommand::Merge { file, patch } => (file, Some(Edit::merge(patch)?)),
        StateCommand::Append {
            file,
            pointer,
            value,
        } => (file, Some(Edit::append(pointer, value)?)),
        StateCommand::Set {
            file,
            pointer,
            value,
        } => (file, Some(Edit::set(pointer, value)?)),
    };
    let pointer = match &cmd {
        StateCommand::Get {
            pointer: Some(p), ..
        } => Some(tractatus_lock::state::parse_pointer(p)?),
        _ => None,
    };
    let Some(edit) = edit else {
        let file = ctx.ws.state_file_to_read(path)?;
        // No lease and no coordinator: commits are atomic renames, so a read is always whole.
        // Missing is not bad data (65 asks for a human): 1, as `grep` says "not found".
        return Ok(match file.read(pointer.as_ref())? {
            Some(doc) => {
                output::out(&tractatus_lock::state::to_node_json(&doc))?;
                0
            }
            None => {
                match &pointer {
                    Some(p) if file.path().exists() => output::note(&format!(
                        "no value at {} in {}",
                        tractatus_lock::error::shorten(&p.to_string()),
                        file.name()
                    )),
                    _ => output::note(&format!("{} does not exist", file.name())),
                }
                1
            }
        });
    };
    let at = ctx.ws.resolve(path)?;
    let mut file = ctx.ws.state_file_at(&at)?;
    // Once more when the file's directory was collected after it was opened (`session gc` and
    // a session's copy): nothing was written, and the copy is found again (gc put it back) or
    // seeded afresh (gc removed it).
    let mut again = true;
    loop {
        let write = async {
            let coordinator = ctx.coordinator().await?;
            let feedback =
                WaitFeedback::start(&format!("lock '{}'", file.name()), !coordinator.is_local());
            let opts = AcquireOptions {
                wait: ctx.ws.resolved().wait,
                progress: Some(feedback.progress()),
                ..AcquireOptions::default()
            };
            let outcome = file.write(&coordinator, &opts, edit.clone()).await;
            feedback.finish();
            outcome
        };
        match crate::session::with_activity(ctx, write).await {
            Err(e) if again && e.is_directory_gone() => {
                again = false;
                file = ctx.ws.state_file_at(&at)?;
            }
            outcome => return Ok(written(ctx, outcome?)),
        }
    }
}

/// `state path`: where FILE lives for this call's session.
fn path_of(ctx: &Context, file: &Path) -> Result<i32> {
    let path = ctx.ws.state_path(file)?;
    if ctx.json {
        let sessions = ctx
            .ws
            .root()
            .map(|r| r.join(tractatus_lock::settings::SESSIONS_DIR));
        let own = sessions.is_some_and(|d| path.starts_with(d));
        output::json(&serde_json::json!({
            "path": path,
            "session": ctx.ws.session(),
            "per_session": own,
        }))?;
    } else {
        output::out(&path.display().to_string())?;
    }
    Ok(0)
}

/// Report a finished write; its exit code. Once committed, the write stands: a stdout that
/// cannot take the report is told on stderr and does not turn success into failure.
fn written(ctx: &Context, outcome: WriteOutcome) -> i32 {
    let report = match outcome {
        WriteOutcome::Committed { token, window } => serde_json::json!({
            "committed": true,
            "token": token,
            "window_us": window.as_micros() as u64,
        }),
        WriteOutcome::Unchanged { token } => {
            serde_json::json!({ "committed": false, "unchanged": true, "token": token })
        }
        WriteOutcome::Aborted { code } => {
            // Passed through, except where it would read as one of our own codes (or as 2,
            // which blocks a Claude Code hook): those become 65.
            let passed = if code == 2 || (64..=78).contains(&code) {
                65
            } else {
                code
            };
            output::note(&format!(
                "the update command exited {code}; nothing written{}",
                if passed == code {
                    String::new()
                } else {
                    format!(" (exit {passed}: {code} would read as a tractatus code)")
                }
            ));
            return passed;
        }
    };
    if ctx.json
        && let Err(e) = output::out(&report.to_string())
    {
        output::note(&format!("committed; but the report was not shown: {e}"));
    }
    0
}
