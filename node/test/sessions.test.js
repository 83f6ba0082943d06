'use strict'
// Sessions from Node, on each backend: the `session` option and TRACTATUS_SESSION_ID address a
// session's own copy of a per-session file (the shared file stays as it was), statePath says
// where it is, sessionStart registers a session from a hook payload, and the CLI sees it all.

const { describe, it } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const t = require('..')
const { childEnv, cliPath, runTogether, BARRIER, run, PKG, withBackend } = require('./helpers')

const STATE = '.claude/session-state.json'

for (const backend of ['redis', 'local']) {
  describe(`sessions (${backend})`, () => {
    let redis
    let repo
    let opts
    let shared
    withBackend(backend, (r, p) => {
      redis = r
      repo = p
      fs.writeFileSync(repo.file('.claude/tractatus-lock.toml'),
        `namespace = "node-sessions"\nper_session = ["${STATE}"]\n`)
      shared = JSON.stringify({ message_count: 0, token_estimate: 1000, note: 'shared ✓' }, null, 2)
      fs.writeFileSync(repo.file(STATE), shared)
      opts = { cwd: repo.root, quiet: true, ...(redis ? { redis: redis.url } : {}) }
      // A brand-new server: marked, so that its first grants skip the restart quarantine.
      if (redis) assert.equal(cli(['lock', 'init']).status, 0)
    })
    const cli = (args, env = {}) => run(cliPath(), args, { cwd: repo.root, env: childEnv(redis?.url, { TRACTATUS_QUIET: '1', ...env }) })

    it('two sessions count apart, in this process and in hooks of their own, and the CLI totals them', async () => {
      // Only a start registers a session; the writes then keep it live.
      for (const s of ['node-a', 'node-b']) assert.equal(cli(['session', 'start', '--id', s]).status, 0)
      const bump = (session) => t.updateJson(STATE, (d) => { d.message_count++ }, { ...opts, session })
      // In this process: 10 increments per session, all at once.
      await Promise.all(['node-a', 'node-b'].flatMap((s) => Array.from({ length: 10 }, () => bump(s))))
      // Hooks of their own (fresh processes), the session from TRACTATUS_SESSION_ID: 2 per session.
      const script = `${BARRIER}
        const t = require(${JSON.stringify(PKG)})
        waitGo().then(() => t.updateJson(${JSON.stringify(STATE)}, (d) => { d.message_count++ }, { quiet: true }))
          .then(() => process.exit(0), (e) => { console.error(e.message); process.exit(1) })`
      for (const session of ['node-a', 'node-b']) {
        const results = await runTogether(2, script, { cwd: repo.root, env: childEnv(redis?.url, { TRACTATUS_SESSION_ID: session }) })
        for (const r of results) assert.equal(r.code, 0, r.stderr)
      }
      for (const session of ['node-a', 'node-b']) {
        const own = await t.statePath(STATE, { ...opts, session })
        assert.equal(own, path.join(repo.root, '.claude/sessions', session, 'session-state.json'))
        const doc = JSON.parse(fs.readFileSync(own, 'utf8'))
        assert.deepEqual(doc, { message_count: 12, token_estimate: 1000, note: 'shared ✓' })
        assert.equal(await t.readJson(STATE, '/message_count', { ...opts, session }), 12)
        // The CLI, in the same session, finds the same file.
        const where = cli(['state', 'path', STATE], { TRACTATUS_SESSION_ID: session })
        assert.equal(where.stdout.trim(), own)
      }
      // withLock on the file locks the session's copy, and a write inside joins that lease.
      const names = await t.withLock({ files: STATE }, async (lease) => {
        const r = await t.updateJson(STATE, (d) => { d.message_count += 0 }, { ...opts, session: 'node-a' })
        assert.equal(r.token, lease.tokens['.claude/sessions/node-a/session-state.json'])
        return Object.keys(lease.tokens)
      }, { ...opts, session: 'node-a' })
      assert.deepEqual(names, ['.claude/sessions/node-a/session-state.json'])
      assert.equal(fs.readFileSync(repo.file(STATE), 'utf8'), shared)
      assert.equal(await t.statePath(STATE, opts), repo.file(STATE))
      assert.equal(await t.readJson(STATE, '/message_count', opts), 0)
      // Both sessions, started above, are live.
      const stats = cli(['--json', 'session', 'stats', '/message_count'])
      assert.equal(stats.status, 0, stats.stderr)
      const totals = JSON.parse(stats.stdout)
      assert.equal(totals.live, 2)
      assert.deepEqual(totals.fields['/message_count'], { sum: 24, max: 12, sessions: 2 })
    })

    it('sessionStart takes the id from a hook payload and the registry lists it live', async () => {
      const payload = '{ "session_id" : "hook-sess-1", "hook_event_name": "SessionStart", "cwd": "/ü" }'
      assert.equal(await t.sessionStart(payload, opts), 'hook-sess-1')
      const fresh = await t.sessionStart(undefined, opts)
      assert.match(fresh, /^[0-9a-f-]{36}$/)
      const listed = cli(['--json', 'session', 'list'])
      assert.equal(listed.status, 0, listed.stderr)
      const live = JSON.parse(listed.stdout).sessions.filter((s) => s.state === 'live').map((s) => s.id)
      assert.ok(live.includes('hook-sess-1') && live.includes(fresh), live.join(' '))
    })

    it('a session id that cannot name a directory is refused, for any file', async () => {
      for (const bad of ['../evil', 'a/b', '.x']) {
        await assert.rejects(t.updateJson(STATE, (d) => { d.x = 1 }, { ...opts, session: bad }),
          (e) => e.code === 'USAGE' && e.exitCode === 64 && /bad session id/.test(e.message))
        await assert.rejects(t.statePath(STATE, { ...opts, session: bad }), (e) => e.code === 'USAGE')
        await assert.rejects(t.sessionStart({ session_id: bad }, opts), (e) => e.code === 'USAGE')
      }
      assert.equal(fs.readFileSync(repo.file(STATE), 'utf8'), shared)
      // Refused where it enters (issue 18): the id is recorded with the lease and shown to others.
      await assert.rejects(t.setJson('.claude/other.json', '/n', 1, { ...opts, session: 'a/b' }),
        (e) => e.code === 'USAGE' && e.exitCode === 64 && /the session option: bad session id/.test(e.message))
    })
  })
}
