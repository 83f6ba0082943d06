'use strict'
// Shared by the tests: real redis-servers on free loopback ports, temporary repositories,
// child node processes started together behind a barrier or one at a time, and the CLI binary.

const { spawn, spawnSync } = require('node:child_process')
const assert = require('node:assert/strict')
const { before, after } = require('node:test')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const PKG = path.resolve(__dirname, '..')

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

function ping(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1')
    let got = ''
    sock.once('connect', () => sock.write('PING\r\n'))
    sock.on('data', (d) => {
      got += d
      if (got.includes('\r\n')) {
        sock.destroy()
        resolve(got.startsWith('+PONG'))
      }
    })
    sock.once('error', () => resolve(false))
  })
}

/** A redis-server of its own on a free loopback port; `stop()` kills it by pid. */
async function startRedis() {
  const port = await freePort()
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  })
  const exited = new Promise((resolve) => proc.once('exit', resolve))
  const deadline = Date.now() + 10_000
  // Await PING: the server answers once it is ready.
  while (!(await ping(port))) {
    if (Date.now() > deadline || proc.exitCode !== null) {
      process.kill(proc.pid, 'SIGKILL')
      throw new Error(`redis-server on port ${port} did not answer PING`)
    }
    await new Promise((r) => setTimeout(r, 20))
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid: proc.pid,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid, 'SIGKILL')
      await exited
    },
  }
}

/** A fresh repository (a directory with `.claude/`), removed by `cleanup()`. */
function tempRepo() {
  const root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'tl-node-')))
  fs.mkdirSync(path.join(root, '.claude'))
  return {
    root,
    file: (rel) => path.join(root, rel),
    cleanup: () => fs.rmSync(root, { recursive: true, force: true }),
  }
}

/**
 * The setup most suites share, as their `before`/`after` hooks: before, a redis-server of its
 * own when `backend` is 'redis' (none for 'local') and a fresh repository, handed to
 * `use(redis, repo)` (redis undefined on local locks), which may set up more; after, both gone.
 */
function withBackend(backend, use) {
  let redis
  let repo
  before(async () => {
    if (backend === 'redis') redis = await startRedis()
    repo = tempRepo()
    await use(redis, repo)
  })
  after(async () => {
    if (repo) repo.cleanup()
    if (redis) await redis.stop()
  })
}

/** `tractatus lock init` in `repo` on a brand-new `redis`, so its first grants skip the restart quarantine. */
function initServer(redis, repo) {
  assert.equal(run(cliPath(), ['lock', 'init'], { cwd: repo.root, env: childEnv(redis.url) }).status, 0)
}

/** The environment for a child: the backend chosen by `redisUrl` (none: local locks). */
function childEnv(redisUrl, extra = {}) {
  const env = { ...process.env, ...extra }
  for (const k of Object.keys(env)) {
    if (k.startsWith('TRACTATUS_') && !(k in extra)) delete env[k]
  }
  if (redisUrl) env.TRACTATUS_REDIS = redisUrl
  return env
}

/** The `tractatus` CLI built from this repository (TRACTATUS_BIN overrides). */
function cliPath() {
  const target = process.env.CARGO_TARGET_DIR
    ? path.resolve(PKG, '..', process.env.CARGO_TARGET_DIR)
    : path.join(PKG, '..', 'target')
  const candidates = [
    process.env.TRACTATUS_BIN,
    path.join(target, 'debug', 'tractatus'),
    path.join(target, 'release', 'tractatus'),
  ].filter(Boolean)
  const found = candidates.find((p) => fs.existsSync(p))
  if (!found) throw new Error(`no tractatus binary (looked at ${candidates.join(', ')}): run cargo build first`)
  return found
}

/**
 * Run `script` (JavaScript source) in `n` node processes that start their work together: each
 * prints "ready", and once all have, each gets "go" on stdin. Resolves with each child's
 * { code, signal, stdout, stderr }. Bounded by `timeoutMs`.
 */
async function runTogether(n, script, { cwd, env, args = [], timeoutMs = 60_000 } = {}) {
  const children = []
  let ready = 0
  let release
  const allReady = new Promise((r) => { release = r })
  for (let i = 0; i < n; i++) {
    const child = spawn(process.execPath, ['-e', script, String(i), ...args], { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] })
    const rec = { child, stdout: '', stderr: '', announced: false }
    child.stdout.on('data', (d) => {
      rec.stdout += d
      if (!rec.announced && rec.stdout.includes('ready\n')) {
        rec.announced = true
        if (++ready === n) release()
      }
    })
    child.stderr.on('data', (d) => { rec.stderr += d })
    rec.done = new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stdout: rec.stdout, stderr: rec.stderr })))
    children.push(rec)
  }
  const timer = setTimeout(() => {
    for (const c of children) if (c.child.exitCode === null) process.kill(c.child.pid, 'SIGKILL')
  }, timeoutMs)
  await Promise.race([allReady, Promise.all(children.map((c) => c.done))])
  for (const c of children) c.child.stdin.end('go\n')
  const results = await Promise.all(children.map((c) => c.done))
  clearTimeout(timer)
  return results
}

/**
 * Start `script` (JavaScript source) in a node process of its own, with node `flags` before it
 * and `args` after it. Returns { child, stdout, stderr, exit, line }: `exit` resolves with
 * { code, signal, at } once it closes; `line(text)` resolves once its stdout holds `text`, and
 * rejects if it exits first.
 */
function startChild(script, { cwd, env, args = [], flags = [] }) {
  const child = spawn(process.execPath, [...flags, '-e', script, ...args], { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] })
  const rec = { child, stdout: '', stderr: '' }
  child.stdout.on('data', (d) => { rec.stdout += d })
  child.stderr.on('data', (d) => { rec.stderr += d })
  rec.exit = new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal, at: Date.now() })))
  rec.line = (text) => new Promise((resolve, reject) => {
    const check = () => {
      if (rec.stdout.includes(text)) { child.stdout.off('data', check); resolve() }
    }
    child.stdout.on('data', check)
    rec.exit.then(() => reject(new Error(`child exited before printing ${text}: ${rec.stderr}`)))
    check()
  })
  return rec
}

/** Child-side preamble: announce readiness and wait for "go" on stdin. */
const BARRIER = `
const waitGo = () => new Promise((resolve) => {
  let buf = ''
  process.stdin.on('data', (d) => { buf += d; if (buf.includes('go')) { process.stdin.pause(); resolve() } })
  process.stdout.write('ready\\n')
})
`

function run(cmd, args, opts) {
  return spawnSync(cmd, args, { encoding: 'utf8', ...opts })
}

module.exports = {
  PKG, freePort, startRedis, tempRepo, withBackend, initServer, childEnv, cliPath, runTogether, startChild, BARRIER, run,
}
