#!/usr/bin/env node
'use strict'
// UDX transport benchmark: crates/udx, the C libudx (npm udx-native, under JS hyperdht)
// and libudx 1.7.3 side by side, plus the mixed pairs (ours to the C one), on loopback.
// Every endpoint is its own process running the same application code (a request/response
// protocol, see crates/udx/examples/common/peer.rs), so only the transport differs.
//
//   node benchmark/udx.js [--runs 5] [--pairs udx,native,udx-native,native-udx,libudx]
//                         [--rt 500] [--small 20] [--k100 20] [--k2m 10] [--budget 8]
//
// Figures, each the median over --runs runs (pairs interleaved within a run):
// - 1 KiB round trip p50/p99 (one stream, after 20 warm-up round trips);
// - bulk MB/s for 100 KiB and 2 MiB replies, on a fresh stream and after 20 small
//   round trips on the same stream (every real connection starts with small messages);
// - the worst transfer against the median of its kind (pooled over all runs);
// - CPU per operation: each process's own CPU time (Rust: /proc/self schedstat; Node:
//   process.cpuUsage) over its sessions.
// Builds the Rust peers in release mode first (cargo). Ratios are to udx-native.
const os = require('os')
const fs = require('fs')
const path = require('path')
const { execFileSync } = require('child_process')
const { parseArgs } = require('util')
const { PeerProcess, buildUdxPeer, median, percentile } = require('./udx-lib')

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    pairs: { type: 'string', default: 'udx,native,udx-native,native-udx,libudx' },
    rt: { type: 'string', default: '500' },
    small: { type: 'string', default: '20' },
    k100: { type: 'string', default: '20' },
    k2m: { type: 'string', default: '10' },
    budget: { type: 'string', default: '8' },
    json: { type: 'string' }
  }
})
const RUNS = Number(values.runs)
const RT_COUNT = Number(values.rt)
const SMALL = Number(values.small)
const BUDGET_MS = Number(values.budget) * 1000
const BULK = [
  { name: '100 KiB', size: 100 * 1024, k: Number(values.k100) },
  { name: '2 MiB', size: 2 << 20, k: Number(values.k2m) }
]

// --- the peers ---

function buildLibudxPeer () {
  const dir = path.join(__dirname, 'libudx-peer')
  try {
    execFileSync('cargo', ['build', '--release', '--quiet'], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
    return path.join(dir, 'target', 'release', 'libudx-peer')
  } catch (err) {
    console.log(`note: libudx 1.7.3 peer did not build, skipping it (${String(err.stderr || err.message).trim().split('\n').slice(-3).join(' | ')})`)
    return null
  }
}

const IMPLS = {}

function spawnPeer (impl) {
  const { command, args, name } = IMPLS[impl]
  return new PeerProcess(command, [...args, '--timeout', '120'], { name })
}

const PAIRS = {
  udx: { server: 'udx', client: 'udx', label: 'udx <-> udx (Rust, crates/udx)' },
  native: { server: 'native', client: 'native', label: 'udx-native <-> udx-native (C, in Node)' },
  'udx-native': { server: 'udx', client: 'native', label: 'udx -> udx-native (Rust sends to C)' },
  'native-udx': { server: 'native', client: 'udx', label: 'udx-native -> udx (C sends to Rust)' },
  libudx: { server: 'libudx', client: 'libudx', label: 'libudx 1.7.3 <-> libudx 1.7.3' }
}

// --- one request/response session ---

let nextId = 1

// One stream: the server peer serves, the client peer runs `ops`; both results.
async function exchange (pair, ops, timeoutMs = 120000) {
  const sid = nextId++
  const cid = nextId++
  pair.serverProc.send(`serve ${sid} ${cid} 127.0.0.1 ${pair.clientPort}`)
  await pair.serverProc.next('connected', 10000)
  pair.clientProc.send(`client ${cid} ${sid} 127.0.0.1 ${pair.serverPort} ${ops}`)
  const [server, client] = await Promise.all([pair.serverProc.next('result', timeoutMs), pair.clientProc.next('result', timeoutMs)])
  const ok = server.ok && client.ok
  if (!ok) pair.failures.push({ ops, server: brief(server), client: brief(client) })
  return { ok, server, client }
}

function brief (r) {
  const { timesUs, ...rest } = r
  return rest
}

function stat (r, name) {
  return (r.stats && r.stats[name]) || 0
}

// --- scenarios ---

async function runRtt (pair, samples) {
  const r = await exchange(pair, `64:64x${SMALL},1024:1024x${RT_COUNT}`)
  if (!r.ok) return
  const times = r.client.timesUs.slice(SMALL).sort((a, b) => a - b)
  samples.rt.push({ p50: percentile(times, 50), p99: percentile(times, 99), cpuNs: (r.server.cpuNs + r.client.cpuNs) / (SMALL + RT_COUNT) })
}

async function runBulk (pair, bulk, afterSmall, samples) {
  const key = `${bulk.name} ${afterSmall ? 'after' : 'fresh'}`
  const ops = afterSmall ? `64:64x${SMALL},16:${bulk.size}` : `16:${bulk.size}`
  const started = Date.now()
  const times = []
  const serverCpu = []
  const clientCpu = []
  let rtos = 0
  let retransmits = 0
  for (let i = 0; i < bulk.k; i++) {
    // libudx 1.7.3 moves about a packet per millisecond: bound its share of the run.
    if (i >= 2 && Date.now() - started > BUDGET_MS) break
    const r = await exchange(pair, ops)
    if (!r.ok) continue
    times.push(r.client.timesUs[r.client.timesUs.length - 1])
    serverCpu.push(r.server.cpuNs)
    clientCpu.push(r.client.cpuNs)
    rtos += stat(r.server, 'rtoCount') + stat(r.client, 'rtoCount')
    retransmits += stat(r.server, 'retransmits')
  }
  const s = (samples.bulk[key] = samples.bulk[key] || { size: bulk.size, runs: [], all: [], serverCpu: [], clientCpu: [], rtos: 0, retransmits: 0 })
  if (times.length) s.runs.push(median(times))
  s.all.push(...times)
  s.serverCpu.push(...serverCpu)
  s.clientCpu.push(...clientCpu)
  s.rtos += rtos
  s.retransmits += retransmits
}

// --- output ---

function fmtMs (us) { return Number.isFinite(us) ? `${(us / 1000).toFixed(us < 10000 ? 3 : 1)} ms` : 'n/a' }
function fmtMBs (v) { return Number.isFinite(v) ? `${v.toFixed(v < 10 ? 2 : 0)} MB/s` : 'n/a' }
function fmtCpu (ns) { return Number.isFinite(ns) ? (ns >= 1e6 ? `${(ns / 1e6).toFixed(1)} ms` : `${Math.round(ns / 1000)} us`) : 'n/a' }
function ratio (a, b) { return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}x` : 'n/a' }

function summarize (samples) {
  const out = {
    rtP50: median(samples.rt.map((s) => s.p50)),
    rtP99: median(samples.rt.map((s) => s.p99)),
    rtCpu: median(samples.rt.map((s) => s.cpuNs)),
    bulk: {}
  }
  for (const [key, s] of Object.entries(samples.bulk)) {
    const med = median(s.all)
    out.bulk[key] = {
      // MB/s of each run's median transfer, then the median over runs.
      mbs: median(s.runs.map((us) => s.size / us)),
      p50: median(s.runs),
      worst: Math.max(...s.all),
      worstRatio: Math.max(...s.all) / med,
      n: s.all.length,
      serverCpu: median(s.serverCpu),
      clientCpu: median(s.clientCpu),
      rtos: s.rtos,
      retransmits: s.retransmits
    }
  }
  return out
}

function table (rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)))
  const line = (r) => '| ' + r.map((c, i) => String(c).padEnd(widths[i])).join(' | ') + ' |'
  return [line(rows[0]), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...rows.slice(1).map(line)].join('\n')
}

async function main () {
  const pairNames = values.pairs.split(',')
  console.log('building the Rust peers (release)...')
  const udxBin = buildUdxPeer({ release: true })
  IMPLS.udx = { command: udxBin, args: [], name: 'udx' }
  IMPLS.native = { command: process.execPath, args: [path.join(__dirname, 'udx-native-peer.js')], name: 'udx-native' }
  if (pairNames.includes('libudx')) {
    const bin = buildLibudxPeer()
    if (bin) IMPLS.libudx = { command: bin, args: [], name: 'libudx' }
  }

  const pairs = []
  for (const name of pairNames) {
    const def = PAIRS[name]
    if (!def) throw new Error(`unknown pair ${name}`)
    if (!IMPLS[def.server] || !IMPLS[def.client]) continue
    const serverProc = spawnPeer(def.server)
    const clientProc = spawnPeer(def.client)
    const [s, c] = await Promise.all([serverProc.next('listening', 10000), clientProc.next('listening', 10000)])
    pairs.push({ name, ...def, serverProc, clientProc, serverPort: s.port, clientPort: c.port, samples: { rt: [], bulk: {} }, failures: [] })
  }

  const load = os.loadavg()
  const started = Date.now()
  try {
    // Warm-up, discarded: JIT, allocators, the peers' pattern buffers.
    for (const pair of pairs) {
      const scratch = { rt: [], bulk: {} }
      await runRtt(pair, scratch)
      for (const bulk of BULK) await runBulk(pair, { ...bulk, k: 2 }, false, scratch)
    }
    for (let run = 0; run < RUNS; run++) {
      for (const pair of pairs) {
        process.stdout.write(`run ${run + 1}/${RUNS} ${pair.name}...`)
        const t = Date.now()
        await runRtt(pair, pair.samples)
        for (const bulk of BULK) {
          await runBulk(pair, bulk, false, pair.samples)
          await runBulk(pair, bulk, true, pair.samples)
        }
        process.stdout.write(` ${((Date.now() - t) / 1000).toFixed(1)} s\n`)
      }
    }
  } finally {
    await Promise.all(pairs.flatMap((p) => [p.serverProc.exit(), p.clientProc.exit()]))
  }

  const cpu = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.+)$/m) || [])[1] || os.cpus()[0].model
  console.log(`\nUDX transport, loopback, ${new Date().toISOString().slice(0, 10)}; ${os.availableParallelism ? os.availableParallelism() : os.cpus().length} CPUs (nproc), ${cpu}; Node ${process.version}; ` +
    `medians of ${RUNS} runs; load average before ${load.map((l) => l.toFixed(2)).join(' ')}; ${((Date.now() - started) / 1000).toFixed(0)} s.`)
  console.log(`1 KiB round trip: ${RT_COUNT} per run on one stream after ${SMALL} warm-ups. Bulk: a reply of that size to a 16-byte request, ` +
    `${BULK.map((b) => `${b.k} x ${b.name}`).join(', ')} per run and kind ("after ${SMALL}": the same stream first carried ${SMALL} round trips of 64 bytes).\n`)

  const sums = pairs.map((p) => ({ pair: p, s: summarize(p.samples) }))
  const ref = sums.find((x) => x.pair.name === 'native')
  const kinds = BULK.flatMap((b) => [`${b.name} fresh`, `${b.name} after`])

  const head = ['pair', '1 KiB RT p50', 'p99', ...kinds.map((k) => k.replace('after', `after ${SMALL}`)), 'worst / median', 'CPU per RT (both)', 'sender CPU / 2 MiB', 'receiver CPU / 2 MiB']
  const rows = [head]
  for (const { pair, s } of sums) {
    let worst = { r: NaN, key: '' }
    for (const k of kinds) {
      const b = s.bulk[k]
      if (b && !(b.worstRatio <= worst.r)) worst = { r: b.worstRatio, key: k, us: b.worst }
    }
    const b2 = s.bulk['2 MiB fresh'] || {}
    rows.push([
      pair.label,
      fmtMs(s.rtP50),
      fmtMs(s.rtP99),
      ...kinds.map((k) => (s.bulk[k] ? fmtMBs(s.bulk[k].mbs) : 'n/a')),
      Number.isFinite(worst.r) ? `${worst.r.toFixed(1)}x (${worst.key}, ${fmtMs(worst.us)})` : 'n/a',
      fmtCpu(s.rtCpu),
      fmtCpu(b2.serverCpu),
      fmtCpu(b2.clientCpu)
    ])
  }
  console.log(table(rows))

  if (ref) {
    console.log(`\nRatios to udx-native <-> udx-native (round trip and CPU: lower is better; MB/s: higher is better):\n`)
    const rrows = [['pair', 'RT p50', 'RT p99', ...kinds.map((k) => k.replace('after', `after ${SMALL}`)), 'CPU per RT', 'sender CPU / 2 MiB', 'receiver CPU / 2 MiB']]
    for (const { pair, s } of sums) {
      if (pair === ref.pair) continue
      const r = ref.s
      rrows.push([
        pair.label,
        ratio(s.rtP50, r.rtP50),
        ratio(s.rtP99, r.rtP99),
        ...kinds.map((k) => ratio(s.bulk[k] && s.bulk[k].mbs, r.bulk[k] && r.bulk[k].mbs)),
        ratio(s.rtCpu, r.rtCpu),
        ratio((s.bulk['2 MiB fresh'] || {}).serverCpu, (r.bulk['2 MiB fresh'] || {}).serverCpu),
        ratio((s.bulk['2 MiB fresh'] || {}).clientCpu, (r.bulk['2 MiB fresh'] || {}).clientCpu)
      ])
    }
    console.log(table(rrows))
  }

  console.log('\nTransfers (all runs pooled), retransmission timeouts (both sides), retransmitted packets (sender), failures:')
  for (const { pair, s } of sums) {
    const parts = kinds.filter((k) => s.bulk[k]).map((k) => `${k}: n=${s.bulk[k].n}, p50 ${fmtMs(s.bulk[k].p50)}, worst ${fmtMs(s.bulk[k].worst)} (${s.bulk[k].worstRatio.toFixed(1)}x), RTOs ${s.bulk[k].rtos}, sender retransmits ${s.bulk[k].retransmits}`)
    console.log(`- ${pair.label}: ${parts.join('; ')}; failed sessions ${pair.failures.length}`)
    for (const f of pair.failures.slice(0, 3)) console.log(`    ${JSON.stringify(f).slice(0, 400)}`)
  }

  if (values.json) {
    fs.writeFileSync(values.json, JSON.stringify(sums.map(({ pair, s }) => ({ pair: pair.name, label: pair.label, ...s, failures: pair.failures })), null, 2))
  }
  const failed = pairs.some((p) => p.failures.length > 0)
  process.exitCode = failed ? 1 : 0
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})

