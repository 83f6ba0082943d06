'use strict'
// The tarball `npm pack` makes installs into an empty directory and works there with no Rust
// toolchain on PATH: the prebuilt addon is inside.

const { it } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { PKG, run } = require('./helpers')

it('npm pack gives a tarball that installs and runs with no cargo on PATH', () => {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'tl-pack-')))
  try {
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
    const packed = run(npm, ['pack', '--silent', '--pack-destination', dir], { cwd: PKG })
    assert.equal(packed.status, 0, packed.stderr)
    const tgz = path.join(dir, packed.stdout.trim().split('\n').pop())
    const listing = run('tar', ['tzf', tgz]).stdout
    assert.match(listing, /package\/tractatus-lock\.[\w-]+\.node/)
    assert.match(listing, /package\/index\.d\.ts/)

    const project = path.join(dir, 'project')
    fs.mkdirSync(path.join(project, '.claude'), { recursive: true })
    // Only the directories of node and npm, and none that holds cargo or rustc.
    const dirs = [path.dirname(process.execPath), '/usr/bin', '/bin']
      .filter((d) => !fs.existsSync(path.join(d, 'cargo')) && !fs.existsSync(path.join(d, 'rustc')))
    const env = { HOME: dir, PATH: [...new Set(dirs)].join(':'), npm_config_cache: path.join(dir, 'cache') }
    assert.notEqual(run('sh', ['-c', 'command -v cargo'], { env }).status, 0, 'cargo is still on PATH')
    const installed = run(npm, ['install', '--offline', '--no-audit', '--no-fund', tgz], { cwd: project, env })
    assert.equal(installed.status, 0, installed.stderr)
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
