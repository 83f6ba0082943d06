#!/usr/bin/env node
'use strict'
// The same PostToolUse hook as examples/post-tool-use.js, written the way hooks write today:
// read, parse, change, write, with nothing guarding the read-modify-write. The benchmark's
// baseline, and its lost updates.

const fs = require('node:fs')
const path = require('node:path')

const RING = 1000

function update(file, initial, fn) {
  let doc
  try {
    doc = JSON.parse(fs.readFileSync(file, 'utf8'))
  } catch (e) {
    if (e.code !== 'ENOENT') throw e
    doc = initial
  }
  fn(doc)
  fs.mkdirSync(path.dirname(file), { recursive: true })
  fs.writeFileSync(file, JSON.stringify(doc, null, 2))
}

let text = ''
process.stdin.on('data', (d) => { text += d })
process.stdin.on('end', () => {
  const input = text.trim() ? JSON.parse(text) : {}
  const root = process.env.CLAUDE_PROJECT_DIR || input.cwd || process.cwd()
  const now = new Date().toISOString()
  const record = {
    ts: now,
    session: input.session_id ?? null,
    event: input.hook_event_name ?? 'PostToolUse',
    tool: input.tool_name ?? null,
    success: !(input.tool_response && input.tool_response.is_error),
    input_bytes: JSON.stringify(input.tool_input ?? null).length,
  }
  update(path.join(root, '.claude/metrics/hooks-metrics.json'), { records: [], totals: { executions: 0 } }, (m) => {
    m.records.push(record)
    if (m.records.length > RING) m.records.splice(0, m.records.length - RING)
    m.totals.executions += 1
    m.totals.last = now
  })
  update(path.join(root, '.claude/session-state.json'), { message_count: 0 }, (s) => {
    s.message_count = (s.message_count ?? 0) + 1
    s.last_activity = now
  })
})
