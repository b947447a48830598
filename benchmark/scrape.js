'use strict'
// Scrape latency (p50/p99) and client CPU per scrape, for our client and the JS reference,
// side by side, on a loopback hyperdht testnet. The scraper is the real JS one in this
// process; each client runs in a child process. Run after `npm run build` (release):
//   node benchmark/scrape.js [--scrapes 200] [--sizes 1024,102400,2097152]
const path = require('path')
const { fork } = require('child_process')
const { once } = require('events')
const { parseArgs } = require('util')
const HyperDHT = require('hyperdht')
const createTestnet = require('hyperdht/testnet')
const ProtomuxRpcClient = require('protomux-rpc-client')
const Scraper = require('dht-prom-client/scraper')

const { values } = parseArgs({
  options: {
    scrapes: { type: 'string', default: '200' },
    sizes: { type: 'string', default: '1024,102400,2097152' },
    impls: { type: 'string', default: 'rust,reference' }
  }
})
const SCRAPES = Number(values.scrapes)
const SIZES = values.sizes.split(',').map(Number)
const IMPLS = values.impls.split(',')

function percentile (sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

function request (child, type) {
  child.send({ type })
  return new Promise((resolve) => {
    child.on('message', function listener (msg) {
      if (msg.type === type) { child.off('message', listener); resolve(msg) }
    })
  })
}

async function measure (testnet, impl, size) {
  const scraperKeyPair = HyperDHT.keyPair()
  const child = fork(path.join(__dirname, 'client-process.js'), [
    impl, String(size), scraperKeyPair.publicKey.toString('hex'), JSON.stringify(testnet.bootstrap)
  ])
  const [ready] = await once(child, 'message')
  const dht = new HyperDHT({ bootstrap: testnet.bootstrap, host: '127.0.0.1', keyPair: scraperKeyPair })
  const rpc = new ProtomuxRpcClient(dht, { requestTimeout: 30000 })
  const scraper = new Scraper(rpc, Buffer.from(ready.publicKey, 'hex'))

  // First scrape includes the connection: DHT lookup, handshake, secret stream.
  let start = process.hrtime.bigint()
  const first = await scraper.requestMetrics()
  const connectMs = Number(process.hrtime.bigint() - start) / 1e6
  if (!first.success || first.metrics.length !== ready.length) throw new Error(`${impl}: bad reply`)

  for (let i = 0; i < 10; i++) await scraper.requestMetrics() // warm-up
  const before = await request(child, 'cpu')
  const latencies = []
  for (let i = 0; i < SCRAPES; i++) {
    start = process.hrtime.bigint()
    const res = await scraper.requestMetrics()
    latencies.push(Number(process.hrtime.bigint() - start) / 1e6)
    if (!res.success) throw new Error(`${impl}: scrape failed`)
  }
  const after = await request(child, 'cpu')
  await request(child, 'close')
  await rpc.close()
  await dht.destroy()

  latencies.sort((a, b) => a - b)
  const cpuUs = (after.usage.user + after.usage.system) - (before.usage.user + before.usage.system)
  return {
    impl,
    size,
    firstScrapeMs: connectMs.toFixed(1),
    p50Ms: percentile(latencies, 50).toFixed(2),
    p99Ms: percentile(latencies, 99).toFixed(2),
    clientCpuUsPerScrape: Math.round(cpuUs / SCRAPES),
    clientRssMiB: (after.memory / 1048576).toFixed(0)
  }
}

async function main () {
  const testnet = await createTestnet(3, { host: '127.0.0.1' })
  const rows = []
  for (const size of SIZES) {
    for (const impl of IMPLS) {
      const row = await measure(testnet, impl, size)
      rows.push(row)
      console.error(JSON.stringify(row))
    }
  }
  await testnet.destroy()
  console.table(rows)
}

main().catch((err) => { console.error(err); process.exit(1) })
