// Types of tractatus-lock for Node.js. Self-contained: they compile under `tsc --strict` with
// no @types/node and no DOM library (AbortSignal and Buffer are described by what is used of them).

/** What the package uses of an AbortSignal (Node's and the DOM's both fit). */
export interface AbortSignalLike {
  readonly aborted: boolean
  readonly reason?: unknown
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void
  removeEventListener(type: 'abort', listener: () => void): void
}

/** A hook payload as given: JSON text, its bytes (a Buffer is a Uint8Array), or parsed. */
export type HookPayload = string | Uint8Array | { session_id?: string }

/** A duration: whole milliseconds, or the CLI's text form ("500ms", "10s", "2m", "1h"). */
export type Duration = number | string

export interface Options {
  /** Where relative paths and the repository are looked up from. Default: process.cwd(). */
  cwd?: string
  /** Redis URL(s); three or more masters mean Redlock. Default: TRACTATUS_REDIS, then the config file, else local file locks. */
  redis?: string | string[]
  /** Lock namespace. Default: TRACTATUS_NAMESPACE, then .claude/tractatus-lock.toml. */
  namespace?: string
  /** Lease TTL (default 10s; TRACTATUS_TTL). */
  ttl?: Duration
  /** Longest wait for a held lock; 0 tries once (default 30s; TRACTATUS_WAIT). */
  wait?: Duration
  /** Longest one holder keeps renewing (default 1h; TRACTATUS_MAX_HOLD). */
  maxHold?: Duration
  /** Deadline of one operation on one Redis node. */
  nodeTimeout?: Duration
  /** Deadline to connect to Redis (default 1s; TRACTATUS_CONNECT_TIMEOUT). */
  connectTimeout?: Duration
  /**
   * The session this call belongs to: recorded with the lease, kept active in the session
   * registry, and the owner of its copies of the files listed in `per_session`
   * (`.claude/sessions/<id>/…`). Default: TRACTATUS_SESSION_ID, else one id per process (which
   * owns no copies).
   */
  session?: string
  /** Use local file locks even on a network filesystem (they do not protect other machines). */
  allowNetworkFs?: boolean
  /** Called with the one-time notice (local file locks in use) instead of writing it to stderr. */
  onNotice?: (notice: string) => void
  /** Do not write the notice to stderr. */
  quiet?: boolean
  /**
   * Gives up the wait for the lock when it aborts: the call rejects at once with an ABORTED
   * TractatusLockError (the signal's reason as its `cause`) and holds nothing; an already
   * aborted signal rejects before anything is tried. It cancels the wait only: once the lock is
   * held, the update (or withLock's function) runs to its end.
   */
  signal?: AbortSignalLike
}

export interface UpdateOptions<T = any> extends Options {
  /** The document `fn` gets when the file does not exist yet (copied). Default: undefined. */
  initial?: T
}

export interface AppendOptions extends Options {
  /** Keep only the last `keep` entries of the array (a ring). */
  keep?: number
}

export interface WriteResult {
  /** A new document was committed. */
  committed: boolean
  /** The document came out the same; the file was not rewritten. */
  unchanged: boolean
  /** The fencing token of the lease the write ran under. */
  token: number
}

export interface Lease {
  /** Fencing token of each lock, by lock name (files by their path relative to the repository root). */
  tokens: Record<string, number>
  /** Aborts when a lease is lost; its reason is a LEASE_LOST TractatusLockError. (An AbortSignal.) */
  signal: AbortSignalLike
}

export type ErrorCode =
  | 'USAGE'
  | 'BAD_DATA'
  | 'UNAVAILABLE'
  | 'INTERNAL'
  | 'CANNOT_WRITE'
  | 'HELD'
  /**
   * A wait given up to break a deadlock across processes: a call inside `withLock` waited for
   * a lock whose holder waits, through a cycle of waiters, for a lock this `withLock` holds.
   * The youngest waiter in the cycle gets it, at once, with the cycle in its message; the others
   * go on. `exitCode` 75, as the CLI exits. Retry after the others finish (see docs/deadlock.md).
   */
  | 'DEADLOCK'
  | 'LEASE_LOST'
  | 'ABORTED'

/** Every error of this package: a code, the CLI's exit code (64-76) and a one-line message. */
export declare class TractatusLockError extends Error {
  readonly name: 'TractatusLockError'
  readonly code: ErrorCode
  readonly exitCode: number
  /** 'conflict' when LEASE_LOST means the file changed under the lease twice. */
  readonly reason?: 'conflict'
}

export declare const EXIT_CODES: Readonly<Record<ErrorCode, number>>

/**
 * Take `file`'s lease, read it, run `fn(doc)` in this process (it returns the new document or
 * mutates `doc`; it may be async), commit atomically and fenced. If `fn` throws, nothing is
 * written and its error propagates. If the file changed under the lease, `fn` runs once more.
 */
export declare function updateJson<T = any>(
  file: string,
  fn: (doc: T, info: { token: number }) => T | void | Promise<T | void>,
  options: UpdateOptions<T> & { initial: T },
): Promise<WriteResult>
/** Without `initial`, `fn` gets `undefined` when the file does not exist yet. */
export declare function updateJson<T = any>(
  file: string,
  fn: (doc: T | undefined, info: { token: number }) => T | void | Promise<T | void>,
  options?: UpdateOptions<T>,
): Promise<WriteResult>

/** The document, or the value at an RFC 6901 pointer, with no lease; undefined when absent. */
export declare function readJson<T = any>(file: string, pointer?: string, options?: Options): Promise<T | undefined>
export declare function readJson<T = any>(file: string, options: Options): Promise<T | undefined>

/** Push `value` onto the array at `pointer`; `keep` caps it to its last N entries. */
export declare function appendJson(file: string, pointer: string, value: unknown, options?: AppendOptions): Promise<WriteResult>

/** Replace or insert the value at `pointer` ("" is the whole document), like `tractatus state set`. */
export declare function setJson(file: string, pointer: string, value: unknown, options?: Options): Promise<WriteResult>

/** Apply an RFC 7396 merge patch (an object), like `tractatus state merge`. */
export declare function mergeJson(file: string, patch: Record<string, unknown>, options?: Options): Promise<WriteResult>

/**
 * Run `fn` holding the locks `names` and those of `files` (sorted, renewed, released after).
 * Rejects with LEASE_LOST (after `fn` settles) when a lease was lost meanwhile. updateJson,
 * appendJson, setJson and mergeJson called from `fn` (its async context) on a file whose lock
 * is held here join the lease, with its token, instead of waiting for it.
 */
export declare function withLock<R>(
  locks: { names?: string | string[]; files?: string | string[] },
  fn: (lease: Lease) => R | Promise<R>,
  options?: Options,
): Promise<R>

/** The `session_id` of a Claude Code hook payload (JSON text, Buffer or object). */
export declare function sessionFromHookInput(payload: HookPayload): string

/** Read and parse a hook's JSON payload from standard input (or another stream). */
export declare function readHookInput(stream?: AsyncIterable<string | Uint8Array>): Promise<any>

/**
 * Where `file` lives for this session: its own copy under `.claude/sessions/<id>/` when the file
 * is listed in `per_session` (it may not exist yet), else the file itself. Resolves with an
 * absolute path (earlier versions returned it synchronously: `await` it).
 */
export declare function statePath(file: string, options?: Options): Promise<string>

/**
 * Register a live session (as `tractatus session start`): the id of a Claude Code hook payload,
 * or a fresh one when none is given. Resolves with the id.
 */
export declare function sessionStart(hookInput?: HookPayload | null, options?: Options): Promise<string>

/** One held lock, as `tractatus lock status --json` shows it. */
export interface LockStatusEntry {
  name: string
  session: string
  host: string
  pid: number
  command: string
  held_ms: number
  /** null for local locks (no TTL). */
  ttl_left_ms: number | null
  token: number
  waiters: number
  /** The holder ran on this host and its process is gone. */
  stale: boolean
  nodes: number
  /** For a slot (`lock run --slots`): the slot set's name and the slot's index. */
  slot_of?: string
  slot?: number
}

/** Who holds what now: what `tractatus lock status --json` prints. Looks only. */
export declare function lockStatus(options?: Options): Promise<{
  namespace: string | null
  backend: 'redis' | 'local'
  locks: LockStatusEntry[]
}>
