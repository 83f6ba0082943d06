'use strict'
// A lease's end and the event loop (issue 19, item 8): a release during a commit in flight
// waits for it and really releases; a lease collected by the garbage collector without a
// release is released then, not at its TTL; reads and statePath return Promises and leave the
// event loop free.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { PKG, tempRepo, childEnv, run, startChild, withBackend, initServer } = require('./helpers')

// The addon itself, for its handles (index.js keeps them inside updateJson).
function native() {
  const file = fs.readdirSync(PKG).find((f) => /^tractatus-lock\..*\.node$/.test(f))
  return require(path.join(PKG, file))
}

// Another process takes `file`'s lease with no wait at all (`wait: 0`), and says how it went.
async function takeAtOnce(file, { cwd, env, wait = 0 }) {
  const other = startChild(`
    const t = require(${JSON.stringify(PKG)})
    const started = Date.now()
    t.updateJson(process.argv[1], (d) => { d.by = 'other' }, { quiet: true, wait: ${JSON.stringify(wait)}, initial: {} })
      .then(() => console.log('committed', Date.now() - started), (e) => console.log('error', e.code, e.message))
  `, { cwd, env, args: [file] })
  await other.exit
  return other.stdout.trim()
}

describe('lease lifecycle (redis)', () => {
  let redis
  let repo
  withBackend('redis', (r, p) => {
    redis = r
    repo = p
    initServer(redis, repo)
  })

  it('release() during a commit in flight waits for the commit and releases: another process takes the lock with no wait', async () => {
    const f = repo.file('.claude/inflight.json')
    const opts = { cwd: repo.root, redis: [redis.url], ttl: '10s', wait: '5s' }
    const pending = await native().begin(f, opts)
    // Not awaited: the release is called while the commit (fsyncs) is still in flight.
    const committing = pending.commit('{"by":"first"}\n')
    const releasing = pending.release()
    const [outcome] = await Promise.all([committing, releasing])
    assert.equal(outcome.committed, true)
    assert.equal(JSON.parse(fs.readFileSync(f, 'utf8')).by, 'first')
    // The lease is gone the moment release() resolved: a no-wait acquire elsewhere succeeds.
    const got = await takeAtOnce(f, { cwd: repo.root, env: childEnv(redis.url) })
    assert.match(got, /^committed/, got)
    assert.equal(JSON.parse(fs.readFileSync(f, 'utf8')).by, 'other')
    // The handle is spent: a commit after the release is refused, not run.
    await assert.rejects(async () => pending.commit('{}'), /already released/)
  })

  it('a commit or reload while another is in flight is refused at once, and document() says why', async () => {
    const f = repo.file('.claude/busy.json')
    const pending = await native().begin(f, { cwd: repo.root, redis: [redis.url] })
    const committing = pending.commit('{"n":1}')
    assert.throws(() => pending.commit('{"n":2}'), /still in flight/)
    assert.throws(() => pending.reload(), /still in flight/)
    assert.throws(() => pending.document(), /still in flight/)
    await committing
    await pending.reload()
    assert.equal(pending.document(), '{"n":1}')
    await pending.release()
  })

  it('a lease collected by the garbage collector without release() is released: another process gets the lock well before the TTL', async () => {
    const f = repo.file('.claude/collected.json')
    const env = childEnv(redis.url, { TRACTATUS_TTL: '9s' })
    // The holder takes the lease, drops its handle unreleased, and runs the collector until
    // the handle is gone; then it stays alive (a live holder is never taken over).
    const holder = startChild(`
      const fs = require('node:fs')
      const path = require('node:path')
      const pkg = ${JSON.stringify(PKG)}
      const native = require(path.join(pkg, fs.readdirSync(pkg).find((f) => /^tractatus-lock\\..*\\.node$/.test(f))))
      let gone = false
      const collected = new FinalizationRegistry(() => { gone = true; process.stdout.write('collected\\n') })
      ;(async () => {
        await (async () => {
          const pending = await native.begin(process.argv[1], {})
          collected.register(pending, 'pending')
          process.stdout.write('held\\n')
        })()
        for (let i = 0; i < 100 && !gone; i++) {
          global.gc()
          await new Promise((r) => setTimeout(r, 20))
        }
        // Once more: the addon's finalizer may run a collection after JavaScript's.
        global.gc()
        process.stdin.on('data', () => process.exit(0))
      })()
    `, { cwd: repo.root, env, args: [f], flags: ['--expose-gc'] })
    try {
      await holder.line('held\n')
      await holder.line('collected\n')
      const started = Date.now()
      const got = await takeAtOnce(f, { cwd: repo.root, env, wait: '15s' })
      const waited = Date.now() - started
      assert.match(got, /^committed/, got)
      // The TTL is 9 s; a released lock is free at once (the child's own start is most of it).
      assert.ok(waited < 4000, `took ${waited} ms`)
    } finally {
      holder.child.stdin.end('x\n')
      await holder.exit
    }
  })
})

describe('reads off the event loop (local locks)', () => {
  let repo
  before(() => { repo = tempRepo() })
  after(() => repo.cleanup())

  it('readJson, statePath and reload return Promises, and timers keep firing while a large file is read', async () => {
    const t = require('..')
    const f = repo.file('.claude/big.json')
    // About 30 MB, with a small value to ask for: the addon parses it all, JavaScript gets little.
    const rows = Array.from({ length: 300_000 }, (_, i) => ({ id: i, text: 'x'.repeat(80) }))
    fs.writeFileSync(f, JSON.stringify({ small: 42, rows }))
    const opts = { cwd: repo.root }
    const sp = t.statePath('.claude/big.json', opts)
    assert.ok(sp instanceof Promise)
    assert.equal(await sp, f)

    let ticks = 0
    const timer = setInterval(() => { ticks++ }, 5)
    const started = Date.now()
    const reading = t.readJson('.claude/big.json', '/small', opts)
    assert.ok(reading instanceof Promise)
    const value = await reading
    const took = Date.now() - started
    clearInterval(timer)
    assert.equal(value, 42)
    // A read that blocked the loop would let no tick run before it resolved.
    assert.ok(ticks >= 2, `${ticks} ticks during a ${took} ms read`)

    const pending = await native().begin(f, opts)
    const reloading = pending.reload()
    assert.ok(reloading instanceof Promise)
    await reloading
    await pending.release()
  })
})
