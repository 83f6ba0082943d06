//! `lock run`'s guard announcements (abstract Unix sockets, issue 20) as a co-user can fake them:
//! anyone on the host can read `/proc/net/unix` and bind a name like a guard's. The attacker
//! copies the name of the victim's running guard with another pid and nonce and keeps it bound;
//! the victim's next `lock run` of that lock must take it for a hint only (a full look finds no
//! such guard), neither wait for it nor fail.

use std::process::Stdio;
use std::time::Duration;

use tractatus_testkit::{SharedCheckout, Who, run_timed, wait_until};

use crate::support::bin;

/// Every run here must end well within this (a hang is a failure, not a slow test).
const LIMIT: Duration = Duration::from_secs(30);

/// The attacker: bind a look-alike of every guard name announced now, say how many, keep them
/// until told to stop (bounded).
const FAKER: &str = r#"
import os, socket, sys, time
names = {l.split()[-1] for l in open('/proc/net/unix').read().splitlines()[1:]
         if l.split() and l.split()[-1].startswith('@tractatus-guard/')}
socks = []
for n in names:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind('\0' + n[1:].rsplit('/', 1)[0] + '/1.1')
    socks.append(s)
open(sys.argv[1], 'w').write(str(len(socks)))
for _ in range(1200):
    if os.path.exists(sys.argv[2]):
        break
    time.sleep(0.05)
"#;

#[test]
fn a_co_users_look_alike_guard_name_neither_holds_up_nor_fails_the_next_lock_run() {
    let shared = SharedCheckout::new();
    let started = shared.file("holder-started");
    let go = shared.file("holder-go");
    let mut holder = shared.command(Who::Victim, bin());
    holder
        .args(["lock", "run", "--name", "g", "--", "sh", "-c"])
        .arg(r#"touch "$1"; i=0; while [ ! -e "$2" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done"#)
        .arg("sh")
        .arg(&started)
        .arg(&go)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut holder = holder.spawn().unwrap();
    wait_until(Duration::from_secs(20), "the holder's command runs", || {
        started.exists()
    });

    let script = shared.attacker_dir().join("faker.py");
    std::fs::write(&script, FAKER).unwrap();
    let bound = shared.attacker_dir().join("bound");
    let stop = shared.attacker_dir().join("stop");
    let mut faker = shared.command(Who::Attacker, std::path::Path::new("/usr/bin/python3"));
    faker.arg(&script).arg(&bound).arg(&stop);
    let mut faker = faker.spawn().unwrap();
    wait_until(
        Duration::from_secs(20),
        "the attacker bound its names",
        || std::fs::read_to_string(&bound).is_ok_and(|n| !n.is_empty()),
    );
    let n: usize = std::fs::read_to_string(&bound).unwrap().parse().unwrap();
    assert!(n >= 1, "the holder's guard announced nothing to copy");

    std::fs::write(&go, "").unwrap();
    assert!(holder.wait().unwrap().success());

    // The look-alike (pid 1, a nonce of its own) is still bound: the next run of the lock looks
    // at every process, finds no guard of it, and runs at once; were the name trusted, it would
    // wait for a guard that does not exist (up to its kill grace of 20 s) or refuse.
    let mut next = shared.command(Who::Victim, bin());
    next.args([
        "lock",
        "run",
        "--kill-grace",
        "20s",
        "--name",
        "g",
        "--",
        "true",
    ]);
    let ran = run_timed(&mut next, LIMIT);
    std::fs::write(&stop, "").unwrap();
    let _ = faker.wait();
    assert!(ran.ok(), "the next lock run: {}", ran.describe());
    assert!(
        ran.elapsed < Duration::from_secs(10),
        "the next lock run waited {:?}: it waited for the look-alike guard",
        ran.elapsed
    );
    shared.assert_private_files_untouched();
}
