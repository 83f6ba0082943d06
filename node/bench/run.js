#!/usr/bin/env node
'use strict'
// The benchmark of issue 9, rerunnable: the PostToolUse hook of examples/ written unguarded and
// with this package, each call a fresh `node` process fed a hook payload, on a 1000-record
// metrics ring (~190 KB) and a 1 KB session state. Per-call p50/p95 with 1 process and with 4
// concurrent sessions, lost updates, on 1 Redis and on 3 masters; and the addon's load time.
//
//   node bench/run.js            (BENCH_CALLS=40 calls per session by default)

const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { PKG, startRedis, tempRepo } = require('../test/helpers')

const CALLS = Number(process.env.BENCH_CALLS || 40)
const SESSIONS = 4
const ADDON = fs.readdirSync(PKG).find((f) => f.endsWith('.node'))

function pct(sorted, p) {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]
}
const ms = (x) => (Number.isFinite(x) ? x.toFixed(1) : '-')

function record(i, session) {
  return {
    ts: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
    session,
    event: 'PostToolUse',
    tool: ['Bash', 'Read', 'Edit', 'Write', 'Grep'][i % 5],
    success: i % 17 !== 0,
    input_bytes: 100 + (i * 37) % 900,
  }
}

/** Fresh fixtures: a 1000-record metrics ring and a 1 KB session state. */
function writeFixtures(root) {
  fs.mkdirSync(path.join(root, '.claude/metrics'), { recursive: true })
  const records = Array.from({ length: 1000 }, (_, i) => record(i, `fixture-session-${i % 7}`))
  const metrics = { records, totals: { executions: 1000, last: records[999].ts } }
  fs.writeFileSync(path.join(root, '.claude/metrics/hooks-metrics.json'), JSON.stringify(metrics, null, 2))
  const state = {
    session_id: 'fixture-session-0',
    started: '2026-01-01T00:00:00.000Z',
    message_count: 0,
    last_activity: '2026-01-01T00:00:00.000Z',
    framework: { version: '4.2.0', components: ['BoundaryEnforcer', 'CrossReferenceValidator', 'MetacognitiveVerifier', 'ContextPressureMonitor', 'InstructionPersistenceClassifier'] },
    pressure: { level: 'NORMAL', score: 0.12, tokens_used: 41234, token_budget: 200000 },
    instructions: Array.from({ length: 6 }, (_, i) => ({ id: `inst-${i}`, quadrant: 'STRATEGIC', persistence: 'HIGH', text: `instruction ${i}: keep the state files consistent` })),
  }
  fs.writeFileSync(path.join(root, '.claude/session-state.json'), JSON.stringify(state, null, 2))
  return {
    metricsBytes: fs.statSync(path.join(root, '.claude/metrics/hooks-metrics.json')).size,
    stateBytes: fs.statSync(path.join(root, '.claude/session-state.json')).size,
  }
}

function readCounts(root) {
  const read = (f) => {
    try { return JSON.parse(fs.readFileSync(path.join(root, f), 'utf8')) } catch { return null }
  }
  const m = read('.claude/metrics/hooks-metrics.json')
  const s = read('.claude/session-state.json')
  return { executions: m ? m.totals.executions - 1000 : NaN, messages: s ? s.message_count : NaN }
}

function callHook(script, root, env, session, i) {
  const payload = JSON.stringify({
    session_id: session,
    transcript_path: `/tmp/${session}.jsonl`,
    cwd: root,
    hook_event_name: 'PostToolUse',
    tool_name: 'Bash',
    tool_input: { command: `echo call ${i}`, description: 'benchmark call' },
    tool_response: { stdout: `call ${i}\n`, stderr: '', interrupted: false },
  })
  return new Promise((resolve) => {
    const started = process.hrtime.bigint()
    const child = spawn(process.execPath, ['--require', path.join(__dirname, 'timing.js'), script], { cwd: root, env: { ...env, CLAUDE_PROJECT_DIR: root }, stdio: ['pipe', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d) => { stderr += d })
    child.stdin.end(payload)
    const timer = setTimeout(() => process.kill(child.pid, 'SIGKILL'), 10_000) // Claude Code's hook timeout
    child.once('close', (code) => {
      clearTimeout(timer)
      const inner = /bench-in-process-ms ([\d.]+)/.exec(stderr)
      resolve({
        ms: Number(process.hrtime.bigint() - started) / 1e6,
        inner: inner ? Number(inner[1]) : NaN,
        ok: code === 0,
        stderr: stderr.replace(/\n?bench-in-process-ms [\d.]+\n/, ''),
      })
    })
  })
}

/**
 * Run the variants in blocks of BLOCK calls per session, one variant after the other in each
 * block (so that the machine's load, whatever it is, weighs on all of them alike). Within a
 * block each of the `sessions` sessions runs its calls back to back on its own, as concurrent
 * Claude Code sessions do; each variant has its own copy of the fixtures.
 */
const BLOCK = 5
async function rounds(variants, sessions) {
  const stats = variants.map((v) => ({ ...v, times: [], inner: [], failed: 0, firstError: '' }))
  for (const v of stats) writeFixtures(v.root)
  for (let first = 0; first < CALLS; first += BLOCK) {
    for (const v of stats) {
      await Promise.all(Array.from({ length: sessions }, async (_, s) => {
        for (let i = first; i < Math.min(CALLS, first + BLOCK); i++) {
          const r = await callHook(v.script, v.root, v.env, `bench-session-${s}`, i)
          v.times.push(r.ms)
          v.inner.push(r.inner)
          if (!r.ok) {
            v.failed++
            v.firstError ||= r.stderr.trim().split('\n')[0]
          }
        }
      }))
    }
  }
  return stats.map((v) => {
    v.times.sort((a, b) => a - b)
    v.inner.sort((a, b) => a - b)
    const expected = sessions * CALLS
    const got = readCounts(v.root)
    const lost = (Number.isNaN(got.executions) ? expected : expected - got.executions)
      + (Number.isNaN(got.messages) ? expected : expected - got.messages)
    return {
      label: v.label,
      sessions,
      calls: expected,
      p50: pct(v.times, 50),
      p95: pct(v.times, 95),
      in50: pct(v.inner, 50),
      in95: pct(v.inner, 95),
      lost,
      failed: v.failed,
      firstError: v.firstError,
    }
  })
}

function loadTime() {
  const runs = 25
  const script = `const p = ${JSON.stringify(path.join(PKG, ADDON))};
const t0 = process.hrtime.bigint(); require(p); const t1 = process.hrtime.bigint();
process.stdout.write(String(Number(t1 - t0) / 1e6))`
  const out = []
  for (let i = 0; i < runs; i++) out.push(Number(spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' }).stdout))
  out.sort((a, b) => a - b)
  return { p50: pct(out, 50), p95: pct(out, 95), min: out[0] }
}

async function main() {
  if (!ADDON) throw new Error('no addon built: run `npm run build` first')
  // One repository per variant, each as a project installs the package, with the hook where
  // Claude Code's settings point.
  const repos = []
  const setup = (hook) => {
    const repo = tempRepo()
    repos.push(repo)
    fs.mkdirSync(path.join(repo.root, 'node_modules'))
    fs.symlinkSync(PKG, path.join(repo.root, 'node_modules', 'tractatus-lock'))
    fs.mkdirSync(path.join(repo.root, '.claude/hooks'), { recursive: true })
    const script = path.join(repo.root, '.claude/hooks/post-tool-use.js')
    fs.copyFileSync(hook, script)
    return { root: repo.root, script }
  }
  const plain = setup(path.join(__dirname, 'unguarded-hook.js'))
  const single = setup(path.join(PKG, 'examples/post-tool-use.js'))
  const masters = setup(path.join(PKG, 'examples/post-tool-use.js'))
  const sizes = writeFixtures(plain.root)

  const servers = []
  try {
    for (let i = 0; i < 4; i++) servers.push(await startRedis())
    const base = { ...process.env }
    for (const k of Object.keys(base)) if (k.startsWith('TRACTATUS_')) delete base[k]
    // Fresh Redlock masters refuse grants for their restart quarantine: keep it short, and
    // the TTL within it, the same on both setups.
    const common = { ...base, TRACTATUS_TTL: '2s', TRACTATUS_QUARANTINE: '2s' }
    const one = { ...common, TRACTATUS_REDIS: servers[0].url }
    const three = { ...common, TRACTATUS_REDIS: servers.slice(1).map((s) => s.url).join(',') }
    // Warm up: the three masters' quarantine passes, the page cache holds node and the addon.
    const t = require('..')
    // This process's own quarantine is the default (10 s): wait past it.
    await t.withLock({ names: ['bench-warm-up'] }, async () => {}, { cwd: masters.root, redis: three.TRACTATUS_REDIS.split(','), ttl: '2s', wait: '30s', quiet: true })
    await callHook(single.script, single.root, one, 'warm', 0)
    await callHook(masters.script, masters.root, three, 'warm', 0)
    await callHook(plain.script, plain.root, base, 'warm', 0)

    console.log(`tractatus-lock benchmark: ${CALLS} calls per session, fresh node process per call`)
    console.log(`fixtures: metrics ring ${(sizes.metricsBytes / 1024).toFixed(0)} KB (1000 records), session state ${(sizes.stateBytes / 1024).toFixed(1)} KB; node ${process.version}; ${require('node:os').cpus().length} cores; load average ${require('node:os').loadavg()[0].toFixed(1)}`)
    const variants = [
      { label: 'unguarded', ...plain, env: base },
      { label: 'package, 1 Redis', ...single, env: one },
      { label: 'package, 3 masters', ...masters, env: three },
    ]
    const rows = [...await rounds(variants, 1), ...await rounds(variants, SESSIONS)]
    console.log('')
    console.log('| hook | sessions | calls | p50 ms | p95 ms | in-process p50 | in-process p95 | lost updates | failed calls |')
    console.log('|---|---|---|---|---|---|---|---|---|')
    for (const r of rows) console.log(`| ${r.label} | ${r.sessions} | ${r.calls} | ${ms(r.p50)} | ${ms(r.p95)} | ${ms(r.in50)} | ${ms(r.in95)} | ${r.lost} | ${r.failed} |`)
    for (const r of rows) if (r.firstError) console.log(`  ${r.label} x${r.sessions}: first failure: ${r.firstError}`)

    const load = loadTime()
    console.log('')
    const verdict = (ok) => (ok ? 'met' : 'MISSED')
    for (const sessions of [1, SESSIONS]) {
      const [u, r1, r3] = rows.filter((r) => r.sessions === sessions)
      const added = (r, k) => r[k] - u[k]
      const line = (label, r, t50, t95) => console.log(
        `${sessions} session(s), ${label}: adds ${ms(added(r, 'p50'))} ms p50 (target < ${t50}: ${verdict(added(r, 'p50') < t50)}), ` +
        `${ms(added(r, 'p95'))} ms p95 (target < ${t95}: ${verdict(added(r, 'p95') < t95)}), lost ${r.lost} (target 0: ${verdict(r.lost === 0)}); ` +
        `in-process it adds ${ms(added(r, 'in50'))} ms p50, ${ms(added(r, 'in95'))} ms p95`)
      line('1 Redis', r1, 10, 30)
      line('3 masters', r3, 15, 45)
      console.log(`${sessions} session(s): 3 masters / 1 Redis: p50 ${(r3.p50 / r1.p50).toFixed(2)}x, p95 ${(r3.p95 / r1.p95).toFixed(2)}x (target within 1.5x); unguarded lost ${u.lost} of ${2 * u.calls} updates`)
    }
    console.log(`addon load (require of the .node, fresh process, ${25} runs): p50 ${load.p50.toFixed(2)} ms, p95 ${load.p95.toFixed(2)} ms, min ${load.min.toFixed(2)} ms (target < 5: ${verdict(load.p50 < 5)})`)
  } finally {
    for (const s of servers) await s.stop()
    for (const r of repos) r.cleanup()
  }
}

main().catch((e) => {
  console.error(`bench: ${e.stack || e}`)
  process.exitCode = 1
})
