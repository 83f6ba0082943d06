#!/usr/bin/env bash
# What `tractatus lock run --name x -- true` costs next to a guarded write (`tractatus state
# merge` on a small file), on one redis-server started here on a free loopback port and stopped
# (by its pid) at the end. Issue 20's target: lock run <= 1.5x state merge, one at a time (p50)
# and with 8 processes contending (runs/s against merges/s).
#
# Usage: scripts/lock-run-vs-merge.sh [BINARY...]
#   BINARY defaults to target/release/tractatus (build it with `cargo build --release`).
#   Several binaries (say, a before and an after) are measured interleaved in one run, so that
#   the machine's noise falls on all of them alike.
# Environment: ROUNDS (one-at-a-time samples per binary and command, default 200),
#   CONTEND_SECS (seconds per contended measurement, default 3), CONTEND_ROUNDS (default 3),
#   PROCS (contending processes, default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -eq 0 ]; then set -- target/release/tractatus; fi
exec python3 - "$@" <<'PY'
import os, socket, statistics, subprocess, sys, tempfile, time, shutil, threading

bins = [os.path.abspath(b) for b in sys.argv[1:]]
for b in bins:
    if not os.access(b, os.X_OK):
        sys.exit(f"not an executable: {b} (cargo build --release?)")
rounds = int(os.environ.get("ROUNDS", "200"))
contend_secs = float(os.environ.get("CONTEND_SECS", "3"))
contend_rounds = int(os.environ.get("CONTEND_ROUNDS", "3"))
procs = int(os.environ.get("PROCS", "8"))

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

port = free_port()
redis = subprocess.Popen(
    ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
     "--appendonly", "no"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
work = tempfile.mkdtemp(prefix="lock-run-vs-merge.")
try:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("redis-server did not start")
            time.sleep(0.02)
    url = f"redis://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACTATUS_")}
    env["TRACTATUS_QUIET"] = "1"
    repos = {}
    for i, b in enumerate(bins):
        repo = os.path.join(work, f"repo{i}")
        os.makedirs(os.path.join(repo, ".git"))
        os.makedirs(os.path.join(repo, ".claude"))
        with open(os.path.join(repo, ".claude", "bench.json"), "w") as f:
            f.write('{"n": 0}\n')
        repos[b] = repo

    def cmd(b, what, n=0):
        base = [b, "--redis", url]
        if what == "run":
            return base + ["lock", "run", "--name", "x", "--", "true"]
        return base + ["state", "merge", ".claude/bench.json", '{"n": %d}' % n]

    def once(b, what, n=0):
        t = time.perf_counter()
        r = subprocess.run(cmd(b, what, n), cwd=repos[b], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t
        if r.returncode != 0:
            sys.exit(f"{what} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
        return dt

    subprocess.run([bins[0], "--redis", url, "lock", "init"], cwd=repos[bins[0]], env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for b in bins:  # warm the page cache and the namespace files
        for _ in range(5):
            once(b, "run"); once(b, "merge")

    times = {(b, w): [] for b in bins for w in ("run", "merge")}
    for i in range(rounds):
        # Alternate the order, so neither command nor binary always goes first.
        order = [(b, w) for b in bins for w in ("run", "merge")]
        if i % 2:
            order.reverse()
        for b, w in order:
            times[(b, w)].append(once(b, w, i))

    def contend(b, what):
        stop = time.monotonic() + contend_secs
        counts = [0] * procs
        def worker(k):
            n = 0
            while time.monotonic() < stop:
                once(b, what, n)
                n += 1
            counts[k] = n
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(procs)]
        t = time.perf_counter()
        for th in threads: th.start()
        for th in threads: th.join()
        return sum(counts) / (time.perf_counter() - t)

    rates = {(b, w): [] for b in bins for w in ("run", "merge")}
    for i in range(contend_rounds):
        order = [(b, w) for b in bins for w in ("run", "merge")]
        if i % 2:
            order.reverse()
        for b, w in order:
            rates[(b, w)].append(contend(b, w))

    def hold_p50(b):
        # Inside the lease: from the grant (its token is the grant's microsecond, a hybrid
        # clock) to the release (the audit log's whole ms), over the one-at-a-time runs.
        r = subprocess.run([b, "--redis", url, "--json", "lock", "log", "--limit", "100000"],
                           cwd=repos[b], env=env, capture_output=True, check=True)
        import json
        events = json.loads(r.stdout)
        granted = {e["token"]: e["token"] / 1000 for e in events
                   if e["event"] == "grant" and e.get("name") == "x"}
        holds = [e["at_ms"] - granted[e["token"]] for e in events
                 if e["event"] == "release" and e.get("token") in granted]
        return statistics.median(holds) if holds else float("nan")

    load = open("/proc/loadavg").read().split()[:3]
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} cpus, load {' '.join(load)}"
          f" at the end; redis-server on port {port}; {rounds} rounds one at a time,"
          f" {contend_rounds}x{contend_secs:g} s with {procs} contending")
    print(f"{'binary':<40} {'run p50':>9} {'merge p50':>10} {'ratio':>6} "
          f"{'runs/s':>8} {'merges/s':>9} {'ratio':>6} {'held p50':>9}")
    for b in bins:
        run50 = statistics.median(times[(b, 'run')]) * 1e3
        merge50 = statistics.median(times[(b, 'merge')]) * 1e3
        runs = statistics.median(rates[(b, 'run')])
        merges = statistics.median(rates[(b, 'merge')])
        name = b if len(b) <= 40 else "..." + b[-37:]
        print(f"{name:<40} {run50:>7.2f}ms {merge50:>8.2f}ms {run50 / merge50:>5.2f}x "
              f"{runs:>8.1f} {merges:>9.1f} {merges / runs:>5.2f}x {hold_p50(b):>7.2f}ms")
    print("(ratios: run p50 / merge p50, and merges/s / runs/s; target <= 1.5x each."
          " held: grant to release of lock x, whole runs and contention together)")
finally:
    redis.terminate()
    redis.wait()
    shutil.rmtree(work, ignore_errors=True)
PY
