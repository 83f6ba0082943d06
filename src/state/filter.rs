//! `state update`'s command: run it with the document on stdin and take its stdout, watching
//! the lease meanwhile. It gets the lease's capability (see [`crate::join`]), so it may write
//! this file itself under the same lease. It runs in a process group of its own, and nothing is
//! committed (nor the lease released) while any process of that group still runs: what it left
//! behind gets SIGTERM, then SIGKILL, and a lost lease kills the whole group at once.

use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::group::group_alive;
use crate::{Error, Lease, Result};

/// How long what the command left behind in its group gets between SIGTERM and SIGKILL.
const LEFTOVER_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) enum Filtered {
    Output(Vec<u8>),
    Failed(i32),
}

/// Run `update`'s command with the document on stdin, watching the lease meanwhile.
pub(super) async fn run_filter(lease: &Lease, argv: &[String], input: &[u8]) -> Result<Filtered> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::usage("no command given after --"))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("TRACTATUS_LOCK_NAME", lease.name())
        .env("TRACTATUS_FENCING_TOKEN", lease.token().to_string())
        // The command, and what it starts, may call `tractatus` on this file again: it joins.
        .env(
            crate::join::ENV_VAR,
            crate::join::command_env(std::slice::from_ref(lease)),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::usage(format!("cannot run '{program}': {e}")))?;
    let group = child.id().unwrap_or(0);
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::internal("no stdin pipe"))?;
    let input = input.to_vec();
    let feed = tokio::spawn(async move {
        // A command that does not read its input closes the pipe early: not an error.
        let _ = stdin.write_all(&input).await;
    });
    // Read stdout apart from waiting for the exit: a worker the command left behind may hold
    // the pipe open, and must not keep us waiting until it ends.
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::internal("no stdout pipe"))?;
    let read = tokio::spawn(async move {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).await.map(|_| out)
    });
    let status = tokio::select! {
        st = child.wait() => st.map_err(|e| Error::internal(format!("waiting for '{program}': {e}")).with_source(e))?,
        reason = lease.lost() => {
            signal_group(group, Signal::SIGKILL);
            return Err(Error::LeaseLost { name: lease.name().to_owned(), reason });
        }
    };
    let _ = feed.await;
    drain(group, lease).await?;
    // The group is gone, so the pipe is closed, unless a process left the group (setsid)
    // with it: what was printed by then is the output.
    let output = match tokio::time::timeout(LEFTOVER_GRACE, read).await {
        Ok(Ok(Ok(out))) => out,
        Ok(Ok(Err(e))) => {
            return Err(
                Error::internal(format!("reading the output of '{program}': {e}")).with_source(e),
            );
        }
        _ => {
            return Err(Error::bad_data(format!(
                "the output of '{program}' is still held open by a process that left its group; nothing written"
            )));
        }
    };
    if !status.success() {
        return Ok(Filtered::Failed(crate::run::exit_code(status)));
    }
    Ok(Filtered::Output(output))
}

fn signal_group(group: u32, sig: Signal) {
    if let Ok(g) = i32::try_from(group)
        && g > 0
    {
        let _ = kill(Pid::from_raw(-g), sig);
    }
}

/// Wait until no process of the command's group runs: SIGTERM first, SIGKILL after
/// [`LEFTOVER_GRACE`] or when the lease is lost, whichever comes first.
async fn drain(group: u32, lease: &Lease) -> Result<()> {
    if !group_alive(group) {
        return Ok(());
    }
    signal_group(group, Signal::SIGTERM);
    let grace = tokio::time::Instant::now() + LEFTOVER_GRACE;
    let mut killed = false;
    while group_alive(group) {
        if !killed && (tokio::time::Instant::now() >= grace || lease.check_valid().is_err()) {
            signal_group(group, Signal::SIGKILL);
            killed = true;
        }
        // The kernel tells only a parent when a process ends; these are not our children.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    lease.check_valid()
}
