'use strict'
// Shared by the UDX interop tests (__test__/udx-interop.test.js) and the UDX benchmark
// (benchmark/udx.js): the data pattern and checksum the Rust peers use
// (crates/udx/examples/common/peer.rs), the modes run on a udx-native (C libudx) stream,
// and a child-process wrapper that speaks the peers' JSON-lines protocol.
const path = require('path')
const { spawn, execFileSync } = require('child_process')
const readline = require('readline')

// --- pattern and checksum (keep in step with common/peer.rs) ---

let patternCache = Buffer.alloc(0)

// The first `len` bytes of the xorshift32 pattern (a prefix of one endless stream).
function pattern (len) {
  if (patternCache.length < len) {
    const buf = Buffer.alloc(Math.ceil(len / 4) * 4)
    let x = 0x9E3779B9
    for (let i = 0; i < buf.length; i += 4) {
      x = (x ^ (x << 13)) >>> 0
      x = (x ^ (x >>> 17)) >>> 0
      x = (x ^ (x << 5)) >>> 0
      buf.writeUInt32LE(x, i)
    }
    patternCache = buf
  }
  return patternCache.subarray(0, len)
}

// FNV-1a 64 over one or more buffers, as hex. The 64-bit state is four 16-bit limbs so
// every intermediate stays a small integer (a version on doubles ran 50x slower in Jest).
function fnv64 (...bufs) {
  let h0 = 0x2325
  let h1 = 0x8422
  let h2 = 0x9ce4
  let h3 = 0xcbf2
  for (const buf of bufs) {
    for (let i = 0; i < buf.length; i++) {
      h0 ^= buf[i]
      // h * 0x100000001b3 mod 2^64: the prime is 0x1b3 + 0x100 * 2^32 (limb 2).
      const t0 = h0 * 0x1b3
      const t1 = h1 * 0x1b3 + (t0 >>> 16)
      const t2 = h2 * 0x1b3 + (t1 >>> 16) + h0 * 0x100
      const t3 = h3 * 0x1b3 + (t2 >>> 16) + h1 * 0x100
      h0 = t0 & 0xffff
      h1 = t1 & 0xffff
      h2 = t2 & 0xffff
      h3 = t3 & 0xffff
    }
  }
  return [h3, h2, h1, h0].map((x) => x.toString(16).padStart(4, '0')).join('')
}

function percentile (sorted, p) {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

function median (values) {
  const s = [...values].sort((a, b) => a - b)
  if (s.length === 0) return NaN
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

// --- a udx-native stream running one of the peers' modes ---

// Resolves once the stream has closed, with what it saw; never rejects (errors are data).
function watchClose (stream) {
  const seen = { ended: false, finished: false, error: null, closed: false }
  stream.on('end', () => { seen.ended = true })
  stream.on('finish', () => { seen.finished = true })
  stream.on('error', (err) => { seen.error = err })
  const closed = new Promise((resolve) => stream.once('close', () => { seen.closed = true; resolve(seen) }))
  return { seen, closed }
}

// Reads exactly n bytes from a stream in flowing mode, chunk by chunk.
function makeReader (stream) {
  const chunks = []
  let have = 0
  let waiter = null
  let ended = false
  stream.on('data', (d) => {
    chunks.push(d)
    have += d.length
    if (waiter && have >= waiter.n) { const w = waiter; waiter = null; w.resolve(take(w.n)) }
  })
  stream.on('end', () => {
    ended = true
    if (waiter) { const w = waiter; waiter = null; w.reject(new Error(`stream ended with ${have} of ${w.n} bytes`)) }
  })
  stream.on('close', () => {
    if (waiter) { const w = waiter; waiter = null; w.reject(new Error('stream closed while reading')) }
  })
  function take (n) {
    const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)
    chunks.length = 0
    const out = all.subarray(0, n)
    if (all.length > n) chunks.push(all.subarray(n))
    have -= n
    return out
  }
  return {
    read (n) {
      if (have >= n) return Promise.resolve(take(n))
      if (ended) return Promise.reject(new Error(`stream ended with ${have} of ${n} bytes`))
      return new Promise((resolve, reject) => { waiter = { n, resolve, reject } })
    },
    get buffered () { return have },
    get ended () { return ended }
  }
}

async function writeAll (stream, buf, chunk = 65536) {
  for (let i = 0; i < buf.length; i += chunk) {
    if (!stream.write(buf.subarray(i, i + chunk))) {
      await new Promise((resolve) => stream.once('drain', resolve))
    }
  }
}

function parseOps (spec) {
  return spec.split(',').map((op) => {
    const m = /^(\d+):(\d+)(?:x(\d+))?$/.exec(op)
    if (!m) throw new Error(`bad ops ${spec}`)
    return { req: Number(m[1]), reply: Number(m[2]), count: m[3] ? Number(m[3]) : 1 }
  })
}

// Runs `mode` on a connected udx-native stream; resolves when the stream has closed, with
// the same fields the Rust peers report (received, sent, hash, patternOk, timesUs), plus
// `close` ('Done' when it ended cleanly on both sides) and the events seen.
async function runNativeMode (stream, mode, args = []) {
  const { seen, closed } = watchClose(stream)
  const out = { mode, received: 0, sent: 0 }
  const start = process.hrtime.bigint()
  try {
    if (mode === 'sink') {
      const chunks = []
      stream.on('data', (d) => { chunks.push(d); out.received += d.length })
      await new Promise((resolve, reject) => { stream.once('end', resolve); stream.once('close', () => reject(new Error('closed before end'))) })
      const all = Buffer.concat(chunks)
      out.hash = fnv64(all)
      out.patternOk = all.equals(pattern(all.length))
      out.data = all
      stream.end()
    } else if (mode === 'source') {
      const n = Number(args[0])
      const data = pattern(n)
      stream.on('data', (d) => { out.received += d.length })
      await writeAll(stream, data)
      stream.end()
      out.sent = n
      out.hash = fnv64(data)
    } else if (mode === 'echo') {
      stream.on('data', (d) => { out.received += d.length; out.sent += d.length; stream.write(d) })
      stream.once('end', () => stream.end())
    } else if (mode === 'rtt') {
      const size = Number(args[0])
      const count = Number(args[1])
      const msg = pattern(size)
      const reader = makeReader(stream)
      out.timesUs = []
      out.patternOk = true
      for (let i = 0; i < count; i++) {
        const t = process.hrtime.bigint()
        stream.write(msg)
        const back = await reader.read(size)
        out.timesUs.push(Number(process.hrtime.bigint() - t) / 1000)
        if (!back.equals(msg)) out.patternOk = false
        out.sent += size
        out.received += size
      }
      stream.end()
    } else if (mode === 'serve') {
      const reader = makeReader(stream)
      stream.once('end', () => {})
      for (;;) {
        let head
        try {
          head = await reader.read(8)
        } catch (err) {
          if (reader.ended && reader.buffered === 0) break
          throw err
        }
        const req = head.readUInt32LE(0)
        const reply = head.readUInt32LE(4)
        if (req > 0) await reader.read(req)
        out.received += 8 + req
        await writeAll(stream, pattern(reply))
        out.sent += reply
      }
      stream.end()
    } else if (mode === 'client') {
      const ops = parseOps(args[0])
      const reader = makeReader(stream)
      out.timesUs = []
      out.patternOk = true
      for (const op of ops) {
        const frame = Buffer.alloc(8 + op.req)
        frame.writeUInt32LE(op.req, 0)
        frame.writeUInt32LE(op.reply, 4)
        pattern(op.req).copy(frame, 8)
        const expect = pattern(op.reply)
        for (let i = 0; i < op.count; i++) {
          const t = process.hrtime.bigint()
          stream.write(frame)
          const got = await reader.read(op.reply)
          out.timesUs.push(Number(process.hrtime.bigint() - t) / 1000)
          if (!got.equals(expect)) out.patternOk = false
          out.sent += frame.length
          out.received += op.reply
        }
      }
      stream.end()
    } else {
      throw new Error(`unknown mode ${mode}`)
    }
  } catch (err) {
    out.error = err.message
    stream.destroy()
  }
  await closed
  out.elapsedUs = Number(process.hrtime.bigint() - start) / 1000
  out.events = { end: seen.ended, finish: seen.finished, close: seen.closed, error: seen.error ? String(seen.error.message || seen.error) : null }
  out.close = !out.error && seen.ended && seen.finished && !seen.error ? 'Done' : (seen.error ? `Error: ${seen.error.message || seen.error}` : 'NotDone')
  out.ok = out.close === 'Done' && out.patternOk !== false
  return out
}

// --- child peers speaking the JSON-lines protocol ---

class PeerProcess {
  constructor (command, args, { name = path.basename(command), env } = {}) {
    this.name = name
    this.child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: env || process.env })
    this.lines = []
    this.waiters = []
    this.stderr = ''
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => { this.exitCode = code; this.signal = signal; resolve({ code, signal }) })
    })
    this.child.once('exit', () => this._flushWaiters())
    this.child.stdin.on('error', () => {})
    this.child.stderr.on('data', (d) => { this.stderr = (this.stderr + d).slice(-8000) })
    readline.createInterface({ input: this.child.stdout }).on('line', (line) => {
      let msg
      try { msg = JSON.parse(line) } catch { msg = { event: 'text', text: line } }
      this.lines.push(msg)
      this._flushWaiters()
    })
  }

  _flushWaiters () {
    for (const w of [...this.waiters]) {
      const i = this.lines.findIndex(w.match)
      if (i !== -1) {
        const [msg] = this.lines.splice(i, 1)
        this.waiters.splice(this.waiters.indexOf(w), 1)
        clearTimeout(w.timer)
        w.resolve(msg)
      } else if (this.exitCode !== undefined || this.signal) {
        this.waiters.splice(this.waiters.indexOf(w), 1)
        clearTimeout(w.timer)
        w.reject(new Error(`${this.name} exited (${this.exitCode ?? this.signal}) before ${w.what}; stderr: ${this.stderr}`))
      }
    }
  }

  // Resolves with the next line whose event is `event` (bounded by `timeoutMs`).
  next (event, timeoutMs = 30000) {
    return new Promise((resolve, reject) => {
      const w = { match: (m) => m.event === event || (event === 'result' && m.event === 'error'), what: event, resolve, reject }
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1)
        reject(new Error(`${this.name}: no '${event}' within ${timeoutMs} ms; stderr: ${this.stderr}`))
      }, timeoutMs)
      this.waiters.push(w)
      this._flushWaiters()
    })
  }

  send (line) {
    this.child.stdin.write(line + '\n')
  }

  async exit (timeoutMs = 5000) {
    if (this.exitCode !== undefined || this.signal) return this.exited
    this.send('exit')
    this.child.stdin.end()
    const timer = setTimeout(() => this.kill(), timeoutMs)
    const res = await this.exited
    clearTimeout(timer)
    return res
  }

  kill () {
    if (this.exitCode === undefined && !this.signal) this.child.kill('SIGKILL')
  }
}

// --- building the Rust peer ---

const ROOT = path.join(__dirname, '..')

function hostTriple () {
  return execFileSync('rustc', ['-vV'], { encoding: 'utf8' }).match(/^host: (.+)$/m)[1]
}

// Builds crates/udx's udx_peer example for the host triple (the target dir `npm test`
// already uses, so dependencies are shared) and returns the binary's path.
function buildUdxPeer ({ release = false } = {}) {
  const triple = hostTriple()
  const args = ['build', '-p', 'udx', '--example', 'udx_peer', '--target', triple]
  if (release) args.push('--release')
  execFileSync('cargo', args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] })
  return path.join(ROOT, 'target', triple, release ? 'release' : 'debug', 'examples', 'udx_peer')
}

module.exports = {
  pattern,
  fnv64,
  percentile,
  median,
  watchClose,
  makeReader,
  writeAll,
  parseOps,
  runNativeMode,
  PeerProcess,
  buildUdxPeer,
  hostTriple,
  ROOT
}
