'use strict'
// One DhtPromClient (ours or the JS reference) in its own process, so that its CPU time
// (every thread: process.cpuUsage is getrusage(RUSAGE_SELF)), its peak RSS and its event
// loop's utilisation are its own, apart from the scraper's. Driven over IPC by scrape.js:
//   'begin' / 'end' bracket a measured phase ('end' answers with the deltas since 'begin');
//   'close' times client.close() and exits.
const { performance } = require('perf_hooks')
const HyperDHT = require('hyperdht')

const [impl, bytes, scraperKeyHex, bootstrapJson] = process.argv.slice(2)
const Client = impl === 'rust' ? require('..') : require('dht-prom-client')

// Prometheus-looking text of the requested size, with multi-byte characters in it.
function payload (size) {
  const line = 'bench_metric{label="valeur ✓"} 123456789\n'
  return line.repeat(Math.max(1, Math.round(size / Buffer.byteLength(line))))
}

function cpuMicros () {
  const { user, system } = process.cpuUsage()
  return user + system
}

async function main () {
  const metrics = payload(Number(bytes))
  const dht = new HyperDHT({ bootstrap: JSON.parse(bootstrapJson), host: '127.0.0.1' })
  let calls = 0
  const getMetrics = () => { calls++; return metrics }
  const client = new Client(dht, getMetrics, Buffer.from(scraperKeyHex, 'hex'), 'bench', Buffer.alloc(32), 'bench')
  client.on('register-alias-error', () => {})
  await client.ready()
  process.send({ type: 'ready', publicKey: client.publicKey.toString('hex'), bytes: Buffer.byteLength(metrics) })

  let begin = null
  process.on('message', async (msg) => {
    if (msg.type === 'begin') {
      begin = { cpu: cpuMicros(), elu: performance.eventLoopUtilization(), at: performance.now(), calls }
      process.send({ type: 'begin' })
    } else if (msg.type === 'end') {
      const elu = performance.eventLoopUtilization(begin.elu)
      process.send({
        type: 'end',
        cpuMicros: cpuMicros() - begin.cpu,
        wallMs: performance.now() - begin.at,
        elu: elu.utilization,
        getMetricsCalls: calls - begin.calls,
        maxRssKiB: process.resourceUsage().maxRSS
      })
    } else if (msg.type === 'close') {
      // CLOCK_MONOTONIC, the same clock in the scraper's process: it times the goodbye.
      const startNs = process.hrtime.bigint()
      await client.close()
      const closeMs = Number(process.hrtime.bigint() - startNs) / 1e6
      process.send({ type: 'close', startNs: String(startNs), closeMs })
      process.disconnect()
    }
  })
}

main().catch((err) => { console.error(err); process.exit(1) })
