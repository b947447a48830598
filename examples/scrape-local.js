'use strict'
// End-to-end example, loopback only: a local hyperdht testnet, a DhtPromClient (this
// package: the metrics server and alias registration run in Rust) exposing a prom-client
// Registry, the scraper side's real alias server (dht-prom-alias-rpc), and the real JS
// scraper from dht-prom-client 2.1.0 scraping it a few times.
//
// Run: npm run example (after npm install and a build: npm run build:debug)

const createTestnet = require('hyperdht/testnet')
const HyperDHT = require('hyperdht')
const Hyperswarm = require('hyperswarm')
const AliasRpcServer = require('dht-prom-alias-rpc')
const ProtomuxRpcClient = require('protomux-rpc-client')
const DhtPromScraper = require('dht-prom-client/scraper')
const promClient = require('prom-client')

const DhtPromClient = require('..')

const HOST = '127.0.0.1'
const SCRAPES = 3

// A pino-like logger: info/debug, and `level` decides whether debug lines are wired up.
const logger = {
  level: 'debug',
  info: (msg) => console.log(`[info]  ${msg}`),
  debug: (msg) => console.log(`[debug] ${msg}`)
}

async function main () {
  const testnet = await createTestnet(3, { host: HOST })

  // The application's metrics, on their own Registry: a Counter and a Gauge.
  const registry = new promClient.Registry()
  const jobsDone = new promClient.Counter({
    name: 'example_jobs_done_total',
    help: 'Jobs the example has done',
    registers: [registry]
  })
  const heapUsed = new promClient.Gauge({
    name: 'example_heap_used_bytes',
    help: 'V8 heap in use, read at each collection',
    collect () { this.set(process.memoryUsage().heapUsed) }
  })
  registry.registerMetric(heapUsed)

  // The scraper's identity: the client only accepts connections from this key.
  const scraperKeyPair = HyperDHT.keyPair()
  const scraperSecret = Buffer.alloc(32, 7) // shared secret for alias registration

  // The scraper side's alias server (as in dht-prometheus), on the scraper's key pair.
  const scraperDht = new HyperDHT({ bootstrap: testnet.bootstrap, host: HOST, keyPair: scraperKeyPair })
  const swarm = new Hyperswarm({ keyPair: scraperKeyPair, dht: scraperDht })
  const aliases = new Map()
  new AliasRpcServer(swarm, scraperSecret, async (alias, targetPublicKey, hostname, service) => { // eslint-disable-line no-new
    const updated = aliases.get(alias) !== targetPublicKey.toString('hex')
    aliases.set(alias, targetPublicKey.toString('hex'))
    console.log(`alias server: ${alias} -> ${DhtPromClient.normalizeKey(targetPublicKey)} (${service} at ${hostname})`)
    return updated
  })
  await swarm.listen()

  // The client's DHT. As with the reference, the client owns it and destroys it in close().
  // `{ bootstrap: testnet.bootstrap, host: HOST }` works here too, without a JS HyperDHT.
  const clientDht = new HyperDHT({ bootstrap: testnet.bootstrap, host: HOST })
  const client = new DhtPromClient(
    clientDht,
    registry, // a prom-client Registry (or the prom-client module, or () => string)
    scraperKeyPair.publicKey,
    'example-alias',
    scraperSecret,
    'example-service'
  )
  client.registerLogger(logger)
  const registered = new Promise((resolve, reject) => {
    client.once('register-alias-success', resolve)
    client.once('register-alias-error', reject)
  })

  await client.ready()
  await registered // the first registration happens right after ready()
  console.log(`metrics server listening on ${DhtPromClient.normalizeKey(client.publicKey)}`)

  // The real JS scraper: protomux-rpc-client over the scraper's HyperDHT.
  const rpc = new ProtomuxRpcClient(scraperDht)
  const scraper = new DhtPromScraper(rpc, client.publicKey)

  try {
    for (let i = 1; i <= SCRAPES; i++) {
      jobsDone.inc(i)
      const res = await scraper.requestMetrics()
      if (!res.success) throw new Error(`scrape ${i} failed: ${res.errorMessage}`)
      console.log(`--- scrape ${i}/${SCRAPES} (${Buffer.byteLength(res.metrics)} bytes) ---`)
      process.stdout.write(res.metrics)
    }
    console.log('--- client.ownMetrics() ---')
    process.stdout.write(client.ownMetrics())
  } finally {
    await client.close() // also destroys clientDht
    await rpc.close()
    await swarm.destroy() // also destroys scraperDht
    await testnet.destroy()
  }
  console.log('closed')
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
