#!/usr/bin/env node
'use strict'
// npm run soak [-- --minutes N] [--sample-seconds S] [--json FILE] [--max-growth-mb M]
//
// A DhtPromClient (this package, in a child process: scripts/soak/server.js) on a loopback
// hyperdht testnet, scraped without pause by the real JS scraper (dht-prom-client/scraper
// over protomux-rpc-client) with metrics of 1 KB to 2 MB, registering its alias with the
// scraper's real alias server, while hostile peers keep at it: handshakes from random keys,
// and connections with the scraper's key that send garbage frames, unknown methods, or
// hundreds of requests they never read. The child's RSS, heap and descriptors are sampled
// throughout. Default 30 minutes. Exits non-zero on a failed scrape, on a handshake from a
// stranger that opens, or when RSS grows after the warm-up (see summarise()) by more than
// --max-growth-mb (default 32).
//
// The addon is loaded from a copy of the built .node file (whatever `npm run build` or
// `build:debug` left), so that a rebuild during a long run cannot pull it from under it.
const { spawn } = require('child_process')
const crypto = require('crypto')
const fs = require('fs')
const os = require('os')
const path = require('path')
const readline = require('readline')
const createTestnet = require('hyperdht/testnet')
const HyperDHT = require('hyperdht')
const Hyperswarm = require('hyperswarm')
const AliasRpcServer = require('dht-prom-alias-rpc')
const ProtomuxRpcClient = require('protomux-rpc-client')
const ReferenceScraper = require('dht-prom-client/scraper')

const HOST = '127.0.0.1'
const SIZES = [1024, 16 * 1024, 256 * 1024, 1024 * 1024, 2 * 1024 * 1024]
const ROOT = path.join(__dirname, '..', '..')

function parseArgs (argv) {
  const opts = { minutes: 30, sampleSeconds: null, json: null, maxGrowthMb: 32 }
  for (let i = 0; i < argv.length; i++) {
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`)
      return argv[++i]
    }
    switch (argv[i]) {
      case '--minutes': opts.minutes = Number(value()); break
      case '--sample-seconds': opts.sampleSeconds = Number(value()); break
      case '--json': opts.json = value(); break
      case '--max-growth-mb': opts.maxGrowthMb = Number(value()); break
      default: throw new Error(`unknown argument ${argv[i]} (see the top of ${__filename})`)
    }
  }
  if (!(opts.minutes > 0)) throw new Error('--minutes must be a positive number')
  // About 60 samples a run, 1 to 30 s apart.
  if (opts.sampleSeconds === null) opts.sampleSeconds = Math.min(30, Math.max(1, opts.minutes))
  return opts
}

// The built addon, copied where no rebuild reaches it.
function copyBinary () {
  const name = fs.readdirSync(ROOT).find((f) => /^dht-prom-client-rs\..*\.node$/.test(f))
  if (!name) throw new Error('no built addon in the package root: npm run build:debug (or build) first')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dht-prom-soak-'))
  const copy = path.join(dir, name)
  fs.copyFileSync(path.join(ROOT, name), copy)
  return { dir, copy, name }
}

class Child {
  constructor (args, binary) {
    this.waiters = []
    this.stderr = ''
    this.exited = null
    this.proc = spawn(process.execPath, [path.join(__dirname, 'server.js'), JSON.stringify(args)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: binary }
    })
    this.proc.stdin.on('error', () => {})
    readline.createInterface({ input: this.proc.stdout }).on('line', (line) => {
      let msg
      try { msg = JSON.parse(line) } catch { msg = { type: 'stdout', line } }
      const i = this.waiters.findIndex((w) => w.type === msg.type || msg.type === 'error')
      if (i !== -1) this.waiters.splice(i, 1)[0].resolve(msg)
    })
    this.proc.stderr.on('data', (d) => { this.stderr = (this.stderr + d).slice(-4000) })
    this.proc.on('exit', (code, signal) => {
      this.exited = { code, signal }
      for (const w of this.waiters.splice(0)) w.reject(new Error(`soak server exited (${code ?? signal}): ${this.stderr}`))
    })
  }

  request (msg, type, timeoutMs = 30000) {
    return new Promise((resolve, reject) => {
      if (this.exited) return reject(new Error(`soak server exited: ${this.stderr}`))
      const timer = setTimeout(() => reject(new Error(`no '${type}' from the soak server within ${timeoutMs} ms`)), timeoutMs)
      this.waiters.push({
        type,
        resolve: (m) => {
          clearTimeout(timer)
          if (m.type === 'error') reject(new Error(m.message))
          else resolve(m)
        },
        reject: (e) => { clearTimeout(timer); reject(e) }
      })
      if (msg) this.proc.stdin.write(JSON.stringify(msg) + '\n')
    })
  }
}

// Unref'd: a timer left over from a race must not hold the process open at the end (the
// child, the testnet and the sockets keep it running until then).
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms).unref())

// protomux + protomux-rpc frames, as a JS scraper writes them (WIRE-NOTES.md).
const uint = (n) => n <= 0xfc ? Buffer.from([n]) : Buffer.from([0xfd, n & 0xff, n >> 8])
const str = (s) => Buffer.concat([uint(Buffer.byteLength(s)), Buffer.from(s)])
const OPEN = Buffer.concat([Buffer.from([0, 1, 1]), str('prometheus-metrics'), Buffer.from([0])])
const request = (id, method = 'metrics') => Buffer.concat([Buffer.from([1, 0]), uint(id), str(method), Buffer.from([1, 1])])

// Hostile connections with the scraper's own key, one kind after another.
const ABUSES = [
  ['unknown control type', () => [OPEN, Buffer.from('0009', 'hex')]],
  ['batch item overrunning its frame', () => [OPEN, Buffer.from('000001ffffffffffffffffff00', 'hex')]],
  ['unknown methods', () => [OPEN, ...Array.from({ length: 50 }, (_, i) => request(i + 1, 'nope' + i))]],
  ['200 requests never read', () => [OPEN, ...Array.from({ length: 200 }, (_, i) => request(i + 1))]],
  ['random bytes', () => [crypto.randomBytes(64)]]
]

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  const durationMs = opts.minutes * 60 * 1000
  const binary = copyBinary()
  const testnet = await createTestnet(3, { host: HOST })
  const bootstrap = testnet.bootstrap
  const dhts = []
  const createDht = (o = {}) => {
    const dht = new HyperDHT({ bootstrap, host: HOST, ...o })
    dhts.push(dht)
    return dht
  }

  const scraperKeyPair = HyperDHT.keyPair()
  const secret = crypto.randomBytes(32)
  // The scraper side's alias server, as dht-prometheus runs it.
  const swarm = new Hyperswarm({ keyPair: scraperKeyPair, dht: createDht({ keyPair: scraperKeyPair }) })
  let aliases = 0
  // eslint-disable-next-line no-new
  new AliasRpcServer(swarm, secret, async () => { aliases++; return aliases === 1 })
  await swarm.listen()

  const child = new Child({
    bootstrap,
    scraperPublicKey: scraperKeyPair.publicKey.toString('hex'),
    secret: secret.toString('hex'),
    sizes: SIZES,
    registerIntervalMs: Math.max(5000, Math.round(durationMs / 30))
  }, binary.copy)
  const { publicKey: hex } = await child.request(null, 'ready', 60000)
  const clientPublicKey = Buffer.from(hex, 'hex')

  const rpc = new ProtomuxRpcClient(createDht({ keyPair: scraperKeyPair }), { requestTimeout: 20000 })
  const scraper = new ReferenceScraper(rpc, clientPublicKey)
  const stats = { scrapes: 0, bytes: 0, errors: 0, errorMessages: [], bySize: {}, handshakes: 0, handshakesFailed: 0, abuses: 0 }
  let stopping = false

  async function scrapeLoop () {
    while (!stopping) {
      try {
        const res = await scraper.requestMetrics({ timeout: 20000 })
        const size = res.success ? Number(/soak_size_bytes (\d+)/.exec(res.metrics)?.[1]) : NaN
        if (!res.success || res.metrics.length !== size) throw new Error(`bad reply: ${JSON.stringify(res).slice(0, 200)}`)
        stats.scrapes++
        stats.bytes += size
        stats.bySize[size] = (stats.bySize[size] || 0) + 1
      } catch (err) {
        stats.errors++
        if (stats.errorMessages.length < 10) stats.errorMessages.push(String(err.message || err))
        await sleep(100)
      }
    }
  }

  // Handshakes from random keys, a few a second, at most 8 at once.
  const attacker = createDht()
  async function handshakeLoop () {
    const inFlight = new Set()
    while (!stopping) {
      if (inFlight.size < 8) {
        const socket = attacker.connect(clientPublicKey, { keyPair: HyperDHT.keyPair() })
        stats.handshakes++
        const done = new Promise((resolve) => {
          socket.on('error', () => { stats.handshakesFailed++; resolve() })
          socket.on('open', () => { stats.handshakesOpened = (stats.handshakesOpened || 0) + 1; socket.destroy(); resolve() })
          socket.on('close', resolve)
        })
        inFlight.add(done)
        done.then(() => inFlight.delete(done))
      }
      await sleep(200)
    }
    await Promise.all([...inFlight])
  }

  // A connection with the scraper's key misbehaving, every 2 s.
  const abuser = createDht({ keyPair: scraperKeyPair })
  async function abuseLoop () {
    let n = 0
    while (!stopping) {
      const frames = ABUSES[n++ % ABUSES.length][1]()
      const socket = abuser.connect(clientPublicKey, { keyPair: scraperKeyPair })
      socket.on('error', () => {})
      socket.on('data', () => {}) // read, except for the kinds that never read: paused below
      const closed = new Promise((resolve) => socket.once('close', resolve))
      const opened = await Promise.race([new Promise((resolve) => socket.once('open', () => resolve(true))), closed.then(() => false), sleep(10000).then(() => false)])
      if (opened) {
        if (frames.length > 100) socket.pause()
        for (const frame of frames) socket.write(frame)
        stats.abuses++
      }
      await Promise.race([closed, sleep(1500)])
      socket.destroy()
      await Promise.race([closed, sleep(5000)])
      await sleep(500)
    }
  }

  const samples = []
  const started = Date.now()
  async function sample () {
    const s = await child.request({ type: 'sample' }, 'sample')
    const row = {
      t: Math.round((Date.now() - started) / 1000),
      rssMb: +(s.rss / 1048576).toFixed(1),
      heapMb: +(s.heapUsed / 1048576).toFixed(1),
      fds: s.fds,
      scrapes: stats.scrapes,
      errors: stats.errors,
      mb: +(stats.bytes / 1048576).toFixed(0),
      handshakes: stats.handshakes,
      abuses: stats.abuses,
      blocks: s.own.firewall_blocks_total ?? 0,
      hsDropped: s.own.handshakes_dropped_total ?? 0,
      dgDropped: s.own.datagrams_dropped_total ?? 0,
      protocolErrors: s.events['connection-error:ERR_PROTOCOL'] ?? 0,
      open: s.own.open_connections ?? 0,
      pending: s.own.metrics_pending ?? 0
    }
    samples.push(row)
    console.log(Object.entries(row).map(([k, v]) => `${k}=${v}`).join(' '))
    return row
  }

  console.log(`soak: ${opts.minutes} min, a sample every ${opts.sampleSeconds} s, metrics of ${SIZES.map((s) => s / 1024 + ' KiB').join(', ')}; addon ${binary.name} (copied)`)
  await sample()
  const loops = [scrapeLoop(), handshakeLoop(), abuseLoop()]
  while (Date.now() - started < durationMs) {
    await sleep(Math.min(opts.sampleSeconds * 1000, Math.max(0, durationMs - (Date.now() - started))))
    await sample()
  }
  stopping = true
  await Promise.race([Promise.all(loops), sleep(30000)])
  const last = await sample()
  const { ms: closeMs } = await child.request({ type: 'close' }, 'closed')

  await rpc.close()
  await swarm.destroy()
  for (const dht of dhts) await dht.destroy()
  await testnet.destroy()
  fs.rmSync(binary.dir, { recursive: true, force: true })

  const summary = summarise(samples, opts, stats, closeMs, last)
  console.log('\n' + summary.table)
  console.log(summary.text)
  if (opts.json) fs.writeFileSync(opts.json, JSON.stringify({ opts, stats, samples, summary: summary.figures }, null, 2))
  process.exitCode = summary.ok ? 0 : 1
}

// Warm-up is the first sixth of the run. What follows is split in two halves: flat means
// the highest RSS of the second half is within --max-growth-mb of the highest of the
// first. Peaks, not single samples: a connection that does not read its replies holds
// up to its send budget for a moment (tens of MB with 2 MB metrics), in either half.
function summarise (samples, opts, stats, closeMs, last) {
  const warmIndex = Math.max(1, Math.floor(samples.length / 6))
  const warm = samples[Math.min(warmIndex, samples.length - 1)]
  const after = samples.slice(warmIndex)
  const half = Math.max(1, Math.floor(after.length / 2))
  const first = after.slice(0, half)
  const second = after.slice(half).length > 0 ? after.slice(half) : first
  const peak = (rows) => Math.max(...rows.map((s) => s.rssMb))
  const low = (rows) => Math.min(...rows.map((s) => s.rssMb))
  // Least-squares slope of RSS after the warm-up, in MB per hour.
  const n = after.length
  const mt = after.reduce((a, s) => a + s.t, 0) / n
  const mr = after.reduce((a, s) => a + s.rssMb, 0) / n
  const cov = after.reduce((a, s) => a + (s.t - mt) * (s.rssMb - mr), 0)
  const vt = after.reduce((a, s) => a + (s.t - mt) ** 2, 0)
  const slope = vt > 0 ? (cov / vt) * 3600 : 0
  const growth = +(peak(second) - peak(first)).toFixed(1)
  const figures = {
    minutes: opts.minutes,
    scrapes: stats.scrapes,
    scrapedMb: +(stats.bytes / 1048576).toFixed(0),
    bySize: stats.bySize,
    errors: stats.errors,
    errorMessages: stats.errorMessages,
    handshakes: stats.handshakes,
    handshakesOpened: stats.handshakesOpened || 0,
    abuses: stats.abuses,
    rssStartMb: samples[0].rssMb,
    rssAfterWarmupMb: warm.rssMb,
    rssFirstHalfMb: { low: low(first), peak: peak(first) },
    rssSecondHalfMb: { low: low(second), peak: peak(second) },
    rssEndMb: last.rssMb,
    growthAfterWarmupMb: growth,
    slopeMbPerHour: +slope.toFixed(1),
    fdsStart: samples[0].fds,
    fdsEnd: last.fds,
    firewallBlocks: last.blocks,
    handshakesDropped: last.hsDropped,
    datagramsDropped: last.dgDropped,
    protocolErrors: last.protocolErrors,
    metricsPendingEnd: last.pending,
    closeMs
  }
  const ok = stats.errors === 0 && !figures.handshakesOpened && growth <= opts.maxGrowthMb
  // About ten rows for the README: minutes, RSS, scrapes, errors.
  const step = Math.max(1, Math.round(samples.length / 10))
  const rows = samples.filter((_, i) => i % step === 0 || i === samples.length - 1)
  const table = ['| Minute | RSS (MB) | Heap (MB) | fds | Scrapes | Errors | Firewall blocks | Protocol errors |', '|---|---|---|---|---|---|---|---|']
    .concat(rows.map((s) => `| ${(s.t / 60).toFixed(1)} | ${s.rssMb} | ${s.heapMb} | ${s.fds} | ${s.scrapes} | ${s.errors} | ${s.blocks} | ${s.protocolErrors} |`))
    .join('\n')
  const text = `soak ${ok ? 'passed' : 'FAILED'}: ${JSON.stringify(figures)}`
  return { ok, figures, table, text }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
