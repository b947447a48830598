'use strict'
// The child side of proc.js: the arguments, JSON lines out, commands in, exit when stdin ends.
const readline = require('readline')

const args = JSON.parse(process.argv[2] || '{}')

function send (msg) {
  process.stdout.write(JSON.stringify(msg) + '\n')
}

// onCommand(msg) for each command; onEnd() once stdin ends, then the process exits (bounded:
// a close that hangs still ends the process).
function serve (onCommand, onEnd) {
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim() === '') return
    let msg
    try { msg = JSON.parse(line) } catch { return send({ type: 'error', message: 'bad command line' }) }
    Promise.resolve()
      .then(() => onCommand(msg))
      .catch((err) => send({ type: 'error', cmd: msg.cmd, message: String(err && err.stack ? err.stack : err) }))
  })
  process.stdin.on('end', () => {
    setTimeout(() => process.exit(0), 4000).unref()
    Promise.resolve()
      .then(onEnd)
      .catch(() => {})
      .then(() => process.exit(0))
  })
}

module.exports = { args, send, serve }
