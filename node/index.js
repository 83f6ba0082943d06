'use strict'
// tractatus-lock for Node.js: guarded read-modify-write of JSON state files, in-process.
// The native addon (napi-rs, built from the Rust crate) holds the leases and makes the fenced,
// atomic commits; this file gives it a promise API, one error class and option handling.

const fs = require('node:fs')
const path = require('node:path')

// The CLI's exit codes (64-76), by error code.
const EXIT_CODES = Object.freeze({
  USAGE: 64,
  BAD_DATA: 65,
  UNAVAILABLE: 69,
  INTERNAL: 70,
  CANNOT_WRITE: 73,
  HELD: 75,
  // A wait given up to break a cycle of waiters across processes (it held a lock another
  // waiter needed, and waited for one that waiter's holder held): like the CLI's 75.
  DEADLOCK: 75,
  LEASE_LOST: 76,
  // Not the CLI's: a wait given up by the caller's AbortSignal, like a wait that ran out.
  ABORTED: 75,
})

class TractatusLockError extends Error {
  constructor(code, message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'TractatusLockError'
    this.code = code
    this.exitCode = options.exitCode ?? EXIT_CODES[code] ?? 70
    if (options.reason) this.reason = options.reason
  }
}

const usage = (message) => new TractatusLockError('USAGE', message)

// The withLock scopes a call runs in: { held, open, parent }, innermost first. Made on the first
// withLock, so that a process that never calls it pays nothing for async context tracking.
let lockScope = null

// The open withLock scopes of the calling async context, innermost first.
function* openScopes() {
  for (let s = lockScope?.getStore(); s; s = s.parent) if (s.open) yield s
}

// `join(held)` under the first enclosing withLock holding the file's lock, else `own(canceller)`:
// a call inside withLock on a file it holds joins that lease instead of waiting for it.
async function joinedOr(join, own, signal) {
  // An aborted signal refuses the call even where it would join (and so not wait).
  if (signal?.aborted === true) throw abortError(signal)
  for (const scope of openScopes()) {
    const r = await call(() => join(scope.held))
    if (r !== null) return r
  }
  return abortable(signal, own)
}

function abortError(signal) {
  return new TractatusLockError('ABORTED',
    'the wait was aborted (its AbortSignal fired); nothing was taken or written',
    signal.reason === undefined ? {} : { cause: signal.reason })
}

// `start(canceller)`, its wait given up in the addon when `signal` aborts: the call then rejects
// with ABORTED (the signal's reason as its cause), and whatever it had taken is let go.
async function abortable(signal, start) {
  if (signal === undefined || signal === null) return call(() => start(undefined))
  if (typeof signal !== 'object' || typeof signal.aborted !== 'boolean' || typeof signal.addEventListener !== 'function') {
    throw usage('signal must be an AbortSignal')
  }
  if (signal.aborted) throw abortError(signal)
  const canceller = new (addon().Canceller)()
  const cancel = () => canceller.cancel()
  signal.addEventListener('abort', cancel, { once: true })
  try {
    return await call(() => start(canceller))
  } catch (e) {
    throw e instanceof TractatusLockError && e.code === 'ABORTED' ? abortError(signal) : e
  } finally {
    signal.removeEventListener('abort', cancel)
  }
}

let native = null
// Loaded on first use, so that requiring the package costs nothing until a call is made: a
// build in this directory (`npm run build`) first, else this platform's package
// (@tractatus-lock/<tag>, an optional dependency npm picks by os, cpu and libc).
function addon() {
  if (native) return native
  const tag = require('./platform').platformTag()
  const file = path.join(__dirname, `tractatus-lock.${tag}.node`)
  if (fs.existsSync(file)) {
    native = require(file)
    return native
  }
  try {
    native = require(`@tractatus-lock/${tag}`)
    return native
  } catch (e) {
    if (e?.code !== 'MODULE_NOT_FOUND') throw e
  }
  throw new TractatusLockError('INTERNAL',
    `no prebuilt tractatus-lock addon for ${tag}: neither ${file} nor the package @tractatus-lock/${tag} ` +
    '(an optional dependency: reinstall without --omit=optional); or build it with `npm run build` (needs Rust)')
}

// The option each of the CLI's flags is here: the addon's messages name the flag.
const OPTION_OF_FLAG = Object.freeze({
  '--redis': 'redis',
  '--namespace': 'namespace',
  '--ttl': 'ttl',
  '--wait': 'wait',
  '--max-hold': 'maxHold',
  '--node-timeout': 'nodeTimeout',
  '--connect-timeout': 'connectTimeout',
  '--session': 'session',
})

// The addon's errors carry `TL:<CODE>:<exit code>:<message>`.
function fromNative(e) {
  const m = /^TL:([A-Z_]+):(\d+):([\s\S]*)$/.exec(e && e.message)
  if (!m) return e
  if (m[1] === 'CONFLICT') {
    return new TractatusLockError('LEASE_LOST', m[3], { exitCode: Number(m[2]), reason: 'conflict' })
  }
  // A bad value of an option is named as the option the caller wrote (`wait`, not `--wait`).
  const message = m[1] === 'USAGE'
    ? m[3].replace(/^--[a-z-]+(?=:)/, (flag) => (OPTION_OF_FLAG[flag] ? `the ${OPTION_OF_FLAG[flag]} option` : flag))
    : m[3]
  return new TractatusLockError(m[1], message, { exitCode: Number(m[2]) })
}

async function call(fn) {
  try {
    return await fn()
  } catch (e) {
    throw fromNative(e)
  }
}

function duration(v, name) {
  if (v === undefined || v === null) return undefined
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < 0) throw usage(`the ${name} option: expected whole milliseconds, got ${v}`)
    return `${v}ms`
  }
  return String(v)
}

// The options every call takes; a call may take a few more of its own (`initial`, `keep`).
const OPTIONS = ['cwd', 'redis', 'namespace', 'ttl', 'wait', 'maxHold', 'nodeTimeout', 'connectTimeout',
  'session', 'allowNetworkFs', 'onNotice', 'quiet', 'signal']

function nativeOptions(o = {}, own = []) {
  if (o === null || typeof o !== 'object') throw usage('options must be an object')
  // A misspelt option (`waitt`) would otherwise be ignored, and its default used in silence.
  for (const key of Object.keys(o)) {
    if (!OPTIONS.includes(key) && !own.includes(key)) {
      throw usage(`unknown option '${key}': the options are ${[...OPTIONS, ...own].join(', ')}`)
    }
  }
  return {
    cwd: o.cwd === undefined ? undefined : path.resolve(String(o.cwd)),
    redis: o.redis === undefined || o.redis === null ? undefined : [].concat(o.redis).map(String),
    namespace: o.namespace ?? undefined,
    ttl: duration(o.ttl, 'ttl'),
    wait: duration(o.wait, 'wait'),
    maxHold: duration(o.maxHold, 'maxHold'),
    nodeTimeout: duration(o.nodeTimeout, 'nodeTimeout'),
    connectTimeout: duration(o.connectTimeout, 'connectTimeout'),
    session: o.session ?? undefined,
    allowNetworkFs: o.allowNetworkFs ?? undefined,
    holding: scopeHoldings(),
  }
}

// What the open withLock scopes of the calling async context hold: a call that waits records
// it as its wait-for edge, so a cycle of waiters across processes is found (code DEADLOCK).
function scopeHoldings() {
  if (lockScope === null) return undefined
  const all = []
  for (const scope of openScopes()) all.push(...scope.held.holdings)
  return all.length === 0 ? undefined : all
}

// The local-locks notice, once per configuration and process, like the CLI prints it.
function notify(notice, opts) {
  if (!notice) return
  if (typeof opts.onNotice === 'function') opts.onNotice(notice)
  else if (!opts.quiet) process.stderr.write(`tractatus-lock: ${notice}\n`)
}

function filePath(file) {
  if (typeof file !== 'string' || file === '') throw usage('file must be a non-empty path')
  return file
}

function toJson(value, what) {
  const text = JSON.stringify(value)
  if (text === undefined) throw usage(`${what} cannot be written as JSON (${typeof value})`)
  return text
}

function result(r) {
  return { committed: r.committed, unchanged: r.unchanged, token: r.token }
}

/**
 * Take `file`'s lease, read it, run `fn(doc)` here (sync or async; it returns the new document
 * or mutates `doc`), and commit the result atomically and fenced. If the file changed under the
 * lease (a writer that takes no lock), `fn` runs once more on the fresh document. If `fn`
 * throws, nothing is written and its error propagates.
 */
async function updateJson(file, fn, opts = {}) {
  if (typeof fn !== 'function') throw usage('updateJson(file, fn): fn must be a function')
  const o = nativeOptions(opts, ['initial'])
  const f = filePath(file)
  const pending = await joinedOr((held) => held.begin(f, o), (c) => addon().begin(f, o, c), opts.signal)
  notify(pending.notice, opts)
  let outcome
  try {
    for (let attempt = 0; ; attempt++) {
      // The file's own text, parsed once here; it goes back as text in Node's layout.
      const text = pending.document()
      const doc = text === null
        ? (opts.initial === undefined ? undefined : JSON.parse(JSON.stringify(opts.initial)))
        : JSON.parse(text)
      const returned = await fn(doc, { token: pending.token })
      const next = returned === undefined ? doc : returned
      if (next === undefined) {
        // No document and none made: there is nothing to write.
        outcome = { committed: false, unchanged: true, token: pending.token }
        break
      }
      const newText = JSON.stringify(next, null, 2)
      if (newText === undefined) throw usage(`the document fn returned cannot be written as JSON (${typeof next})`)
      try {
        outcome = result(await pending.commit(text !== null && text.endsWith('\n') ? `${newText}\n` : newText))
        break
      } catch (e) {
        const err = fromNative(e)
        if (err.reason !== 'conflict' || attempt > 0) throw err
        await call(() => pending.reload())
      }
    }
  } catch (e) {
    await pending.release().catch(() => {})
    throw e
  }
  // Once committed the write stands: a lease that ran out after it changes nothing.
  await pending.release().catch(() => {})
  return outcome
}

/**
 * The document (or the value at an RFC 6901 `pointer`) with no lease; `undefined` when absent.
 * The file is read off the JavaScript thread.
 */
async function readJson(file, pointer, opts) {
  if (pointer !== null && typeof pointer === 'object' && opts === undefined) {
    opts = pointer
    pointer = undefined
  }
  const o = nativeOptions(opts)
  const text = await call(() => addon().read(filePath(file), pointer ?? undefined, o))
  return text === null ? undefined : JSON.parse(text)
}

/** Push `value` onto the array at `pointer`; `keep` caps it to its last N entries. */
async function appendJson(file, pointer, value, opts = {}) {
  const keep = opts.keep
  if (keep !== undefined && (!Number.isInteger(keep) || keep < 1 || keep > 0xffffffff)) {
    throw usage(`keep must be a whole number of entries (at least 1), got ${keep}`)
  }
  const o = nativeOptions(opts, ['keep'])
  const [f, p, json] = [filePath(file), String(pointer), toJson(value, 'value')]
  const r = await joinedOr((held) => held.append(f, p, json, keep, o), (c) => addon().append(f, p, json, keep, o, c), opts.signal)
  notify(r.notice, opts)
  return result(r)
}

/** Replace or insert the value at `pointer` (`""` is the whole document), as `state set`. */
async function setJson(file, pointer, value, opts = {}) {
  const o = nativeOptions(opts)
  const [f, p, json] = [filePath(file), String(pointer), toJson(value, 'value')]
  const r = await joinedOr((held) => held.set(f, p, json, o), (c) => addon().set(f, p, json, o, c), opts.signal)
  notify(r.notice, opts)
  return result(r)
}

/** Apply an RFC 7396 merge patch (an object), as `state merge`. */
async function mergeJson(file, patch, opts = {}) {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) {
    throw usage('mergeJson takes an object patch (RFC 7396); use setJson to replace a value')
  }
  const o = nativeOptions(opts)
  const [f, json] = [filePath(file), toJson(patch, 'patch')]
  const r = await joinedOr((held) => held.merge(f, json, o), (c) => addon().merge(f, json, o, c), opts.signal)
  notify(r.notice, opts)
  return result(r)
}

/**
 * Run `fn(lease)` holding the locks `names` and those named after `files` (taken in sorted
 * order, renewed, released afterwards). `lease.tokens` maps each lock name to its fencing token;
 * `lease.signal` aborts when a lease is lost, and the promise then rejects with LEASE_LOST once
 * `fn` has settled. updateJson, appendJson, setJson and mergeJson called from `fn`'s async
 * context on a file whose lock is held here join the lease (its token) instead of waiting.
 */
async function withLock(what, fn, opts = {}) {
  if (typeof fn !== 'function') throw usage('withLock(locks, fn): fn must be a function')
  const names = [].concat(what?.names ?? []).map(String)
  const files = [].concat(what?.files ?? []).map(String)
  const o = nativeOptions(opts)
  const held = await abortable(opts.signal, (c) => addon().acquire(names, files, o, c))
  notify(held.notice, opts)
  const controller = new AbortController()
  let lostReason = null
  const watching = held.lost().then((reason) => {
    if (reason === null) return
    lostReason = reason
    controller.abort(new TractatusLockError('LEASE_LOST', `lease lost: ${reason}`))
  }, () => {})
  const tokens = Object.fromEntries(held.tokens.map((t) => [t.name, t.token]))
  if (lockScope === null) lockScope = new (require('node:async_hooks').AsyncLocalStorage)()
  const scope = { held, open: true, parent: lockScope.getStore() }
  let value
  let failure
  let failed = false
  try {
    value = await lockScope.run(scope, () => fn({ tokens, signal: controller.signal }))
  } catch (e) {
    failed = true
    failure = e
  }
  // Calls still to come from fn's context take their own leases; a joined write not yet
  // committed fails with LEASE_LOST once the release below has run.
  scope.open = false
  let releaseError = null
  await held.release().catch((e) => { releaseError = fromNative(e) })
  await watching
  if (lostReason !== null) {
    throw new TractatusLockError('LEASE_LOST', `lease lost while the function ran: ${lostReason}`,
      failed ? { cause: failure } : {})
  }
  if (failed) throw failure
  if (releaseError) throw releaseError
  return value
}

/** The session id in a Claude Code hook payload (its `session_id`), given as text or object. */
function sessionFromHookInput(payload) {
  let p = payload
  if (Buffer.isBuffer(p)) p = p.toString('utf8')
  if (typeof p === 'string') {
    try {
      p = JSON.parse(p)
    } catch (e) {
      throw new TractatusLockError('BAD_DATA', `the hook payload is not valid JSON: ${e.message}`)
    }
  }
  const id = p && typeof p === 'object' ? p.session_id : undefined
  if (typeof id !== 'string' || id.trim() === '') {
    throw new TractatusLockError('BAD_DATA', 'the hook payload has no session_id')
  }
  return id.trim()
}

/** Read a hook's JSON payload from standard input (all of it), parsed. */
async function readHookInput(stream = process.stdin) {
  const chunks = []
  for await (const c of stream) chunks.push(c)
  const text = Buffer.concat(chunks).toString('utf8')
  try {
    return text.trim() === '' ? {} : JSON.parse(text)
  } catch (e) {
    throw new TractatusLockError('BAD_DATA', `the hook payload is not valid JSON: ${e.message}`)
  }
}

/**
 * Where `file` lives for the session of `opts` (the `session` option, else
 * TRACTATUS_SESSION_ID): its own copy under `.claude/sessions/<id>/` when the file is listed in
 * `per_session`, else the file itself. Resolves with an absolute path (the configuration is
 * read off the JavaScript thread); the copy may not exist yet.
 */
async function statePath(file, opts = {}) {
  const o = nativeOptions(opts)
  return call(() => addon().statePath(filePath(file), o))
}

/**
 * Register a live session in the registry (`tractatus session start`): its id from a Claude Code
 * hook payload (text, Buffer or object, as `sessionFromHookInput`), or a fresh one when none is
 * given. Resolves with the id; also collects the directories of sessions inactive for a day.
 */
async function sessionStart(hookInput, opts = {}) {
  const id = hookInput === undefined || hookInput === null ? undefined : sessionFromHookInput(hookInput)
  const o = nativeOptions(opts)
  return call(() => addon().sessionStart(id, o))
}

/**
 * Who holds what now, as `tractatus lock status --json` prints it:
 * `{ namespace, backend, locks: [{ name, session, host, pid, command, held_ms, ttl_left_ms,
 * token, waiters, stale, nodes, slot_of?, slot? }] }`. Looks only: takes nothing, writes nothing.
 */
async function lockStatus(opts = {}) {
  const o = nativeOptions(opts)
  return JSON.parse(await call(() => addon().lockStatus(o)))
}

module.exports = {
  updateJson,
  readJson,
  appendJson,
  setJson,
  mergeJson,
  withLock,
  sessionFromHookInput,
  readHookInput,
  statePath,
  sessionStart,
  lockStatus,
  TractatusLockError,
  EXIT_CODES,
}
