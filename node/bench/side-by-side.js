#!/usr/bin/env node
'use strict'
// Two builds side by side in one run: what a change costs on the common path. For each build,
// `tractatus state merge` (a process per call) and `updateJson` from a fresh `node` process (as a
// hook calls it), alternating call by call between the builds so that the machine's load weighs
// on both alike, on local locks and on one Redis. Prints p50/p95 per build and the ratio of the
// second build's p50 to the first's.
//
//   node bench/side-by-side.js BASE_DIR NEW_DIR      (SIDE_CALLS=200 calls per build and case)
//
// Each DIR is a checkout whose release build is done: DIR/target/release/tractatus and an addon
// in DIR/node (`npm run build` there).

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { startRedis, tempRepo } = require('../test/helpers')

const CALLS = Number(process.env.SIDE_CALLS || 200)
const dirs = process.argv.slice(2, 4).map((d) => path.resolve(d))
if (dirs.length !== 2) {
  console.error('usage: node bench/side-by-side.js BASE_DIR NEW_DIR')
  process.exit(64)
}
const builds = dirs.map((dir) => ({
  dir,
  bin: path.join(dir, 'target/release/tractatus'),
  pkg: path.join(dir, 'node'),
}))
for (const b of builds) {
  if (!fs.existsSync(b.bin)) throw new Error(`${b.bin} is missing: cargo build --release there`)
  if (!fs.readdirSync(b.pkg).some((f) => f.endsWith('.node'))) throw new Error(`no addon in ${b.pkg}: npm run build there`)
}

const pct = (s, p) => s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]

function timed(cmd, args, opts) {
  const t = process.hrtime.bigint()
  const r = spawnSync(cmd, args, { ...opts, stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 })
  const ms = Number(process.hrtime.bigint() - t) / 1e6
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr}`)
  return ms
}

function hookScript(pkg) {
  return `const { updateJson } = require(${JSON.stringify(pkg)});
updateJson('.claude/session-state.json', (s) => { s.message_count = (s.message_count || 0) + 1; return s })
  .catch((e) => { console.error(e.message); process.exit(e.exitCode || 1) })`
}

async function main() {
  const redis = await startRedis()
  try {
    for (const backend of [{ label: 'local locks', env: {} }, { label: 'one Redis', env: { TRACTATUS_REDIS: redis.url } }]) {
      // One repository per build, so that the builds never wait for each other's locks.
      const repos = builds.map(() => tempRepo())
      const env = { ...process.env, TRACTATUS_QUIET: '1', ...backend.env }
      for (const k of Object.keys(env)) if (k.startsWith('TRACTATUS_') && !(k in backend.env) && k !== 'TRACTATUS_QUIET') delete env[k]
      for (const r of repos) fs.writeFileSync(r.file('.claude/session-state.json'), '{\n  "message_count": 0\n}\n')
      const times = builds.map(() => ({ merge: [], update: [] }))
      for (let i = 0; i < CALLS; i++) {
        builds.forEach((b, k) => {
          times[k].merge.push(timed(b.bin, ['state', 'merge', '.claude/session-state.json', `{"n":${i}}`], { cwd: repos[k].root, env }))
        })
        builds.forEach((b, k) => {
          times[k].update.push(timed(process.execPath, ['-e', hookScript(b.pkg)], { cwd: repos[k].root, env }))
        })
      }
      for (const what of ['merge', 'update']) {
        const rows = times.map((t) => t[what].sort((a, b) => a - b))
        const [p50a, p50b] = rows.map((s) => pct(s, 50))
        const name = what === 'merge' ? '`state merge` (CLI)' : '`updateJson` (fresh node)'
        console.log(`${backend.label.padEnd(12)} ${name.padEnd(26)} base p50 ${p50a.toFixed(2)} p95 ${pct(rows[0], 95).toFixed(2)} ms | new p50 ${p50b.toFixed(2)} p95 ${pct(rows[1], 95).toFixed(2)} ms | new/base ${(p50b / p50a).toFixed(3)}x`)
      }
      for (const r of repos) r.cleanup()
    }
  } finally {
    await redis.stop()
  }
}

main().catch((e) => { console.error(e.message); process.exit(1) })
