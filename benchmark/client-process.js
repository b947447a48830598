'use strict'
// One DhtPromClient (ours or the JS reference) in its own process, so that its CPU time
// (every thread: process.cpuUsage is getrusage(RUSAGE_SELF)) is measured apart from the
// scraper's. Driven over IPC by scrape.js.
const HyperDHT = require('hyperdht')

const [impl, bytes, scraperKeyHex, bootstrapJson] = process.argv.slice(2)
const Client = impl === 'rust' ? require('..') : require('dht-prom-client')

// Prometheus-looking text of the requested size, with multi-byte characters in it.
function payload (size) {
  const line = 'bench_metric{label="valeur ✓"} 123456789\n'
  return line.repeat(Math.max(1, Math.round(size / Buffer.byteLength(line))))
}

async function main () {
  const metrics = payload(Number(bytes))
  const dht = new HyperDHT({ bootstrap: JSON.parse(bootstrapJson), host: '127.0.0.1' })
  const client = new Client(dht, () => metrics, Buffer.from(scraperKeyHex, 'hex'), 'bench', Buffer.alloc(32), 'bench')
  client.on('register-alias-error', () => {})
  await client.ready()
  process.send({ type: 'ready', publicKey: client.publicKey.toString('hex'), length: metrics.length })
  process.on('message', async (msg) => {
    if (msg.type === 'cpu') process.send({ type: 'cpu', usage: process.cpuUsage(), memory: process.memoryUsage().rss })
    if (msg.type === 'close') {
      await client.close()
      process.send({ type: 'close' })
      process.disconnect()
    }
  })
}

main().catch((err) => { console.error(err); process.exit(1) })
