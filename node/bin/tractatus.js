#!/usr/bin/env node
'use strict'
// `npx tractatus ...`: runs the `tractatus` CLI of this platform's package
// (@tractatus-lock/<platform>, an optional dependency npm picks by os, cpu and libc), with this
// process' arguments, stdin, stdout and stderr, and exits as it exits (a signal included).

const { spawn } = require('node:child_process')
const { platformTag } = require('../platform')

const tag = platformTag()
let binary
try {
  binary = require.resolve(`@tractatus-lock/${tag}/bin/tractatus`)
} catch {
  process.stderr.write(`tractatus: no prebuilt tractatus CLI for ${tag}: the package @tractatus-lock/${tag} is not ` +
    'installed (npm skips optional dependencies with --omit=optional or --no-optional; reinstall without it), ' +
    'or none is published for this platform (build the CLI with Rust: cargo install --locked --path <the repository>)\n')
  process.exit(70)
}

const child = spawn(binary, process.argv.slice(2), { stdio: 'inherit' })
// A signal sent to this process alone (a hook runner's SIGTERM) reaches the CLI too; the CLI
// passes it on to the command it runs.
const forwarded = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT']
for (const sig of forwarded) process.on(sig, () => { child.kill(sig) })
child.on('error', (e) => {
  process.stderr.write(`tractatus: cannot start ${binary}: ${e.message}\n`)
  process.exit(70)
})
child.on('exit', (code, signal) => {
  if (signal) {
    for (const sig of forwarded) process.removeAllListeners(sig)
    process.kill(process.pid, signal)
    return
  }
  process.exit(code)
})
