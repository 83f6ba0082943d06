'use strict'
// Build the native addon from the Rust crate and put it where index.js loads it:
// tractatus-lock.<platform>-<arch>[-gnu|-musl].node; and, in the same cargo run (so that both
// share every compiled crate), the `tractatus` CLI that `scripts/pack.js` puts in this
// platform's package. `--debug` for a debug build. Plain cargo: the build needs nothing from npm.

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const pkg = path.resolve(__dirname, '..')
const workspace = path.resolve(pkg, '..')
const release = !process.argv.includes('--debug')

const args = ['build', '--locked', '-p', 'tractatus-lock-node', '--lib', '-p', 'tractatus-lock', '--bin', 'tractatus']
if (release) args.push('--release')
const built = spawnSync('cargo', args, { cwd: workspace, stdio: 'inherit' })
if (built.error || built.status !== 0) {
  console.error(`build: cargo ${args.join(' ')} failed${built.error ? `: ${built.error.message}` : ''}`)
  process.exit(built.status || 1)
}

const { platform } = process
const libName = {
  linux: 'libtractatus_lock_node.so',
  darwin: 'libtractatus_lock_node.dylib',
  win32: 'tractatus_lock_node.dll',
}[platform] || 'libtractatus_lock_node.so'
const tag = require('../platform').platformTag()
const targetDir = process.env.CARGO_TARGET_DIR
  ? path.resolve(workspace, process.env.CARGO_TARGET_DIR)
  : path.join(workspace, 'target')
const from = path.join(targetDir, release ? 'release' : 'debug', libName)
const to = path.join(pkg, `tractatus-lock.${tag}.node`)
// Copy beside, then rename: a running process keeps its mapped copy intact.
fs.copyFileSync(from, `${to}.tmp`)
if (release && platform === 'linux') {
  // Debug symbols are most of the file; the package ships without them.
  spawnSync('strip', ['--strip-unneeded', `${to}.tmp`], { stdio: 'inherit' })
}
fs.renameSync(`${to}.tmp`, to)
console.log(`build: ${path.relative(pkg, to)} (${(fs.statSync(to).size / 1e6).toFixed(1)} MB, ${release ? 'release' : 'debug'})`)
