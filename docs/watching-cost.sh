#!/bin/bash
# docs/watching.md, "What a scrape costs": lock run / state merge timings with and without
# `tractatus metrics --listen` scraped every second by a real prometheus. Same Redis, same binary,
# alternating rounds. T=path/to/tractatus N=runs ROUNDS=rounds.
set -u
T=${T:-$(cd "$(dirname "$0")/.." && pwd)/target/debug/tractatus}
N=${N:-40}
ROUNDS=${ROUNDS:-3}
fp() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
P=$(fp); redis-server --port $P --save '' --appendonly no >/dev/null & RP=$!
sleep 0.5
D=$(mktemp -d); cd $D && git init -q . && mkdir -p .claude && echo '{}' > .claude/s.json
export TRACTATUS_REDIS=redis://127.0.0.1:$P TRACTATUS_QUIET=1
$T lock init >/dev/null
# Some history in the audit log, as a real checkout would have.
for i in $(seq 200); do $T lock run --name "f$((i % 20))" -- true; done
measure() { # label
  python3 - "$T" "$N" "$1" <<'PY'
import subprocess, sys, time, statistics
t, n, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def run(args):
    s = time.perf_counter(); subprocess.run([t] + args, check=True, stdout=subprocess.DEVNULL); return (time.perf_counter() - s) * 1000
lr = sorted(run(["lock", "run", "--name", "bench", "--", "true"]) for _ in range(n))
sm = sorted(run(["state", "merge", ".claude/s.json", '{"n": 1}']) for _ in range(n))
p = lambda v, q: v[min(len(v) - 1, int(q * len(v)))]
print(f"{label:10} lock run  median {statistics.median(lr):6.1f} ms  p95 {p(lr, .95):6.1f} ms | state merge  median {statistics.median(sm):6.1f} ms  p95 {p(sm, .95):6.1f} ms")
PY
}
MP=$(fp); WP=$(fp)
cat > $D/prom.yml <<Y
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: tractatus
    static_configs: [{targets: ['127.0.0.1:$MP']}]
Y
for r in $(seq $ROUNDS); do
  measure "off"
  $T metrics --listen 127.0.0.1:$MP 2>/dev/null & LP=$!
  prometheus --config.file=$D/prom.yml --storage.tsdb.path=$D/data --web.listen-address=127.0.0.1:$WP >/dev/null 2>&1 & PP=$!
  sleep 3
  measure "scraped/1s"
  echo "           prometheus up{job=tractatus}: $(curl -s "127.0.0.1:$WP/api/v1/query?query=up" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["result"][0]["value"][1])'), one /metrics answer: $(curl -s -o /dev/null -w '%{time_total}' 127.0.0.1:$MP/metrics) s"
  kill $PP; wait $PP 2>/dev/null
  kill $LP; wait $LP 2>/dev/null
done
curl -s "127.0.0.1:$WP/api/v1/query?query=up" >/dev/null
kill $RP
rm -rf $D
