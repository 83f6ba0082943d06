//! Holding several locks at once without deadlock: every caller takes them in one order
//! (sorted, duplicates dropped), within one wait budget, and gives back what it took when a
//! later one cannot be had.

use std::time::{Duration, Instant};

use crate::options::WaitProgress;
use crate::{AcquireOptions, Coordinator, Lease, Result};

/// The work of [`Coordinator::acquire_all`].
pub(crate) async fn acquire_all<S: AsRef<str>>(
    coordinator: &Coordinator,
    names: &[S],
    wait: Duration,
    progress: impl FnMut(&str) -> Option<WaitProgress>,
) -> Result<Vec<Lease>> {
    coordinator
        .acquire_all_holding(names, wait, &[], progress)
        .await
}

/// The work of [`Coordinator::acquire_all_holding`].
pub(crate) async fn acquire_all_holding<S: AsRef<str>>(
    coordinator: &Coordinator,
    names: &[S],
    wait: Duration,
    holding: &[crate::Holding],
    mut progress: impl FnMut(&str) -> Option<WaitProgress>,
) -> Result<Vec<Lease>> {
    let mut names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    names.sort_unstable();
    names.dedup();
    let started = Instant::now();
    let max_hold = coordinator.config().max_hold;
    let mut leases: Vec<Lease> = Vec::new();
    for name in names {
        let opts = AcquireOptions {
            wait: wait.saturating_sub(started.elapsed()),
            progress: progress(name),
            // What this call already took counts as held while it waits for the next.
            holding: holding
                .iter()
                .cloned()
                .chain(leases.iter().map(Lease::holding))
                .collect(),
        };
        match coordinator.acquire(name, &opts).await {
            Ok(mut l) => {
                l.keep_alive(max_hold);
                leases.push(l);
            }
            Err(e) => {
                for l in leases.into_iter().rev() {
                    let _ = l.release().await;
                }
                return Err(e);
            }
        }
    }
    Ok(leases)
}

#[cfg(test)]
mod tests {
    use crate::{Config, Coordinator, Identity};
    use std::time::Duration;

    #[tokio::test]
    async fn several_names_are_taken_once_each_and_given_back_when_one_is_held() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("locks");
        let a =
            Coordinator::local(Config::new(vec![]), Identity::current("a"), dir.clone()).unwrap();
        let b = Coordinator::local(Config::new(vec![]), Identity::current("b"), dir).unwrap();
        let leases = a
            .acquire_all(&["y", "x", "y"], Duration::ZERO, |_| None)
            .await
            .unwrap();
        let names: Vec<&str> = leases.iter().map(|l| l.name()).collect();
        assert_eq!(names, ["x", "y"]);
        let mut leases = leases.into_iter();
        leases.next().unwrap().release().await.unwrap();
        let held = leases.next().unwrap();
        // "x" is free again, "y" is held: b takes x, then gives it back when y cannot be had.
        let got = b.acquire_all(&["x", "y"], Duration::ZERO, |_| None).await;
        assert!(got.is_err_and(|e| e.is_held()));
        let x = b.try_acquire("x").await.unwrap();
        x.release().await.unwrap();
        held.release().await.unwrap();
    }
}
