'use strict'
// opts.signal (issue 19, item 8): an AbortSignal gives up a wait for the lock. The call rejects
// promptly with ABORTED, and leaves neither a place in line nor a lease behind; an already
// aborted signal rejects before anything is tried. With real redis-servers and local locks,
// the holder in another process.

const { describe, it } = require('node:test')
const assert = require('node:assert/strict')
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const { PKG, childEnv, withBackend, initServer } = require('./helpers')

// A holder in another process: takes `file`'s lease, prints "in fn", and keeps it until a line
// arrives on its stdin.
function startHolder(file, { cwd, env }) {
  const child = spawn(process.execPath, ['-e', `
    const t = require(${JSON.stringify(PKG)})
    t.updateJson(process.argv[1], async (d) => {
      process.stdout.write('in fn\\n')
      await new Promise((r) => process.stdin.once('data', r))
      d.by = 'holder'
    }, { quiet: true, initial: {} }).then(() => console.log('committed'), (e) => { console.log('error', e.code); process.exit(1) })
  `, file], { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] })
  const rec = { child, stdout: '', stderr: '' }
  child.stdout.on('data', (d) => { rec.stdout += d })
  child.stderr.on('data', (d) => { rec.stderr += d })
  rec.exit = new Promise((resolve) => child.once('close', (code) => resolve(code)))
  rec.inFn = new Promise((resolve, reject) => {
    child.stdout.on('data', () => { if (rec.stdout.includes('in fn\n')) resolve() })
    rec.exit.then(() => reject(new Error(`holder exited early: ${rec.stderr}`)))
  })
  rec.finish = async () => {
    child.stdin.end('go\n')
    return rec.exit
  }
  return rec
}

// Abort `call(signal)` 200 ms after it started; resolves with the error and how long after the
// abort it came.
async function abortAfter200(call) {
  const ac = new AbortController()
  let abortedAt = 0
  const timer = setTimeout(() => { abortedAt = Date.now(); ac.abort(new Error('the caller gave up')) }, 200)
  try {
    await call(ac.signal)
  } catch (e) {
    return { error: e, late: Date.now() - abortedAt, aborted: abortedAt !== 0 }
  } finally {
    clearTimeout(timer)
  }
  assert.fail('the call resolved instead of being aborted')
}

function assertAborted({ error, late, aborted }) {
  assert.ok(aborted, `rejected before the abort: ${error && error.stack}`)
  assert.equal(error.code, 'ABORTED', error.stack)
  assert.equal(error.exitCode, 75)
  assert.equal(error.name, 'TractatusLockError')
  assert.equal(error.cause && error.cause.message, 'the caller gave up')
  // Promptly: the wait is dropped at once (slack for a loaded test machine).
  assert.ok(late < 150, `rejected ${late} ms after the abort`)
}

function lockKeys(port) {
  const r = spawnSync('redis-cli', ['-p', String(port), '--scan'], { encoding: 'utf8' })
  return r.stdout.split('\n').filter((k) => k.includes('tractatus')).sort()
}

async function until(what, check, ms = 1000) {
  const deadline = Date.now() + ms
  for (;;) {
    if (check()) return
    if (Date.now() > deadline) assert.fail(`${what} within ${ms} ms`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

const t = require('..')

for (const backend of ['redis', 'local']) {
  describe(`abort a wait (${backend})`, () => {
    let redis = null
    let repo
    let opts
    withBackend(backend, (r, p) => {
      redis = r
      repo = p
      opts = { cwd: repo.root, redis: redis ? [redis.url] : undefined, wait: '20s', quiet: true }
      if (redis) initServer(redis, repo)
    })

    it('an aborted wait rejects with ABORTED promptly, and once the holder lets go the lock is free at once', async () => {
      const f = repo.file('.claude/aborted.json')
      const holder = startHolder(f, { cwd: repo.root, env: childEnv(redis && redis.url) })
      try {
        await holder.inFn
        const before = redis ? lockKeys(redis.port) : []
        assertAborted(await abortAfter200((signal) => t.updateJson(f, (d) => { d.by = 'aborted' }, { ...opts, signal })))
        assertAborted(await abortAfter200((signal) => t.setJson(f, '/by', 'aborted', { ...opts, signal })))
        assertAborted(await abortAfter200((signal) => t.withLock({ files: f }, () => 'ran', { ...opts, signal })))
        if (redis) {
          // No place in line is left: the lock's keys are the holder's alone again.
          // (A place merely abandoned would lapse only after 800 ms, the waiter TTL.)
          await until('the aborted waiters left the line', () => JSON.stringify(lockKeys(redis.port)) === JSON.stringify(before), 200)
        }
      } finally {
        assert.equal(await holder.finish(), 0, holder.stderr)
      }
      // Nothing was written by the aborted calls, and nobody holds the lock now: a call that
      // does not wait gets it.
      assert.equal(JSON.parse(fs.readFileSync(f, 'utf8')).by, 'holder')
      // (Local locks: the aborted waits' parked flock threads take and drop it once each as it
      // is let go, so a short wait rather than none.)
      const started = Date.now()
      const r = await t.updateJson(f, (d) => { d.by = 'next' }, { ...opts, wait: redis ? 0 : '2s' })
      assert.equal(r.committed, true)
      assert.ok(Date.now() - started < 1000)
    })

    it('an already aborted signal rejects at once, before anything is tried', async () => {
      const f = repo.file('.claude/pre-aborted.json')
      const signal = AbortSignal.abort(new Error('the caller gave up'))
      for (const call of [
        () => t.updateJson(f, () => ({ by: 'x' }), { ...opts, signal }),
        () => t.appendJson(f, '/a', 1, { ...opts, signal }),
        () => t.mergeJson(f, { by: 'x' }, { ...opts, signal }),
        () => t.withLock({ files: f }, () => 'ran', { ...opts, signal }),
      ]) {
        const started = Date.now()
        await assert.rejects(call, (e) => e.code === 'ABORTED' && e.cause.message === 'the caller gave up')
        assert.ok(Date.now() - started < 50)
      }
      assert.equal(fs.existsSync(f), false)
      await assert.rejects(t.updateJson(f, () => ({}), { ...opts, signal: 'soon' }), (e) => e.code === 'USAGE')
    })

    it('a signal that never fires changes nothing, and one that fires after the grant aborts nothing', async () => {
      const f = repo.file('.claude/unaborted.json')
      const ac = new AbortController()
      const r = await t.updateJson(f, (d) => { d.n = 1 }, { ...opts, initial: {}, signal: ac.signal })
      assert.equal(r.committed, true)
      // Once held, the update runs to its end whatever the signal does.
      const r2 = await t.updateJson(f, (d) => { ac.abort(); d.n = 2 }, { ...opts, signal: ac.signal })
      assert.equal(r2.committed, true)
      assert.equal(JSON.parse(fs.readFileSync(f, 'utf8')).n, 2)
    })
  })
}
