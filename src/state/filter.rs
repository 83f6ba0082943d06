//! `state update`'s command: run it with the document on stdin and take its stdout, watching
//! the lease meanwhile. It gets the lease's capability (see `crate::join`), so it may write
//! this file itself under the same lease.
//!
//! It runs as `lock run`'s command does (see [`crate::group`]): in a process group led by a
//! guard that ends the group should we die, with us as the child subreaper, so that what it
//! starts comes back to us even after `setsid` or a double fork. Nothing is committed (nor the
//! lease released) while any of it still runs: what it left behind gets SIGTERM, then SIGKILL
//! after [`LEFTOVER_GRACE`]; a lost lease (taken, broken, or held for `--max-hold`, on Redis
//! or locally) kills it at once. Its output is read up to [`output_cap`]: past it, the command
//! is stopped and nothing is written, so memory stays bounded whatever it prints.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::group::Group;
use crate::{Error, Lease, Result};

/// How long what the command left behind gets between SIGTERM and SIGKILL.
const LEFTOVER_GRACE: Duration = Duration::from_secs(1);

/// How long processes that got SIGKILL may take to go before we give up on them: only a
/// process stuck in the kernel (a dead network mount) takes longer.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The least output accepted from the command: 64 MiB.
const OUTPUT_FLOOR: u64 = 64 << 20;

/// The most output read from the command: four times the document it was given, and at least
/// [`OUTPUT_FLOOR`]. A document rarely grows fourfold in one update; a command that prints
/// without end must not take all memory (the output is held whole, to be parsed).
fn output_cap(input_len: usize) -> u64 {
    u64::try_from(input_len)
        .unwrap_or(u64::MAX)
        .saturating_mul(4)
        .max(OUTPUT_FLOOR)
}

pub(super) enum Filtered {
    Output(Vec<u8>),
    Failed(i32),
}

/// What the reader of the command's stdout got: the output, or `None` past the cap.
type Read = std::io::Result<Option<Vec<u8>>>;

/// Run `update`'s command with the document on stdin, watching the lease meanwhile.
pub(super) async fn run_filter(lease: &Lease, argv: &[String], input: &[u8]) -> Result<Filtered> {
    if argv.is_empty() {
        return Err(Error::usage("no command given after --"));
    }
    let scope = lease.guard_scope();
    // Should we die, the guard ends the group within a third of the TTL.
    let guard_grace = (lease.ttl() / 3).min(LEFTOVER_GRACE);
    let mut group = Group::start(
        guard_grace,
        &crate::holder::this_host(),
        &[(scope.as_str(), lease.name())],
        false,
    )
    .await?;
    let result = run_in(&mut group, lease, argv, input).await;
    // Whatever happened, nothing of the command runs on (an error path's leftovers included),
    // and the terminal, if the group had it, comes back.
    let stopped = stop(&mut group, lease, Signal::SIGKILL).await;
    group.finish().await;
    let filtered = result?;
    stopped?;
    Ok(filtered)
}

async fn run_in(
    group: &mut Group,
    lease: &Lease,
    argv: &[String],
    input: &[u8],
) -> Result<Filtered> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::usage("no command given after --"))?;
    // A same-host takeover of an expired lease waits for this group (a joined lease is the
    // ancestor's, whose record names the ancestor's group).
    if !lease.is_joined() {
        lease
            .record_group(group.pgid(), group.start_ticks())
            .await?;
    }
    group.ready().await?;
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
        .process_group(i32::try_from(group.pgid()).unwrap_or(0))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::usage(format!("cannot run '{program}': {e}")))?;
    group.set_command(child.id());
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::internal("no stdin pipe"))?;
    let cap = output_cap(input.len());
    let input = input.to_vec();
    let feed = tokio::spawn(async move {
        // A command that does not read its input closes the pipe early: not an error.
        let _ = stdin.write_all(&input).await;
    });
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::internal("no stdout pipe"))?;
    // Read apart from waiting for the exit: a process the command left behind may hold the
    // pipe open, and must not keep us waiting until it ends.
    let mut read: JoinHandle<Read> = tokio::spawn(read_capped(stdout, cap));
    let mut got: Option<Read> = None;
    let status = loop {
        tokio::select! {
            // Loss first: if the command exits in the same instant, the lease was gone already.
            biased;
            reason = lease.lost() => {
                stop(group, lease, Signal::SIGKILL).await?;
                return Err(Error::LeaseLost { name: lease.name().to_owned(), reason });
            }
            r = &mut read, if got.is_none() => {
                let r = r.map_err(Error::internal)?;
                if matches!(r, Ok(None)) {
                    stop(group, lease, Signal::SIGTERM).await?;
                    return Err(too_much(cap));
                }
                got = Some(r);
            }
            st = child.wait() => break st.map_err(|e| {
                Error::internal(format!("waiting for '{program}': {e}")).with_source(e)
            })?,
        }
    };
    feed.abort();
    // What it left running goes before anything is committed.
    stop(group, lease, Signal::SIGTERM).await?;
    lease.check_valid()?;
    // The group is gone, so the pipe is closed, unless a process we cannot see holds it.
    let got = match got {
        Some(r) => r,
        None => match tokio::time::timeout(LEFTOVER_GRACE, &mut read).await {
            Ok(r) => r.map_err(Error::internal)?,
            Err(_) => {
                read.abort();
                return Err(Error::bad_data(format!(
                    "the output of '{program}' is still held open by a process outside its \
                     group; nothing written"
                )));
            }
        },
    };
    let output = match got {
        Ok(Some(out)) => out,
        Ok(None) => return Err(too_much(cap)),
        Err(e) => {
            return Err(
                Error::internal(format!("reading the output of '{program}': {e}")).with_source(e),
            );
        }
    };
    if !status.success() {
        return Ok(Filtered::Failed(crate::run::exit_code(status)));
    }
    Ok(Filtered::Output(output))
}

/// All of `stdout` up to `cap` bytes; `None` once it gives more (the pipe is then closed).
async fn read_capped(stdout: tokio::process::ChildStdout, cap: u64) -> Read {
    let mut out = Vec::new();
    let n = stdout
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .await?;
    Ok((u64::try_from(n).unwrap_or(u64::MAX) <= cap).then_some(out))
}

fn too_much(cap: u64) -> Error {
    Error::bad_data(format!(
        "the command printed more than {cap} bytes ({} MiB, the most read: four times the \
         document, at least {} MiB); it was stopped; nothing written",
        cap >> 20,
        OUTPUT_FLOOR >> 20
    ))
}

/// Until nothing of the command runs: `first` to all of it, SIGKILL after [`LEFTOVER_GRACE`]
/// (at once when the lease is lost meanwhile). Internal error (70) if killed processes are
/// still there after [`KILL_WAIT`].
async fn stop(group: &mut Group, lease: &Lease, first: Signal) -> Result<()> {
    if group.is_empty() {
        return Ok(());
    }
    group.signal(first);
    let mut killed = first == Signal::SIGKILL;
    let kill_at = Instant::now() + LEFTOVER_GRACE;
    let give_up = kill_at + KILL_WAIT;
    loop {
        let look_until = Instant::now() + Duration::from_millis(50);
        if group.emptied_by(look_until).await {
            return Ok(());
        }
        if !killed && (Instant::now() >= kill_at || lease.check_valid().is_err()) {
            killed = true;
        }
        if killed {
            // Again each time: a process forked just before the last signal has not had it.
            group.signal(Signal::SIGKILL);
        }
        if Instant::now() >= give_up {
            return Err(Error::internal(
                "processes of the update's command did not end after SIGKILL",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_cap_is_four_times_the_document_and_at_least_64_mib() {
        assert_eq!(output_cap(0), 64 << 20);
        assert_eq!(output_cap(16 << 20), 64 << 20);
        assert_eq!(output_cap(100 << 20), 400 << 20);
        assert_eq!(output_cap(usize::MAX), u64::MAX);
    }
}
