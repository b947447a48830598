'use strict'
// The metrics client under test, as a user runs it: a HyperDHT instance with the lab's
// bootstrap and this host's own address, handed to the JS reference (dht-prom-client 2.1.0)
// or to this package (the repo root's index.js facade), which registers its alias with the
// scraper and serves the metrics.
const path = require('path')
const HyperDHT = require('hyperdht')
const { args, send, serve } = require('./child-io')

process.on('uncaughtException', (err) => {
  send({ type: 'threw', message: String(err && err.message), stack: String(err && err.stack) })
})

const ROOT = path.join(__dirname, '..', '..')

async function main () {
  const Client = args.impl === 'reference' ? require('dht-prom-client') : require(ROOT)
  const dht = new HyperDHT({ bootstrap: args.bootstrap, host: args.host })
  const client = new Client(dht, () => args.metrics, Buffer.from(args.scraperKey, 'hex'), args.alias,
    Buffer.from(args.secret, 'hex'), 'nat-lab', { hostname: 'nat-lab', registerIntervalMs: 60 * 60 * 1000 })
  client.on('register-alias-success', ({ updated }) => send({ type: 'alias', ok: true, updated }))
  client.on('register-alias-error', (err) => send({ type: 'alias', ok: false, error: String(err && err.message) }))
  client.on('connection-open', ({ remoteAddress }) => send({ type: 'connection-open', remoteAddress }))
  client.on('metrics-success', () => send({ type: 'metrics-success' }))
  serve(() => {}, () => client.close())
  await client.ready()
  await dht.fullyBootstrapped()
  // How a JS HyperDHT on this host sees its NAT (the same for both implementations).
  send({
    type: 'ready',
    publicKey: client.publicKey.toString('hex'),
    nat: { host: dht.host, port: dht.port, firewalled: dht.firewalled, randomized: dht.randomized }
  })
}

main().catch((err) => {
  send({ type: 'error', message: String(err.stack || err) })
  process.exit(1)
})
