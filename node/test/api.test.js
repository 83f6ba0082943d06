'use strict'
// The promise API in this process, on each backend: layout, errors, retries, locks.

const { describe, it } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const t = require('..')
const { childEnv, cliPath, run, withBackend } = require('./helpers')

for (const backend of ['redis', 'local']) {
  describe(`api (${backend})`, () => {
    let redis
    let repo
    let opts
    withBackend(backend, (r, p) => {
      redis = r
      repo = p
      opts = { cwd: repo.root, quiet: true, ...(redis ? { redis: redis.url } : {}) }
    })
    const cli = (...args) => run(cliPath(), args, { cwd: repo.root, env: childEnv(redis?.url) })

    it('updateJson mutates or replaces, sync or async, and reports the outcome', async () => {
      const f = repo.file('.claude/counter.json')
      const r1 = await t.updateJson(f, (d) => { d.n = 1 }, { ...opts, initial: {} })
      assert.equal(r1.committed, true)
      assert.equal(r1.unchanged, false)
      assert.equal(typeof r1.token, 'number')
      const r2 = await t.updateJson(f, async (d) => ({ ...d, n: d.n + 1 }), opts)
      assert.ok(r2.token > r1.token)
      const r3 = await t.updateJson(f, () => {}, opts)
      assert.deepEqual([r3.committed, r3.unchanged], [false, true])
      assert.deepEqual(await t.readJson(f, opts), { n: 2 })
      const none = await t.updateJson(repo.file('.claude/absent.json'), () => undefined, opts)
      assert.equal(none.committed, false)
      assert.equal(fs.existsSync(repo.file('.claude/absent.json')), false)
    })

    it("writes Node's JSON.stringify(doc, null, 2) layout, byte for byte like the CLI", async () => {
      const doc = { b: 1, 2: 'x', 1: [1, { k: null }], s: 'q"\\\n\u0001é', f: 1.5, e: 1e21, t: 1e-7, o: {}, a: [] }
      const viaNode = repo.file('.claude/layout-node.json')
      const viaCli = repo.file('.claude/layout-cli.json')
      await t.setJson(viaNode, '', doc, opts)
      assert.equal(cli('state', 'set', viaCli, '', JSON.stringify(doc)).status, 0)
      assert.equal(fs.readFileSync(viaNode, 'utf8'), JSON.stringify(doc, null, 2))
      assert.equal(fs.readFileSync(viaNode, 'utf8'), fs.readFileSync(viaCli, 'utf8'))
      // updateJson writes the same bytes.
      const viaUpdate = repo.file('.claude/layout-update.json')
      await t.updateJson(viaUpdate, () => doc, opts)
      assert.equal(fs.readFileSync(viaUpdate, 'utf8'), fs.readFileSync(viaCli, 'utf8'))
      // Except integers beyond a double's precision: JSON.parse rounds them, the CLI keeps them.
      const big = '{"big": 12345678901234567890, "ok": 123456789012345}'
      fs.writeFileSync(viaUpdate, big)
      assert.equal(cli('state', 'set', viaCli, '', big).status, 0)
      await t.updateJson(viaUpdate, () => {}, opts)
      assert.equal(fs.readFileSync(viaUpdate, 'utf8'), '{\n  "big": 12345678901234567000,\n  "ok": 123456789012345\n}')
      assert.equal(fs.readFileSync(viaCli, 'utf8'), '{\n  "big": 12345678901234567890,\n  "ok": 123456789012345\n}')
      // A final newline is kept when the file had one.
      fs.writeFileSync(viaNode, JSON.stringify({ n: 1 }, null, 2) + '\n')
      await t.updateJson(viaNode, (d) => { d.n = 2 }, opts)
      assert.equal(fs.readFileSync(viaNode, 'utf8'), JSON.stringify({ n: 2 }, null, 2) + '\n')
    })

    it('an fn that throws leaves the file byte-identical, and its error propagates', async () => {
      const f = repo.file('.claude/keep.json')
      const original = '{"z":1,   "a":[1,2],"odd":  true}'
      fs.writeFileSync(f, original)
      const boom = new Error('boom')
      await assert.rejects(t.updateJson(f, (d) => { d.z = 99; throw boom }, opts), (e) => e === boom)
      await assert.rejects(t.updateJson(f, async (d) => { d.z = 98; await null; throw boom }, opts), (e) => e === boom)
      assert.equal(fs.readFileSync(f, 'utf8'), original)
      // The lease was released: taking it again does not wait.
      await t.updateJson(f, () => {}, { ...opts, wait: 0 })
    })

    it('malformed data is BAD_DATA (65) and leaves the file untouched', async () => {
      const f = repo.file('.claude/bad.json')
      fs.writeFileSync(f, '{"n": 1,')
      const err = await t.updateJson(f, (d) => d, opts).catch((e) => e)
      assert.ok(err instanceof t.TractatusLockError)
      assert.deepEqual([err.code, err.exitCode], ['BAD_DATA', 65])
      assert.ok(!err.message.includes('\n'), err.message)
      assert.equal(fs.readFileSync(f, 'utf8'), '{"n": 1,')
      const r = await t.readJson(f, opts).catch((e) => e)
      assert.equal(r.code, 'BAD_DATA')
    })

    it('appendJson keeps the last N entries; setJson, mergeJson and readJson as the CLI', async () => {
      const f = repo.file('.claude/ring.json')
      await t.setJson(f, '', { ring: [], totals: { n: 0 } }, opts)
      for (let i = 0; i < 5; i++) await t.appendJson(f, '/ring', { i }, { ...opts, keep: 3 })
      assert.deepEqual(await t.readJson(f, '/ring', opts), [{ i: 2 }, { i: 3 }, { i: 4 }])
      await t.setJson(f, '/totals/n', 7, opts)
      await t.mergeJson(f, { totals: { m: 1 }, ring: null }, opts)
      assert.deepEqual(await t.readJson(f, opts), { totals: { n: 7, m: 1 } })
      assert.equal(await t.readJson(f, '/missing', opts), undefined)
      assert.equal(await t.readJson(repo.file('.claude/nope.json'), opts), undefined)
      const e1 = await t.mergeJson(f, [1], opts).catch((e) => e)
      assert.deepEqual([e1.code, e1.exitCode], ['USAGE', 64])
      const e2 = await t.appendJson(f, '/totals', 1, opts).catch((e) => e)
      assert.deepEqual([e2.code, e2.exitCode], ['BAD_DATA', 65])
      const e3 = await t.readJson(f, 'no-slash', opts).catch((e) => e)
      assert.equal(e3.code, 'USAGE')
      const e4 = await t.setJson('/etc/outside.json', '', 1, opts).catch((e) => e)
      assert.equal(e4.code, 'USAGE')
    })

    it('a file changed under the lease by a lockless writer makes fn run once more', async () => {
      const f = repo.file('.claude/conflict.json')
      fs.writeFileSync(f, JSON.stringify({ n: 0, other: 0 }))
      let calls = 0
      await t.updateJson(f, (d) => {
        calls++
        // A writer that takes no lock commits while fn runs, the first time only.
        if (calls === 1) fs.writeFileSync(f, JSON.stringify({ n: 0, other: 1 }))
        d.n++
      }, opts)
      assert.equal(calls, 2)
      assert.deepEqual(await t.readJson(f, opts), { n: 1, other: 1 })
    })

    it('a file that changes under the lease twice in a row is LEASE_LOST, with the other write kept', async () => {
      const f = repo.file('.claude/conflict2.json')
      fs.writeFileSync(f, JSON.stringify({ other: 0 }))
      let calls = 0
      const err = await t.updateJson(f, (d) => {
        calls++
        fs.writeFileSync(f, JSON.stringify({ other: calls }))
        d.mine = true
      }, opts).catch((e) => e)
      assert.equal(calls, 2)
      assert.deepEqual([err.code, err.exitCode, err.reason], ['LEASE_LOST', 76, 'conflict'])
      assert.equal(fs.readFileSync(f, 'utf8'), JSON.stringify({ other: 2 }))
    })

    it('concurrent updates from one process take turns', async () => {
      const f = repo.file('.claude/same-process.json')
      await t.setJson(f, '', { n: 0 }, opts)
      await Promise.all(Array.from({ length: 10 }, () => t.updateJson(f, async (d) => { await null; d.n++ }, opts)))
      assert.equal((await t.readJson(f, opts)).n, 10)
    })

    it('withLock gives tokens and a live signal, releases afterwards, and HELD when taken', async () => {
      const f = repo.file('.claude/locked.json')
      let openGate
      const gate = new Promise((resolve) => { openGate = resolve })
      // Started outside withLock's async context: it does not join, it finds the lock taken.
      const outside = gate.then(() => t.updateJson(f, () => ({}), { ...opts, wait: 0 }).catch((e) => e))
      const out = await t.withLock({ names: ['jobs/a'], files: [f] }, async (lease) => {
        assert.deepEqual(Object.keys(lease.tokens).sort(), ['.claude/locked.json', 'jobs/a'])
        assert.equal(lease.signal.aborted, false)
        openGate()
        const held = await outside
        assert.deepEqual([held.code, held.exitCode], ['HELD', 75])
        return 'done'
      }, opts)
      assert.equal(out, 'done')
      await t.withLock({ files: [f] }, async () => {}, { ...opts, wait: 0 })
      const boom = new Error('inner')
      await assert.rejects(t.withLock({ names: ['jobs/a'] }, () => { throw boom }, opts), (e) => e === boom)
      const e = await t.withLock({}, async () => {}, opts).catch((x) => x)
      assert.equal(e.code, 'USAGE')
    })

    it('inside withLock, calls on a held file join its lease at once; others still take turns', async () => {
      const f = repo.file('.claude/joined.json')
      const other = repo.file('.claude/not-held.json')
      fs.writeFileSync(f, JSON.stringify({ n: 0, ring: [] }, null, 2) + '\n')
      const order = []
      let openGate
      const gate = new Promise((resolve) => { openGate = resolve })
      // Started outside withLock's async context (waiting as long as it must): it takes its turn.
      const outside = gate.then(() => t.updateJson(f, (d) => { order.push('outside'); d.outside = true }, opts))
      let afterLock
      const lockEnded = new Promise((resolve) => { afterLock = resolve })
      let late
      let unfinished
      const token = await t.withLock({ names: ['jobs/j'], files: [f] }, async (lease) => {
        const mine = lease.tokens['.claude/joined.json']
        openGate()
        // wait: 0 everywhere: a call that waited for the lock would fail HELD.
        const now = { ...opts, wait: 0 }
        const r = await t.updateJson(f, (d, { token: seen }) => {
          order.push('inside')
          assert.equal(seen, mine)
          d.n++
        }, now)
        assert.deepEqual([r.committed, r.token], [true, mine])
        assert.equal((await t.appendJson(f, '/ring', 1, { ...now, keep: 1 })).token, mine)
        assert.equal((await t.setJson(f, '/s', 's', now)).token, mine)
        assert.equal((await t.mergeJson(f, { m: 1 }, now)).token, mine)
        // Nested async work keeps the scope; a file whose lock is not held is locked as usual.
        await Promise.all([
          (async () => { await null; await t.updateJson(f, (d) => { d.n++ }, now) })(),
          t.updateJson(other, () => ({ own: true }), { ...now, initial: {} }),
        ])
        assert.deepEqual(order, ['inside'])
        // Scheduled from the scope but run after it: it takes its own lease.
        late = lockEnded.then(() => t.updateJson(f, (d) => { d.late = true }, opts)).catch((e) => e)
        // Joined, and not committed when withLock returns: it can no longer commit.
        unfinished = t.updateJson(f, async (d) => { await lockEnded; d.unfinished = true }, now)
          .catch((e) => e)
        return mine
      }, opts)
      afterLock()
      const lost = await unfinished
      assert.deepEqual([lost.code, lost.exitCode], ['LEASE_LOST', 76], lost.message)
      // Nothing of it landed (the call outside may have committed meanwhile: it was waiting).
      assert.equal(JSON.parse(fs.readFileSync(f, 'utf8')).unfinished, undefined)
      const afterwards = await late
      assert.ok(afterwards.committed && afterwards.token > token, JSON.stringify(afterwards))
      const o = await outside
      assert.ok(o.token > token)
      assert.deepEqual(order, ['inside', 'outside'])
      const doc = await t.readJson(f, opts)
      assert.deepEqual(doc, { n: 2, ring: [1], s: 's', m: 1, outside: true, late: true })
      assert.ok(fs.readFileSync(f, 'utf8').endsWith('}\n'))
    })

    it('the session comes from an option, TRACTATUS_SESSION_ID or the hook payload', async () => {
      const session = t.sessionFromHookInput('{"session_id":"abc-123","hook_event_name":"PostToolUse"}')
      assert.equal(session, 'abc-123')
      assert.equal(t.sessionFromHookInput({ session_id: 'x' }), 'x')
      assert.equal(t.sessionFromHookInput(Buffer.from('{"session_id":"y"}')), 'y')
      assert.throws(() => t.sessionFromHookInput('{}'), (e) => e.code === 'BAD_DATA')
      await t.withLock({ names: ['who'] }, async () => {
        const status = cli('--json', 'lock', 'status')
        assert.equal(status.status, 0, status.stderr)
        const lock = JSON.parse(status.stdout).locks.find((l) => l.name === 'who')
        assert.equal(lock.session, 'abc-123')
      }, { ...opts, session })
    })
  })
}
