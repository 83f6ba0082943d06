'use strict'
// Joiners of one lease take turns: two withLock calls of one Node process started under
// `tractatus lock run` both join the run's lease, one after the other, never at once.

const { describe, it } = require('node:test')
const assert = require('node:assert/strict')
const { PKG, childEnv, cliPath, run, withBackend } = require('./helpers')

// Each withLock logs when it went in and out, 50 ms apart; the parent counts overlaps.
const script = `
const t = require(process.argv[1])
const events = []
const one = (i) => t.withLock({ names: ['jobs/turns'] }, async () => {
  events.push([process.hrtime.bigint(), 1])
  await new Promise((r) => setTimeout(r, 50))
  events.push([process.hrtime.bigint(), -1])
}, { cwd: process.cwd(), quiet: true, wait: '20s' })
Promise.all([0, 1, 2, 3].map(one)).then(() => {
  events.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
  let inside = 0
  let overlaps = 0
  for (const [, d] of events) {
    inside += d
    if (inside > 1) overlaps++
  }
  console.log(JSON.stringify({ overlaps, events: events.length }))
}, (e) => { console.error(e.message); process.exit(9) })
`

for (const backend of ['redis', 'local']) {
  describe(`joins under lock run (${backend})`, () => {
    let redis
    let repo
    withBackend(backend, (r, p) => { redis = r; repo = p })

    it('concurrent withLock calls that join one lease take turns', () => {
      const r = run(cliPath(), ['lock', 'run', '--name', 'jobs/turns', '--', process.execPath, '-e', script, PKG], {
        cwd: repo.root,
        env: childEnv(redis?.url, { TRACTATUS_QUIET: '1' }),
        timeout: 60_000,
      })
      assert.equal(r.status, 0, r.stderr)
      const out = JSON.parse(r.stdout.trim().split('\n').pop())
      assert.deepEqual(out, { overlaps: 0, events: 8 })
    })
  })
}
