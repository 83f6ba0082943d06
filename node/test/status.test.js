'use strict'
// lockStatus() (issue 21): what `tractatus lock status --json` prints, on each backend, while
// a withLock of this process holds a lock and after it let go.

const { describe, it } = require('node:test')
const assert = require('node:assert/strict')
const t = require('..')
const { childEnv, cliPath, run, withBackend } = require('./helpers')

// The fields that move with time: compared as numbers, not as values.
const timeless = (report) => ({
  ...report,
  locks: report.locks.map(({ held_ms, ttl_left_ms, ...rest }) => {
    assert.equal(typeof held_ms, 'number')
    assert.ok(ttl_left_ms === null || typeof ttl_left_ms === 'number')
    return rest
  }),
})

for (const backend of ['redis', 'local']) {
  describe(`lockStatus (${backend})`, () => {
    let redis
    let repo
    let opts
    withBackend(backend, (r, p) => {
      redis = r
      repo = p
      opts = { cwd: repo.root, quiet: true, ...(redis ? { redis: redis.url } : {}) }
      if (redis) assert.equal(cli(['lock', 'init']).status, 0)
    })
    const cli = (args) => run(cliPath(), args, { cwd: repo.root, env: childEnv(redis?.url, { TRACTATUS_QUIET: '1' }) })
    const cliStatus = () => {
      const r = cli(['--json', 'lock', 'status'])
      assert.equal(r.status, 0, r.stderr)
      return JSON.parse(r.stdout)
    }

    it('shows the lock a withLock holds, as the CLI does, and nothing once it is released', async () => {
      await t.withLock({ names: ['watched/x'] }, async () => {
        const mine = await t.lockStatus(opts)
        assert.equal(mine.backend, backend)
        assert.equal(mine.locks.length, 1, JSON.stringify(mine))
        const [held] = mine.locks
        assert.equal(held.name, 'watched/x')
        assert.equal(held.pid, process.pid)
        assert.equal(held.stale, false)
        assert.deepEqual(timeless(mine), timeless(cliStatus()))
      }, opts)
      const after = await t.lockStatus(opts)
      assert.deepEqual(after.locks, [])
      assert.deepEqual(after, cliStatus())
    })
  })
}
