'use strict'
// Lab processes: node scripts started inside a lab namespace (`ip netns exec` runs node in
// place, so the child's pid is node's), talking JSON lines over stdin/stdout. A child exits
// when its stdin ends, so none outlives the runner even if the runner is killed.
const { spawn } = require('child_process')
const readline = require('readline')
const path = require('path')

const live = new Set()

class LabProcess {
  constructor (name, ns, script, args) {
    this.name = name
    this.messages = []
    this.stderr = ''
    this.exited = null // { code, signal } once it has exited
    this._waiters = new Set()
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, path.join(__dirname, script), JSON.stringify(args)], {
      stdio: ['pipe', 'pipe', 'pipe']
    })
    live.add(this)
    this.child.stdin.on('error', () => {}) // a child that died: its exit is reported instead
    readline.createInterface({ input: this.child.stdout }).on('line', (line) => {
      let msg
      try { msg = JSON.parse(line) } catch { msg = { type: 'stdout', line } }
      this.messages.push(msg)
      for (const w of this._waiters) w.check()
    })
    this.child.stderr.on('data', (chunk) => {
      this.stderr = (this.stderr + chunk).slice(-8000)
    })
    this.child.on('exit', (code, signal) => {
      this.exited = { code, signal }
      live.delete(this)
      for (const w of this._waiters) w.check()
    })
  }

  send (msg) {
    if (this.exited === null) this.child.stdin.write(JSON.stringify(msg) + '\n')
  }

  // The first message (already received or still to come) of this type that matches filter.
  next (type, timeoutMs, filter = () => true) {
    return new Promise((resolve, reject) => {
      let seen = 0
      const w = {
        check: () => {
          for (; seen < this.messages.length; seen++) {
            const m = this.messages[seen]
            if (m.type === type && filter(m)) return done(null, m)
          }
          if (this.exited !== null) {
            done(new Error(`${this.name} exited (${this.exited.code ?? this.exited.signal}) before '${type}': ${this.stderr.trim().split('\n').slice(-5).join(' | ')}`))
          }
        }
      }
      const timer = setTimeout(() => done(new Error(`no '${type}' from ${this.name} within ${timeoutMs} ms`)), timeoutMs)
      const done = (err, m) => {
        clearTimeout(timer)
        this._waiters.delete(w)
        if (err) reject(err)
        else resolve(m)
      }
      this._waiters.add(w)
      w.check()
    })
  }

  all (type) {
    return this.messages.filter((m) => m.type === type)
  }

  // Ends stdin (the child closes what it opened and exits); SIGKILL if it takes too long.
  async stop (timeoutMs = 5000) {
    if (this.exited !== null) return this.exited
    this.child.stdin.end()
    const exited = new Promise((resolve) => this.child.once('exit', resolve))
    let timer
    const late = new Promise((resolve) => { timer = setTimeout(resolve, timeoutMs, 'late') })
    if (await Promise.race([exited, late]) === 'late') {
      this.kill()
      await exited
    }
    clearTimeout(timer)
    return this.exited
  }

  kill () {
    if (this.exited === null) {
      try { this.child.kill('SIGKILL') } catch {}
    }
  }
}

function killAll () {
  for (const p of live) p.kill()
}

module.exports = { LabProcess, killAll }
