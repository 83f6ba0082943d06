'use strict'
// Make the npm tarballs, laid out as napi-rs and esbuild lay theirs out:
//   tractatus-lock-<version>.tgz                  index.js, index.d.ts, bin/tractatus.js, ...; every
//                                                 platform package as an optional dependency
//   tractatus-lock-<tag>-<version>.tgz            @tractatus-lock/<tag>: this platform's addon and
//                                                 `tractatus` CLI, with os, cpu and libc, so npm
//                                                 installs only the one that fits the machine
// Run after `npm run build` (which builds both in release). Only this machine's platform package
// is made; the others are made the same way on (or cross-built for) their platform: see
// docs/node.md. Usage: node scripts/pack.js [--out DIR]   (default: dist/); prints each tarball.

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { platformTag } = require('../platform')

// Every platform package the main package names (Linux only: tractatus reads /proc).
const PLATFORMS = {
  'linux-x64-gnu': { os: ['linux'], cpu: ['x64'], libc: ['glibc'] },
  'linux-arm64-gnu': { os: ['linux'], cpu: ['arm64'], libc: ['glibc'] },
  'linux-x64-musl': { os: ['linux'], cpu: ['x64'], libc: ['musl'] },
  'linux-arm64-musl': { os: ['linux'], cpu: ['arm64'], libc: ['musl'] },
}

const pkgDir = path.resolve(__dirname, '..')
const workspace = path.resolve(pkgDir, '..')
const main = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'))
const outArg = process.argv.indexOf('--out')
const out = path.resolve(outArg > 0 ? process.argv[outArg + 1] : path.join(pkgDir, 'dist'))
const tag = platformTag()
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

function fail(message) {
  console.error(`pack: ${message}`)
  process.exit(1)
}

function npmPack(dir) {
  const r = spawnSync(npm, ['pack', '--json', '--pack-destination', out], { cwd: dir, encoding: 'utf8' })
  if (r.error || r.status !== 0) fail(`npm pack in ${dir} failed: ${r.error?.message ?? r.stderr}`)
  return path.join(out, JSON.parse(r.stdout)[0].filename)
}

if (!PLATFORMS[tag]) fail(`no npm package is defined for ${tag} (tractatus runs on Linux only)`)
const addon = path.join(pkgDir, `tractatus-lock.${tag}.node`)
const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(workspace, process.env.CARGO_TARGET_DIR) : path.join(workspace, 'target')
const cli = path.join(targetDir, 'release', 'tractatus')
for (const f of [addon, cli]) if (!fs.existsSync(f)) fail(`${f} is missing: run \`npm run build\` first`)

const stage = path.join(out, 'stage')
fs.rmSync(stage, { recursive: true, force: true })
fs.mkdirSync(stage, { recursive: true })

// This platform's package: the addon, the CLI (stripped) and the licence.
const platDir = path.join(stage, tag)
fs.mkdirSync(path.join(platDir, 'bin'), { recursive: true })
const addonName = path.basename(addon)
fs.copyFileSync(addon, path.join(platDir, addonName))
fs.copyFileSync(cli, path.join(platDir, 'bin', 'tractatus'))
spawnSync('strip', ['--strip-unneeded', path.join(platDir, 'bin', 'tractatus')], { stdio: 'inherit' })
fs.chmodSync(path.join(platDir, 'bin', 'tractatus'), 0o755)
fs.copyFileSync(path.join(workspace, 'LICENSE'), path.join(platDir, 'LICENSE'))
fs.writeFileSync(path.join(platDir, 'README.md'),
  `# @tractatus-lock/${tag}\n\nThe ${tag} build of [tractatus-lock](https://www.npmjs.com/package/tractatus-lock): ` +
  'its Node addon and its `tractatus` CLI. Install `tractatus-lock`, which picks this package on this platform.\n')
fs.writeFileSync(path.join(platDir, 'package.json'), `${JSON.stringify({
  name: `@tractatus-lock/${tag}`,
  version: main.version,
  description: `The ${tag} addon and tractatus CLI of tractatus-lock`,
  main: addonName,
  files: [addonName, 'bin/tractatus', 'LICENSE', 'README.md'],
  ...PLATFORMS[tag],
  engines: main.engines,
  license: main.license,
}, null, 2)}\n`)

// The main package: what `npm pack` would take from here, the licence, and every platform
// package as an optional dependency of the same version (what napi-rs' `prepublish` adds).
const listed = spawnSync(npm, ['pack', '--dry-run', '--json'], { cwd: pkgDir, encoding: 'utf8' })
if (listed.status !== 0) fail(`npm pack --dry-run failed: ${listed.stderr}`)
const mainDir = path.join(stage, 'main')
for (const { path: f } of JSON.parse(listed.stdout)[0].files) {
  fs.mkdirSync(path.dirname(path.join(mainDir, f)), { recursive: true })
  fs.copyFileSync(path.join(pkgDir, f), path.join(mainDir, f))
}
fs.copyFileSync(path.join(workspace, 'LICENSE'), path.join(mainDir, 'LICENSE'))
const optionalDependencies = Object.fromEntries(Object.keys(PLATFORMS).map((t) => [`@tractatus-lock/${t}`, main.version]))
fs.writeFileSync(path.join(mainDir, 'package.json'), `${JSON.stringify({ ...main, optionalDependencies }, null, 2)}\n`)

const tarballs = [npmPack(mainDir), npmPack(platDir)]
fs.rmSync(stage, { recursive: true, force: true })
for (const t of tarballs) console.log(t)
