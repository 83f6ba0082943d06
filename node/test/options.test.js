'use strict'
// Options are checked where they enter: a misspelt one is refused, a bad value names the option
// as the caller wrote it; and the types stand alone (no @types/node, no DOM library).

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { PKG, tempRepo, run } = require('./helpers')
const tl = require('..')

describe('options', () => {
  let repo
  before(() => { repo = tempRepo() })
  after(() => repo.cleanup())
  const file = () => repo.file('.claude/state.json')

  it('refuses an unknown option with USAGE, naming it, and writes nothing', async () => {
    for (const call of [
      () => tl.updateJson(file(), () => ({ n: 1 }), { cwd: repo.root, quiet: true, waitt: '1s' }),
      () => tl.setJson(file(), '/n', 1, { cwd: repo.root, quiet: true, keep: 3 }),
      () => tl.appendJson(file(), '/l', 1, { cwd: repo.root, quiet: true, initial: {} }),
      () => tl.withLock({ names: 'x' }, () => {}, { cwd: repo.root, quiet: true, timeout: 5 }),
    ]) {
      await assert.rejects(call, (e) => {
        assert.equal(e.code, 'USAGE')
        assert.equal(e.exitCode, 64)
        assert.match(e.message, /^unknown option '(waitt|keep|initial|timeout)'/)
        return true
      })
    }
    assert.equal(fs.existsSync(file()), false)
  })

  it('names a bad wait (or ttl, maxHold) as the option, not as the CLI flag', async () => {
    const cases = [[{ wait: 'abc' }, 'wait'], [{ wait: -1 }, 'wait'], [{ ttl: '10x' }, 'ttl'], [{ maxHold: '1d' }, 'maxHold']]
    for (const [bad, name] of cases) {
      await assert.rejects(tl.updateJson(file(), () => ({ n: 1 }), { cwd: repo.root, quiet: true, ...bad }), (e) => {
        assert.equal(e.code, 'USAGE')
        assert.ok(e.message.startsWith(`the ${name} option: `), e.message)
        assert.ok(!e.message.includes('--'), e.message)
        return true
      })
    }
    assert.equal(fs.existsSync(file()), false)
  })

  it('still takes every documented option', async () => {
    const r = await tl.updateJson(file(), (d) => ({ n: (d?.n ?? 0) + 1 }), {
      cwd: repo.root, quiet: true, wait: '1s', ttl: 2000, maxHold: '1m', nodeTimeout: 250,
      connectTimeout: '1s', session: 's1', allowNetworkFs: false, onNotice: () => {}, initial: undefined,
    })
    assert.equal(r.committed, true)
    await tl.appendJson(file(), '/l', 1, { cwd: repo.root, quiet: true, keep: 2 }).catch((e) => assert.equal(e.code, 'BAD_DATA'))
  })
})

describe('types', () => {
  const dts = fs.readFileSync(path.join(PKG, 'index.d.ts'), 'utf8')

  it('index.d.ts names nothing only @types/node or the DOM library declares', () => {
    const code = dts.split('\n').filter((l) => !/^\s*(\/\/|\/?\*)/.test(l)).join('\n')
    for (const global of [/\bBuffer\b/, /\bNodeJS\./, /:\s*AbortSignal\b/, /\bReadableStream\b/]) {
      assert.doesNotMatch(code, global)
    }
  })

  // tsc itself: TypeScript is a dev dependency (`npm ci` installs it), so this never skips.
  it('index.d.ts compiles under tsc --strict with no @types/node and no DOM library, and updateJson without initial may get undefined', () => {
      const tsc = require.resolve('typescript/bin/tsc', { paths: [PKG] })
      const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'tl-types-'))
      try {
        fs.mkdirSync(path.join(dir, 'node_modules', 'tractatus-lock'), { recursive: true })
        fs.copyFileSync(path.join(PKG, 'index.d.ts'), path.join(dir, 'node_modules', 'tractatus-lock', 'index.d.ts'))
        fs.writeFileSync(path.join(dir, 'node_modules', 'tractatus-lock', 'package.json'), '{"name":"tractatus-lock","types":"index.d.ts"}')
        fs.writeFileSync(path.join(dir, 'ok.ts'), `import { updateJson, withLock, readHookInput, sessionFromHookInput } from 'tractatus-lock'
interface S { n: number }
export async function f(): Promise<void> {
  await updateJson<S>('f', (d) => { d.n++ }, { initial: { n: 0 } })
  await updateJson<S>('f', (d) => (d ? { n: d.n + 1 } : { n: 1 }))
  await withLock({ files: 'f' }, async (l) => l.signal.aborted)
  sessionFromHookInput(new Uint8Array(2)); await readHookInput()
}\n`)
        fs.writeFileSync(path.join(dir, 'bad.ts'), `import { updateJson } from 'tractatus-lock'
export async function f(): Promise<void> { await updateJson<{ n: number }>('f', (d) => { d.n++ }) }\n`)
        const ok = run(process.execPath, [tsc, '--strict', '--noEmit', '--lib', 'es2020', 'ok.ts'], { cwd: dir })
        assert.equal(ok.status, 0, ok.stdout + ok.stderr)
        const bad = run(process.execPath, [tsc, '--strict', '--noEmit', '--lib', 'es2020', 'bad.ts'], { cwd: dir })
        assert.match(bad.stdout, /'d' is possibly 'undefined'/)
      } finally {
        fs.rmSync(dir, { recursive: true, force: true })
      }
    })
})
