//! Deadlock detection across processes (issue 24): nested calls under `lock run` that wait for
//! each other in a cycle are found and one of them, the youngest in line, gives up at once
//! with 75 and the cycle named, while the others finish; waits without a cycle never give up.
//! Every case runs on one Redis, on three Redlock masters and on local file locks.
//!
//! Split by sub-feature (issue 22): the backends, steps and the one-victim check stay here;
//! `cycles` (who gives up and who does not), `edges` (the wait-for edges themselves).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{Ran, RedisServer, Repo, run_timed, tractatus};

mod cycles;
mod edges;

const BIN: &str = env!("CARGO_BIN_EXE_tractatus");
/// Every wait's limit: a cycle waited out would end in 75 after it, far past the 1 s a victim
/// is given.
const WAIT: &str = "20s";
/// A process's limit in these tests.
const LIMIT: Duration = Duration::from_secs(40);

/// Where the locks are.
enum Backend {
    Redis(Vec<RedisServer>),
    /// A Redis Cluster, namespace [`CLUSTER_NS`].
    Cluster(tractatus_testkit::RedisCluster),
    Local,
}

/// The namespace on the cluster, fixed so that a test can tell which master a lock lives on.
const CLUSTER_NS: &str = "deadlock";

impl Backend {
    fn all() -> [Backend; 3] {
        [
            Backend::Redis(vec![RedisServer::start()]),
            Backend::Redis((0..3).map(|_| RedisServer::start()).collect()),
            Backend::Local,
        ]
    }

    fn name(&self) -> String {
        match self {
            Backend::Redis(s) if s.len() == 1 => "one Redis".into(),
            Backend::Redis(s) => format!("{} Redlock masters", s.len()),
            Backend::Cluster(c) => format!("a {}-master Redis Cluster", c.masters()),
            Backend::Local => "local locks".into(),
        }
    }

    fn tractatus(&self, dir: &Path) -> Command {
        let mut c = tractatus(dir);
        c.env("TRACTATUS_WAIT", WAIT).env("TRACTATUS_QUIET", "1");
        if let Backend::Redis(servers) = self {
            let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
            c.env("TRACTATUS_REDIS", urls.join(","));
        }
        if let Backend::Cluster(cluster) = self {
            c.env("TRACTATUS_REDIS", cluster.url())
                .env("TRACTATUS_NAMESPACE", CLUSTER_NS);
        }
        c
    }
}

/// One process of a test: it holds `held` (under `lock run`), and once every process holds
/// its file, merges `{"<tag>": 1}` into `wanted` (with `host` as its TRACTATUS_HOST, when
/// given). Marks `<tag>.start` just before the merge and `<tag>.done` just after (ns since the
/// epoch).
struct Step {
    tag: String,
    held: String,
    wanted: String,
    host: Option<String>,
}

fn step(tag: &str, held: &str, wanted: &str) -> Step {
    Step {
        tag: tag.into(),
        held: held.into(),
        wanted: wanted.into(),
        host: None,
    }
}

/// What one process did.
struct Outcome {
    ran: Ran,
    start_ns: u128,
    done_ns: u128,
}

/// Run `steps` at once, each waiting (bounded) until all hold their file before it merges.
fn run_steps(backend: &Backend, repo: &Repo, steps: &[Step]) -> Vec<Outcome> {
    let dir = repo.path();
    let marks = dir.join(".marks");
    std::fs::create_dir_all(&marks).unwrap();
    let n = steps.len();
    let script = r#"
        touch "$MARKS/$TAG.ready"
        i=0
        while [ "$(ls "$MARKS" | grep -c '\.ready$')" -lt "$N" ] && [ $i -lt 2000 ]; do
            sleep 0.005; i=$((i+1))
        done
        date +%s%N > "$MARKS/$TAG.start"
        "$BIN" state merge "$WANTED" "{\"$TAG\": 1}"
        rc=$?
        date +%s%N > "$MARKS/$TAG.done"
        exit $rc
    "#;
    let handles: Vec<_> = steps
        .iter()
        .map(|s| {
            let mut c = backend.tractatus(&dir);
            c.args(["lock", "run", "--file", &s.held, "--", "sh", "-c", script])
                .env("MARKS", &marks)
                .env("TAG", &s.tag)
                .env("N", n.to_string())
                .env("BIN", BIN)
                .env("WANTED", &s.wanted);
            if let Some(h) = &s.host {
                c.env("TRACTATUS_HOST", h);
            }
            std::thread::spawn(move || run_timed(&mut c, LIMIT))
        })
        .collect();
    let read_ns = |tag: &str, what: &str| {
        std::fs::read_to_string(marks.join(format!("{tag}.{what}")))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    handles
        .into_iter()
        .zip(steps)
        .map(|(h, s)| Outcome {
            ran: h.join().unwrap(),
            start_ns: read_ns(&s.tag, "start"),
            done_ns: read_ns(&s.tag, "done"),
        })
        .collect()
}

fn doc(repo: &Repo, file: &str) -> serde_json::Value {
    serde_json::from_str(&repo.read(file)).unwrap_or(serde_json::Value::Null)
}

/// A cycle of `steps` (each wants the next one's file): exactly one gives up, with 75 and
/// the cycle named, within 1 s of the last wait that closed it; every other update lands.
fn assert_one_victim(backend: &Backend, repo: &Repo, steps: &[Step], out: &[Outcome]) {
    let name = backend.name();
    let victims: Vec<usize> = (0..out.len()).filter(|&i| out[i].ran.code != 0).collect();
    assert_eq!(
        victims.len(),
        1,
        "{name}: not exactly one gave up: {}",
        out.iter()
            .map(|o| o.ran.describe())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    let v = &out[victims[0]];
    assert_eq!(v.ran.code, 75, "{name}: {}", v.ran.describe());
    assert!(
        v.ran.stderr.contains("deadlock"),
        "{name}: {}",
        v.ran.stderr
    );
    let vs = &steps[victims[0]];
    assert!(
        v.ran.stderr.contains(&format!("'{}'", vs.held))
            && v.ran.stderr.contains(&format!("'{}'", vs.wanted)),
        "{name}: the message does not name the locks held and waited for: {}",
        v.ran.stderr
    );
    println!("{name}: the victim said: {}", v.ran.stderr.trim());
    if let Backend::Redis(_) | Backend::Cluster(_) = backend {
        let log = crate::support::run(
            backend
                .tractatus(&repo.path())
                .args(["lock", "log", "--json"]),
        );
        assert!(
            log.stdout.contains(r#""deadlock""#),
            "{name}: no deadlock in the audit log: {}",
            log.stdout
        );
    }
    let closed = out.iter().map(|o| o.start_ns).max().unwrap();
    let took = Duration::from_nanos((v.done_ns.saturating_sub(closed)) as u64);
    println!(
        "{name}: {} waits, victim gave up {took:?} after the cycle closed",
        out.len()
    );
    assert!(
        took < Duration::from_secs(1),
        "{name}: victim took {took:?}"
    );
    for (i, s) in steps.iter().enumerate() {
        if i == victims[0] {
            continue;
        }
        assert_eq!(
            doc(repo, &s.wanted)[&s.tag],
            serde_json::json!(1),
            "{name}: {}'s update was lost",
            s.tag
        );
    }
}

/// SHA-1 of `lua/wait_for.lua`: the name Redis knows the script by once it ran.
fn wait_for_script_sha() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/lua/wait_for.lua");
    let out = Command::new("sha1sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..40].to_owned()
}
