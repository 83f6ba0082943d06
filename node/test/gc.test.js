'use strict'
// A write from Node whose session copy `session gc` collected while the write waited for the
// copy's lock (issue 19 item 5): the write had opened the copy's directory, which gc then moved
// to a tombstone and removed. It said CANNOT_WRITE (73, "run the write again"); now it runs once
// more by itself, as the CLI's `state` does: the copy is seeded afresh from the shared file (as
// after any cleanup) and the write lands in it. appendJson, setJson and updateJson alike.

const { describe, it } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { spawn, spawnSync } = require('node:child_process')
const t = require('..')
const { childEnv, cliPath, run, withBackend, initServer } = require('./helpers')

const STATE = '.claude/session-state.json'
const COPY = '.claude/sessions/s1/session-state.json'
const NAMESPACE = 'node-gc'

async function until (what, check, ms = 10_000) {
  const deadline = Date.now() + ms
  for (;;) {
    if (check()) return
    if (Date.now() > deadline) assert.fail(`${what} within ${ms} ms`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

describe('a write whose session copy gc collected while it waited (redis)', () => {
  let redis
  let repo
  let opts
  withBackend('redis', (r, p) => {
    redis = r
    repo = p
    fs.writeFileSync(repo.file('.claude/tractatus-lock.toml'),
      `namespace = "${NAMESPACE}"\nper_session = ["${STATE}"]\n`)
    fs.writeFileSync(repo.file(STATE), '{"log": []}\n')
    opts = { cwd: repo.root, redis: [redis.url], wait: '20s', quiet: true, session: 's1' }
    initServer(redis, repo)
  })

  const waiters = () => {
    const key = `tractatus:{${NAMESPACE}:${COPY}}:waiters`
    const r = spawnSync('redis-cli', ['-p', String(redis.port), 'ZCARD', key], { encoding: 'utf8' })
    return Number(r.stdout.trim())
  }

  const writes = [
    ['appendJson', () => t.appendJson(STATE, '/log', 2, opts), { log: [2] }],
    ['setJson', () => t.setJson(STATE, '/log', [9], opts), { log: [9] }],
    ['updateJson', () => t.updateJson(STATE, (d) => { d.log.push(3) }, opts), { log: [3] }],
  ]
  for (const [name, write, expected] of writes) {
    it(`${name} runs once more and lands in a fresh copy`, async () => {
      await t.appendJson(STATE, '/log', 1, opts)
      const [ready, go] = [repo.file(`ready-${name}`), repo.file(`go-${name}`)]
      const holder = spawn(cliPath(), ['lock', 'run', '--name', COPY, '--', 'sh', '-c',
        'touch "$1"; i=0; while [ ! -e "$2" ] && [ $i -lt 1000 ]; do sleep 0.02; i=$((i+1)); done',
        'sh', ready, go], { cwd: repo.root, env: childEnv(redis.url, { TRACTATUS_QUIET: '1' }), stdio: 'ignore' })
      const exited = new Promise((resolve) => holder.once('exit', resolve))
      try {
        await until('the copy\'s lock is held', () => fs.existsSync(ready))
        const pending = write().then((r) => ({ r }), (e) => ({ e }))
        await until('the write waits for the lock', () => waiters() === 1)
        // What gc does to a silent session: its directory to a tombstone, then removed.
        const sessions = repo.file('.claude/sessions')
        fs.renameSync(`${sessions}/s1`, `${sessions}/.gc-s1-1`)
        fs.rmSync(`${sessions}/.gc-s1-1`, { recursive: true })
        fs.writeFileSync(go, '')
        const { e } = await pending
        assert.equal(e, undefined, e && `${e.code}: ${e.message}`)
        assert.deepEqual(JSON.parse(fs.readFileSync(repo.file(COPY), 'utf8')), expected)
      } finally {
        fs.writeFileSync(go, '')
        assert.equal(await exited, 0)
      }
    })
  }
})
