'use strict'
// The tarballs `npm run package` makes (the main package and this platform's) install into an
// empty directory with no Rust toolchain on PATH and no network, and there both the addon and
// `npx tractatus` work: the prebuilt addon and CLI are inside this platform's package.

const { it } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { PKG, run } = require('./helpers')

it('the packed tarballs install offline with no cargo on PATH, and npx tractatus and the addon work there', () => {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'tl-pack-')))
  try {
    const packed = run(process.execPath, [path.join(PKG, 'scripts', 'pack.js'), '--out', dir], { cwd: PKG })
    assert.equal(packed.status, 0, packed.stderr)
    const tarballs = packed.stdout.trim().split('\n')
    assert.equal(tarballs.length, 2, packed.stdout)
    const [mainTgz, platformTgz] = tarballs
    const listing = (tgz) => run('tar', ['tzf', tgz]).stdout.split('\n')
    assert.ok(listing(mainTgz).includes('package/LICENSE'), 'the main tarball carries the LICENSE')
    assert.ok(listing(mainTgz).includes('package/bin/tractatus.js'))
    assert.ok(listing(mainTgz).includes('package/index.d.ts'))
    assert.ok(!listing(mainTgz).some((f) => f.endsWith('.node')), 'the addon is in the platform package only')
    assert.ok(listing(platformTgz).includes('package/LICENSE'), 'the platform tarball carries the LICENSE')
    assert.ok(listing(platformTgz).includes('package/bin/tractatus'))
    assert.ok(listing(platformTgz).some((f) => /^package\/tractatus-lock\.[\w-]+\.node$/.test(f)))

    const project = path.join(dir, 'project')
    fs.mkdirSync(project)
    // Only the directories of node and npm, and none that holds cargo or rustc; npm offline,
    // with an empty cache and a registry nobody answers at.
    const dirs = [path.dirname(process.execPath), '/usr/bin', '/bin']
      .filter((d) => !fs.existsSync(path.join(d, 'cargo')) && !fs.existsSync(path.join(d, 'rustc')))
    const env = {
      HOME: dir,
      PATH: [...new Set(dirs)].join(':'),
      npm_config_cache: path.join(dir, 'cache'),
      npm_config_offline: 'true',
      npm_config_registry: 'http://127.0.0.1:9/',
      npm_config_update_notifier: 'false',
    }
    assert.notEqual(run('sh', ['-c', 'command -v cargo || command -v rustc'], { env }).status, 0, 'cargo is still on PATH')
    assert.equal(run('git', ['init', '-q'], { cwd: project, env }).status, 0)
    const installed = run('npm', ['install', '--no-audit', '--no-fund', mainTgz, platformTgz], { cwd: project, env })
    assert.equal(installed.status, 0, installed.stderr)

    const npx = (...args) => run('npx', ['tractatus', ...args], { cwd: project, env: { ...env, TRACTATUS_QUIET: '1' } })
    const version = npx('--version')
    assert.equal(version.status, 0, version.stderr)
    assert.match(version.stdout, /^tractatus \d+\.\d+\.\d+/)
    const status = npx('lock', 'status')
    assert.equal(status.status, 0, status.stderr)
    assert.match(status.stdout, /no locks held/)
    const ran = npx('lock', 'run', '--file', '.claude/state.json', '--', 'sh', '-c', 'echo "token=$TRACTATUS_FENCING_TOKEN"')
    assert.equal(ran.status, 0, ran.stderr)
    assert.match(ran.stdout, /^token=\d+$/m)
    const passedThrough = npx('lock', 'run', '--name', 'hook', '--', 'sh', '-c', 'exit 3')
    assert.equal(passedThrough.status, 3, "the command's exit code comes back through npx")
    const usage = npx('lock', 'frob')
    assert.equal(usage.status, 64, usage.stderr)

    const used = run(process.execPath, ['-e', `
      const t = require('tractatus-lock')
      t.updateJson('.claude/state.json', (d) => { d.n = (d.n || 0) + 1 }, { initial: {}, quiet: true })
        .then((r) => console.log(JSON.stringify(r)))`], { cwd: project, env })
    assert.equal(used.status, 0, used.stderr)
    assert.equal(JSON.parse(used.stdout).committed, true)
    assert.equal(fs.readFileSync(path.join(project, '.claude/state.json'), 'utf8'), '{\n  "n": 1\n}')
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
