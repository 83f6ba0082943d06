'use strict'
// Preloaded into each benchmarked hook (node --require): reports on stderr how long the
// process ran by its own clock, from its start to its exit, without spawn and reaping noise.
process.on('exit', () => {
  process.stderr.write(`\nbench-in-process-ms ${performance.now().toFixed(3)}\n`)
})
