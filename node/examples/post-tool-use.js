#!/usr/bin/env node
'use strict'
// A Claude Code PostToolUse hook written with tractatus-lock: it pushes a record onto the
// metrics ring (keeping the last 1000) and counts executions, then counts the message in the
// session state. Each file is read, changed and committed under its own lease, in this process,
// so concurrent sessions (and the `tractatus` CLI) take turns and no update is lost.
//
// Wire it in with settings.json (see settings.json beside this file). Configuration comes from
// the environment and .claude/tractatus-lock.toml, exactly as for the CLI: TRACTATUS_REDIS for
// Redis, or local file locks on this machine when none is configured.

const { updateJson, readHookInput, sessionFromHookInput } = require('tractatus-lock')

const METRICS = '.claude/metrics/hooks-metrics.json'
const SESSION_STATE = '.claude/session-state.json'
const RING = 1000

async function main() {
  const input = await readHookInput()
  const opts = {
    // Hooks run in the project; CLAUDE_PROJECT_DIR says where it is when the cwd moved.
    cwd: process.env.CLAUDE_PROJECT_DIR || input.cwd || process.cwd(),
    session: input.session_id ? sessionFromHookInput(input) : undefined,
  }
  const now = new Date().toISOString()
  const record = {
    ts: now,
    session: input.session_id ?? null,
    event: input.hook_event_name ?? 'PostToolUse',
    tool: input.tool_name ?? null,
    success: !(input.tool_response && input.tool_response.is_error),
    input_bytes: JSON.stringify(input.tool_input ?? null).length,
  }

  // Two files, two leases, taken one each: the updates run side by side, so their commits'
  // disk flushes overlap instead of adding up.
  await Promise.all([
    updateJson(METRICS, (m) => {
      m.records.push(record)
      if (m.records.length > RING) m.records.splice(0, m.records.length - RING)
      m.totals.executions += 1
      m.totals.last = now
    }, { ...opts, initial: { records: [], totals: { executions: 0 } } }),
    updateJson(SESSION_STATE, (s) => {
      s.message_count = (s.message_count ?? 0) + 1
      s.last_activity = now
    }, { ...opts, initial: { message_count: 0 } }),
  ])
}

main().catch((e) => {
  // One line, and never exit 2 (that would block the tool call): the CLI's code, else 1.
  process.stderr.write(`post-tool-use: ${e.message}\n`)
  process.exitCode = e.exitCode && e.exitCode !== 2 ? e.exitCode : 1
})
