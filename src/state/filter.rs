//! `state update`'s command: run it with the document on stdin and take its stdout, watching
//! the lease meanwhile. It gets the lease's capability (see [`crate::join`]), so it may write
//! this file itself under the same lease.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::{Error, Lease, Result};

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
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::usage(format!("cannot run '{program}': {e}")))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::internal("no stdin pipe"))?;
    let input = input.to_vec();
    let feed = tokio::spawn(async move {
        // A command that does not read its input closes the pipe early: not an error.
        let _ = stdin.write_all(&input).await;
    });
    let output = tokio::select! {
        out = child.wait_with_output() => out.map_err(|e| Error::internal(format!("waiting for '{program}': {e}")))?,
        reason = lease.lost() => {
            return Err(Error::LeaseLost { name: lease.name().to_owned(), reason });
        }
    };
    let _ = feed.await;
    if !output.status.success() {
        return Ok(Filtered::Failed(crate::run::exit_code(output.status)));
    }
    Ok(Filtered::Output(output.stdout))
}
