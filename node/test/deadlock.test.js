'use strict'
// Deadlock detection across processes (issue 24): two withLock scopes in two processes, each
// updating the file the other holds, end with one DEADLOCK (exit code 75) at once, the cycle in
// its message, and the other's update landed. Real node processes, real redis-server, and
// local locks.

const { describe, it } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { PKG, childEnv, runTogether, BARRIER, withBackend } = require('./helpers')

// Process i holds files[i] and updates files[1 - i] once both hold theirs.
const crossing = `${BARRIER}
const fs = require('node:fs')
const path = require('node:path')
const t = require(${JSON.stringify(PKG)})
const i = Number(process.argv[1])
const [marks, a, b, how] = process.argv.slice(2)
const [mine, theirs] = i === 0 ? [a, b] : [b, a]
;(async () => {
  await waitGo()
  await t.withLock({ files: [mine] }, async () => {
    fs.writeFileSync(path.join(marks, 'held-' + i), '')
    // Bounded: both hold their file within a few seconds, or the test fails on its own.
    for (let n = 0; n < 2000 && fs.readdirSync(marks).length < 2; n++) await new Promise((r) => setTimeout(r, 5))
    fs.writeFileSync(path.join(marks, 'start-' + i), String(Date.now()))
    try {
      const update = () => t.updateJson(theirs, (d) => { d['p' + i] = 1 }, { quiet: true })
      // Either the update waits itself, or a nested withLock on their file does.
      if (how === 'nested') await t.withLock({ files: [theirs] }, update, { quiet: true })
      else await update()
    } finally {
      fs.writeFileSync(path.join(marks, 'done-' + i), String(Date.now()))
    }
  }, { quiet: true })
})().catch((e) => { console.error(e.code, e.exitCode, e.message); process.exit(e.exitCode || 1) })
`

for (const backend of ['redis', 'local']) {
  describe(`deadlock (${backend})`, () => {
    let redis
    let repo
    withBackend(backend, (r, p) => { redis = r; repo = p })

    for (const how of ['update', 'nested']) {
      it(`two withLock scopes in two processes crossing their files (${how === 'nested' ? 'a nested withLock' : 'updateJson'} waits): one DEADLOCK at once, the other lands`, async (t) => {
        const env = childEnv(redis?.url, { TRACTATUS_WAIT: '20s' })
        const marks = repo.file('marks-' + how)
        fs.mkdirSync(marks)
        const [a, b] = [repo.file('.claude/a.json'), repo.file('.claude/b.json')]
        fs.writeFileSync(a, '{}\n')
        fs.writeFileSync(b, '{}\n')
        const results = await runTogether(2, crossing, { cwd: repo.root, env, args: [marks, a, b, how], timeoutMs: 40_000 })
        const victims = [0, 1].filter((i) => results[i].code !== 0)
        assert.equal(victims.length, 1, results.map((r) => `${r.code}: ${r.stderr}`).join('\n'))
        const v = victims[0]
        const survivor = 1 - v
        assert.equal(results[v].code, 75, results[v].stderr)
        assert.match(results[v].stderr, /^DEADLOCK 75 deadlock waiting for lock/, results[v].stderr)
        assert.match(results[v].stderr, /\.claude\/a\.json/)
        assert.match(results[v].stderr, /\.claude\/b\.json/)
        assert.equal(results[survivor].code, 0, results[survivor].stderr)
        const landed = JSON.parse(fs.readFileSync(survivor === 0 ? b : a, 'utf8'))
        assert.equal(landed['p' + survivor], 1, 'the survivor\'s update was lost')
        const read = (what) => Number(fs.readFileSync(path.join(marks, what), 'utf8'))
        const closed = Math.max(read('start-0'), read('start-1'))
        const took = read('done-' + v) - closed
        t.diagnostic(`${backend} (${how}): the victim gave up ${took} ms after the cycle closed: ${results[v].stderr.trim()}`)
        assert.ok(took < 1000, `took ${took} ms`)
      })
    }
  })
}
