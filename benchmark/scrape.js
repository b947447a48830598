'use strict'
// End to end, ours against the JS reference (dht-prom-client 2.1.0) in the same run: every
// figure of issue 10's end-to-end targets. The scraper is the real JS one
// (dht-prom-client/scraper over protomux-rpc-client) in this process; each client runs in
// a child process (client-process.js), so that its CPU time, peak RSS and event-loop
// utilisation are its own. Loopback hyperdht testnet of 3 nodes. Run after `npm run build`
// (release):
//   node benchmark/scrape.js [--rounds 5] [--phases 1k,100k,2m,throughput,close]
//                            [--impls rust,reference] [--json out.json]
//
// A round runs every phase for both clients, one after the other (the order of the two
// alternates between rounds); each phase is a fresh client process, first scrape (connect
// included) and warm-up excluded from the figures, and ends with close() while the scraper
// is connected. Every figure printed is the median over the rounds, except the worst cases
// (max), which pool every round.
const path = require('path')
const os = require('os')
const fs = require('fs')
const { fork } = require('child_process')
const { once } = require('events')
const { parseArgs } = require('util')
const { performance } = require('perf_hooks')
const HyperDHT = require('hyperdht')
const createTestnet = require('hyperdht/testnet')
const ProtomuxRpcClient = require('protomux-rpc-client')
const Scraper = require('dht-prom-client/scraper')

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    phases: { type: 'string', default: '1k,100k,2m,throughput' },
    impls: { type: 'string', default: 'rust,reference' },
    'scrapes-1k': { type: 'string', default: '1000' },
    'scrapes-100k': { type: 'string', default: '100' },
    'scrapes-2m': { type: 'string', default: '60' },
    'throughput-ms': { type: 'string', default: '2000' },
    'in-flight': { type: 'string', default: '16' },
    json: { type: 'string' },
    'allow-debug': { type: 'boolean', default: false }
  }
})
const ROUNDS = Number(values.rounds)
const IMPLS = values.impls.split(',')
const IN_FLIGHT = Number(values['in-flight'])
const PHASES = {
  '1k': { label: '1 KB', size: 1024, scrapes: Number(values['scrapes-1k']), warmup: 20 },
  '100k': { label: '100 KB', size: 102400, scrapes: Number(values['scrapes-100k']), warmup: 10 },
  '2m': { label: '2 MB', size: 2097152, scrapes: Number(values['scrapes-2m']), warmup: 5 },
  throughput: { label: `1 KB, ${IN_FLIGHT} in flight`, size: 1024, ms: Number(values['throughput-ms']), warmup: 400 }
}
const PHASE_NAMES = values.phases.split(',')
for (const name of PHASE_NAMES) if (!PHASES[name]) throw new Error(`unknown phase ${name}`)

// The addon this run measures: a private copy, loaded by every client process through
// napi-rs's NAPI_RS_NATIVE_LIBRARY_PATH, so that a rebuild in the working tree while the
// run goes on (another `npm run build:debug`) cannot swap the binary under it.
function addonCopy () {
  const { napi } = require('../package.json')
  const built = process.env.NAPI_RS_NATIVE_LIBRARY_PATH ||
    path.join(__dirname, '..', `${napi.binaryName}.${require('../lib/platform').platformKey()}.node`)
  const bytes = fs.readFileSync(built)
  if (hasDebugInfo(bytes) && !values['allow-debug']) {
    throw new Error(`${built} is a debug build (${(bytes.length / 2 ** 20).toFixed(0)} MiB): run \`npm run build\` first, or pass --allow-debug`)
  }
  const copy = path.join(os.tmpdir(), `dht-prom-client-rs-bench-${process.pid}.node`)
  fs.writeFileSync(copy, bytes, { mode: 0o755 })
  const { mtime } = fs.statSync(built)
  return { copy, description: `${path.basename(built)} (${(bytes.length / 2 ** 20).toFixed(1)} MiB, built ${mtime.toISOString()})` }
}

// A debug build carries a .debug_info section; `npm run build` (release) strips it. ELF
// (64-bit, little-endian) only; elsewhere nothing is checked.
function hasDebugInfo (elf) {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) return false
  const shoff = Number(elf.readBigUInt64LE(0x28))
  const shentsize = elf.readUInt16LE(0x3a)
  const shnum = elf.readUInt16LE(0x3c)
  const names = Number(elf.readBigUInt64LE(shoff + elf.readUInt16LE(0x3e) * shentsize + 0x18))
  for (let i = 0; i < shnum; i++) {
    const at = names + elf.readUInt32LE(shoff + i * shentsize)
    if (elf.toString('latin1', at, at + 12) === '.debug_info\0') return true
  }
  return false
}

const REQUEST_TIMEOUT_MS = 10000
const GOODBYE_WAIT_MS = 5000

const nowNs = () => process.hrtime.bigint()
const msSince = (startNs) => Number(nowNs() - startNs) / 1e6

function percentile (sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

function median (list) {
  const sorted = list.filter((v) => v !== null && v !== undefined && !Number.isNaN(v)).sort((a, b) => a - b)
  if (sorted.length === 0) return null
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

function withTimeout (promise, ms, what) {
  let timer
  return Promise.race([
    promise,
    new Promise((resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms) })
  ]).finally(() => clearTimeout(timer))
}

function ask (child, type) {
  const answer = new Promise((resolve) => {
    child.on('message', function listener (msg) {
      if (msg.type === type) { child.off('message', listener); resolve(msg) }
    })
  })
  child.send({ type })
  return withTimeout(answer, 30000, `client process '${type}'`)
}

// The scraper side of every connection, by server key, as protomux-rpc-client opens it:
// when it closed and how (a clean end, or the error the transport gave).
function watchConnections (dht) {
  const byKey = new Map()
  const connect = dht.connect.bind(dht)
  dht.connect = (key, opts) => {
    const socket = connect(key, opts)
    const record = { socket, closedNs: null, ended: false, error: null }
    socket.on('end', () => { record.ended = true })
    socket.on('error', (err) => { record.error = err.code || err.message })
    socket.once('close', () => { record.closedNs = nowNs() })
    const hex = Buffer.from(key).toString('hex')
    if (!byKey.has(hex)) byKey.set(hex, [])
    byKey.get(hex).push(record)
    return socket
  }
  return byKey
}

async function latencyPhase (scraper, phase) {
  const samples = []
  let failed = 0
  for (let i = 0; i < phase.scrapes; i++) {
    const start = nowNs()
    try {
      const res = await scraper.requestMetrics()
      if (res.success) samples.push(msSince(start))
      else failed++
    } catch {
      failed++
    }
  }
  samples.sort((a, b) => a - b)
  return {
    scrapes: samples.length,
    failed,
    p50Ms: percentile(samples, 50),
    p99Ms: percentile(samples, 99),
    maxMs: samples[samples.length - 1],
    samples
  }
}

// IN_FLIGHT scrapers in a loop on one connection until the deadline.
async function throughputPhase (scraper, ms) {
  let done = 0
  let failed = 0
  const elu = performance.eventLoopUtilization()
  const start = nowNs()
  const deadline = performance.now() + ms
  async function worker () {
    while (performance.now() < deadline) {
      try {
        const res = await scraper.requestMetrics()
        if (res.success) done++
        else failed++
      } catch {
        failed++
      }
    }
  }
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker))
  const wallMs = msSince(start)
  return {
    scrapes: done,
    failed,
    perSecond: done / (wallMs / 1000),
    scraperElu: performance.eventLoopUtilization(elu).utilization
  }
}

async function session (ctx, impl, phaseName) {
  const phase = PHASES[phaseName]
  const child = fork(path.join(__dirname, 'client-process.js'), [
    impl, String(phase.size), ctx.scraperKeyPair.publicKey.toString('hex'), JSON.stringify(ctx.bootstrap)
  ], { env: { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: ctx.addon.copy } })
  const exited = once(child, 'exit')
  try {
    const [ready] = await withTimeout(once(child, 'message'), 30000, `${impl} ready`)
    const serverKey = Buffer.from(ready.publicKey, 'hex')
    const rpc = new ProtomuxRpcClient(ctx.dht, { requestTimeout: REQUEST_TIMEOUT_MS })
    // 16 scrapes in flight must reach the server as 16: the client's own limit allows them.
    if (phaseName === 'throughput' && rpc.maxConcurrentPerService < IN_FLIGHT) {
      throw new Error(`protomux-rpc-client allows only ${rpc.maxConcurrentPerService} requests in flight`)
    }
    const scraper = new Scraper(rpc, serverKey)

    // The first scrape includes the connection: DHT lookup, handshake, secret stream.
    const start = nowNs()
    const first = await scraper.requestMetrics()
    const firstScrapeMs = msSince(start)
    if (!first.success || Buffer.byteLength(first.metrics) !== ready.bytes) throw new Error(`${impl}: bad reply`)

    if (phaseName === 'throughput') {
      await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
        for (let i = 0; i < phase.warmup / IN_FLIGHT; i++) await scraper.requestMetrics()
      }))
    } else {
      for (let i = 0; i < phase.warmup; i++) await scraper.requestMetrics()
    }

    await ask(child, 'begin')
    const measured = phaseName === 'throughput'
      ? await throughputPhase(scraper, phase.ms)
      : await latencyPhase(scraper, phase)
    const client = await ask(child, 'end')

    // close() with the scraper connected: its duration, and when (and how) the scraper's
    // side of the connection ended.
    const connections = ctx.connections.get(serverKey.toString('hex')) || []
    const live = connections.filter((c) => c.closedNs === null)
    const closing = await ask(child, 'close')
    const goodbye = await Promise.all(live.map((c) => withTimeout(
      c.closedNs !== null ? Promise.resolve() : once(c.socket, 'close'), GOODBYE_WAIT_MS, 'scraper connection end'
    ).then(() => c, () => c)))
    const startNs = BigInt(closing.startNs)
    const seen = goodbye.filter((c) => c.closedNs !== null)
    await rpc.close()
    await withTimeout(exited, 10000, `${impl} client process exit`).catch(() => child.kill())

    return {
      impl,
      phase: phaseName,
      firstScrapeMs,
      ...measured,
      clientCpuUsPerScrape: client.cpuMicros / measured.scrapes,
      clientElu: client.elu,
      clientMaxRssMiB: client.maxRssKiB / 1024,
      getMetricsCalls: client.getMetricsCalls,
      closeMs: closing.closeMs,
      connectionsAtClose: live.length,
      goodbyeSeen: live.length > 0 && seen.length === live.length,
      goodbyeMs: seen.length ? Math.max(...seen.map((c) => Number(c.closedNs - startNs) / 1e6)) : null,
      // 'end': the server ended the stream; an error code: the transport's (a UDX destroy
      // is ECONNRESET); 'channel-close': protomux-rpc-client destroyed the socket cleanly
      // after the server closed the RPC channel.
      goodbyeHow: seen.map((c) => (c.ended ? 'end' : c.error || 'channel-close')).join(',') || 'none'
    }
  } catch (err) {
    child.kill()
    throw err
  }
}

const fmt = {
  ms: (v) => (v === null ? 'n/a' : v < 1 ? v.toFixed(3) : v < 100 ? v.toFixed(2) : v.toFixed(0)) + ' ms',
  us: (v) => (v === null ? 'n/a' : v < 1000 ? `${v.toFixed(0)} us` : `${(v / 1000).toFixed(2)} ms`),
  mib: (v) => (v === null ? 'n/a' : `${v.toFixed(0)} MiB`),
  rate: (v) => (v === null ? 'n/a' : `${Math.round(v).toLocaleString('en-US')}/s`),
  ratio: (v) => (v === null ? 'n/a' : v < 0.1 ? `${v.toFixed(3)}x` : `${v.toFixed(2)}x`),
  fraction: (v) => (v === null ? 'n/a' : v.toFixed(3)),
  plain: (v) => (v === null ? 'n/a' : String(v))
}

// [figure, phase, field, aggregate, format, target] — target: (ours, reference) => met?
function figures () {
  const lat = (name, label, p50Target, p99Extra) => [
    [`${label} scrape p50`, name, 'p50Ms', 'median', 'ms', p50Target],
    [`${label} scrape p99`, name, 'p99Ms', 'median', 'ms', p99Extra || null]
  ]
  return [
    ...lat('1k', '1 KB', { text: '<= 1.0x', met: (o, r) => o <= 1.0 * r }),
    ...lat('100k', '100 KB', { text: '<= 0.8x', met: (o, r) => o <= 0.8 * r }),
    ...lat('2m', '2 MB', { text: '<= 0.7x', met: (o, r) => o <= 0.7 * r }, { text: '< 50 ms', met: (o) => o < 50, absolute: true }),
    ['2 MB scrape max (all rounds)', '2m', 'maxMs', 'max', 'ms', { text: '< 50 ms', met: (o) => o < 50, absolute: true }],
    ['2 MB failed samples (all rounds)', '2m', 'failed', 'sum', 'plain', { text: '0', met: (o) => o === 0, absolute: true }],
    ['first scrape, connect included (1 KB)', '1k', 'firstScrapeMs', 'median', 'ms', null],
    [`scrapes/s, ${IN_FLIGHT} in flight, 1 KB`, 'throughput', 'perSecond', 'median', 'rate', { text: '>= 1x', met: (o, r) => o >= r, higherBetter: true }],
    ['client CPU per scrape, 1 KB', '1k', 'clientCpuUsPerScrape', 'median', 'us', { text: '<= 0.5x', met: (o, r) => o <= 0.5 * r }],
    ['client CPU per scrape, 100 KB', '100k', 'clientCpuUsPerScrape', 'median', 'us', null],
    ['client CPU per scrape, 2 MB', '2m', 'clientCpuUsPerScrape', 'median', 'us', null],
    [`client CPU per scrape, ${IN_FLIGHT} in flight`, 'throughput', 'clientCpuUsPerScrape', 'median', 'us', { text: '<= 0.5x', met: (o, r) => o <= 0.5 * r }],
    ['client peak RSS, 1 KB', '1k', 'clientMaxRssMiB', 'median', 'mib', { text: '<= 1x', met: (o, r) => o <= r }],
    ['client peak RSS, 2 MB', '2m', 'clientMaxRssMiB', 'median', 'mib', { text: '<= 1x', met: (o, r) => o <= r }],
    [`client peak RSS, ${IN_FLIGHT} in flight`, 'throughput', 'clientMaxRssMiB', 'median', 'mib', { text: '<= 1x', met: (o, r) => o <= r }],
    ['service event-loop utilisation, throughput run', 'throughput', 'clientElu', 'median', 'fraction', { text: '<= 0.3x', met: (o, r) => o <= 0.3 * r }],
    ['scraper event-loop utilisation, throughput run', 'throughput', 'scraperElu', 'median', 'fraction', null],
    ['close() with the scraper connected (all phases)', '*', 'closeMs', 'median', 'ms', { text: '< 20 ms', met: (o) => o < 20, absolute: true }],
    ['close() worst (all phases, all rounds)', '*', 'closeMs', 'max', 'ms', { text: '< 20 ms', met: (o) => o < 20, absolute: true }],
    ['scraper saw the end, after close() began (worst)', '*', 'goodbyeMs', 'max', 'ms', null],
    ['sessions whose scraper saw the end', '*', 'goodbyeSeen', 'count', 'plain', { text: 'all', met: (o, r, total) => o === total, absolute: true }]
  ]
}

function aggregate (rows, impl, phase, field, how) {
  const list = rows.filter((r) => r.impl === impl && (phase === '*' || r.phase === phase)).map((r) => r[field])
  if (list.length === 0) return null
  if (how === 'median') return median(list)
  if (how === 'max') return Math.max(...list.filter((v) => v !== null))
  if (how === 'sum') return list.reduce((a, b) => a + b, 0)
  if (how === 'count') return list.filter(Boolean).length
  return null
}

function report (rows, env) {
  const ours = IMPLS.includes('rust') ? 'rust' : IMPLS[0]
  const ref = IMPLS.includes('reference') ? 'reference' : null
  const table = []
  for (const [name, phase, field, how, format, target] of figures()) {
    if (phase !== '*' && !PHASE_NAMES.includes(phase)) continue
    const o = aggregate(rows, ours, phase, field, how)
    const r = ref ? aggregate(rows, ref, phase, field, how) : null
    const total = rows.filter((x) => x.impl === ours && (phase === '*' || x.phase === phase)).length
    const ratio = o !== null && r ? o / r : null
    let verdict = ''
    // A ratio target needs the reference in the same run.
    if (target && o !== null && (target.absolute || r !== null)) verdict = (target.met(o, r, total) ? 'met' : 'NOT met') + ` (${target.text})`
    const show = fmt[format]
    table.push({
      figure: name,
      ours: how === 'count' ? `${o}/${total}` : show(o),
      reference: r === null ? 'n/a' : how === 'count' ? `${r}/${rows.filter((x) => x.impl === ref && (phase === '*' || x.phase === phase)).length}` : show(r),
      'ours/reference': how === 'count' || how === 'sum' ? '' : fmt.ratio(ratio),
      target: verdict
    })
  }
  console.log(`\nEnd to end, ${env.date}: ${env.machine}; load ${env.loadBefore} -> ${env.loadAfter}; ${ROUNDS} rounds, ${(env.seconds).toFixed(0)} s; addon ${env.addon}`)
  console.table(table)
  console.log('\n| figure | ours | reference | ours/reference | target |\n|---|---|---|---|---|')
  for (const t of table) console.log(`| ${t.figure} | ${t.ours} | ${t.reference} | ${t['ours/reference']} | ${t.target} |`)
  const how = [...new Set(rows.filter((r) => r.impl === ours).map((r) => r.goodbyeHow))].join(', ')
  const howRef = ref ? [...new Set(rows.filter((r) => r.impl === ref).map((r) => r.goodbyeHow))].join(', ') : ''
  console.log(`\nHow the scraper's side ended: ours ${how}; reference ${howRef}`)
  return table
}

async function main () {
  const started = performance.now()
  const addon = addonCopy()
  const env = {
    addon: addon.description,
    date: new Date().toISOString(),
    machine: `${os.cpus().length} CPUs (${os.cpus()[0].model.trim()}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`,
    loadBefore: os.loadavg().map((l) => l.toFixed(2)).join(' / ')
  }
  const testnet = await createTestnet(3, { host: '127.0.0.1' })
  const scraperKeyPair = HyperDHT.keyPair()
  const dht = new HyperDHT({ bootstrap: testnet.bootstrap, host: '127.0.0.1', keyPair: scraperKeyPair })
  const ctx = { bootstrap: testnet.bootstrap, scraperKeyPair, dht, connections: watchConnections(dht), addon }
  const rows = []
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? IMPLS : [...IMPLS].reverse()
      for (const phase of PHASE_NAMES) {
        for (const impl of order) {
          const row = await session(ctx, impl, phase)
          rows.push(row)
          const { samples, ...brief } = row
          console.error(JSON.stringify({ round, ...brief }))
        }
      }
    }
  } finally {
    await dht.destroy()
    await testnet.destroy()
    fs.rmSync(addon.copy, { force: true })
  }
  env.loadAfter = os.loadavg().map((l) => l.toFixed(2)).join(' / ')
  env.seconds = (performance.now() - started) / 1000
  const table = report(rows, env)
  if (values.json) fs.writeFileSync(values.json, JSON.stringify({ env, table, rows }, null, 2))
}

main().catch((err) => { console.error(err); process.exit(1) })
