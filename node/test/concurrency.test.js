'use strict'
// Many processes on one file: guarded updates lose nothing, an unguarded control does, and CLI
// and Node writers take turns. Real node processes, real redis-server, and local locks.

const { describe, it } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { PKG, childEnv, cliPath, runTogether, BARRIER, withBackend } = require('./helpers')

const PROCS = 8
const EACH = 100

const guarded = `${BARRIER}
const t = require(${JSON.stringify(PKG)})
;(async () => {
  await waitGo()
  for (let i = 0; i < ${EACH}; i++) await t.updateJson(process.argv[2], (d) => { d.n++ }, { quiet: true })
})().catch((e) => { console.error(e.code, e.message); process.exit(e.exitCode || 1) })
`

// What a hook does today: read, parse, change, write, with nothing in between guarding it.
const unguarded = `${BARRIER}
const fs = require('node:fs')
;(async () => {
  await waitGo()
  for (let i = 0; i < ${EACH}; i++) {
    let d
    for (;;) {
      try { d = JSON.parse(fs.readFileSync(process.argv[2], 'utf8')); break } catch { /* torn read: again */ }
    }
    await new Promise((r) => setImmediate(r))
    d.n++
    fs.writeFileSync(process.argv[2], JSON.stringify(d, null, 2))
  }
})()
`

for (const backend of ['redis', 'local']) {
  describe(`concurrency (${backend})`, () => {
    let redis
    let repo
    withBackend(backend, (r, p) => { redis = r; repo = p })

    it(`${PROCS} processes x ${EACH} updateJson increments: all ${PROCS * EACH} land; unguarded loses some`, async (t) => {
      const started = Date.now()
      const env = childEnv(redis?.url)
      const f = repo.file('.claude/counter.json')
      fs.writeFileSync(f, '{"n": 0}\n')
      const results = await runTogether(PROCS, guarded, { cwd: repo.root, env, args: [f], timeoutMs: 90_000 })
      for (const r of results) assert.equal(r.code, 0, r.stderr)
      assert.equal(JSON.parse(fs.readFileSync(f, 'utf8')).n, PROCS * EACH)
      t.diagnostic(`guarded: ${PROCS * EACH} of ${PROCS * EACH} in ${Date.now() - started} ms`)

      const control = repo.file('.claude/control.json')
      fs.writeFileSync(control, '{"n": 0}\n')
      await runTogether(PROCS, unguarded, { cwd: repo.root, env, args: [control], timeoutMs: 60_000 })
      // Interleaved plain writes can also leave the file torn: that is a loss too.
      let n
      try { n = JSON.parse(fs.readFileSync(control, 'utf8')).n } catch { n = 'torn' }
      assert.ok(n === 'torn' || n < PROCS * EACH, `the unguarded control lost nothing (${n}): the test proves nothing`)
      t.diagnostic(`unguarded control: ${n} of ${PROCS * EACH}`)
    })

    it('CLI and Node writers interleaved on one file lose nothing', async () => {
      const env = childEnv(redis?.url)
      const f = repo.file('.claude/mixed.json')
      fs.writeFileSync(f, JSON.stringify({ n: 0, node: [], cli: [] }, null, 2))
      const rounds = 25
      const nodeWriter = `${BARRIER}
const t = require(${JSON.stringify(PKG)})
;(async () => {
  await waitGo()
  for (let i = 0; i < ${rounds}; i++) {
    await t.updateJson(process.argv[2], (d) => { d.n++; d.node.push(process.argv[1] + '-' + i) }, { quiet: true })
  }
})().catch((e) => { console.error(e.code, e.message); process.exit(e.exitCode || 1) })
`
      const cliWriter = `${BARRIER}
const { spawnSync } = require('node:child_process')
;(async () => {
  await waitGo()
  for (let i = 0; i < ${rounds}; i++) {
    const r = spawnSync(process.argv[3], ['state', 'append', process.argv[2], '/cli', JSON.stringify(process.argv[1] + '-' + i)], { encoding: 'utf8' })
    if (r.status !== 0) { console.error(r.stderr); process.exit(r.status || 1) }
  }
})()
`
      const [a, b] = await Promise.all([
        runTogether(2, nodeWriter, { cwd: repo.root, env, args: [f], timeoutMs: 90_000 }),
        runTogether(2, cliWriter, { cwd: repo.root, env, args: [f, cliPath()], timeoutMs: 90_000 }),
      ])
      for (const r of [...a, ...b]) assert.equal(r.code, 0, r.stderr)
      const doc = JSON.parse(fs.readFileSync(f, 'utf8'))
      assert.equal(doc.n, 2 * rounds)
      assert.equal(doc.node.length, 2 * rounds)
      assert.equal(doc.cli.length, 2 * rounds)
    })
  })
}
