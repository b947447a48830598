'use strict'
// The scraper side, as DHT Prometheus runs it: one HyperDHT with the scraper's key pair, a
// Hyperswarm on it serving dht-prom-alias-rpc (where clients register their alias), and the
// real JS scraper (dht-prom-client/scraper over protomux-rpc-client) on the same DHT.
// An uncaught exception is recorded ('threw') and the process goes on, so that the scrape's
// own outcome is still reported; a default Node process would have died there.
const HyperDHT = require('hyperdht')
const Hyperswarm = require('hyperswarm')
const ProtomuxRpcClient = require('protomux-rpc-client')
const AliasRpcServer = require('dht-prom-alias-rpc')
const DhtPromScraper = require('dht-prom-client/scraper')
const { args, send, serve } = require('./child-io')

const threw = []
process.on('uncaughtException', (err) => {
  const entry = { message: String(err && err.message), stack: String(err && err.stack) }
  threw.push(entry)
  send({ type: 'threw', ...entry })
})

async function main () {
  const keyPair = HyperDHT.keyPair()
  const dht = new HyperDHT({ keyPair, bootstrap: args.bootstrap, host: args.host })
  const swarm = new Hyperswarm({ keyPair, dht })
  const aliasConnections = new Set()
  swarm.on('connection', (conn) => {
    aliasConnections.add(conn)
    conn.on('close', () => aliasConnections.delete(conn))
  })
  const aliasServer = new AliasRpcServer(swarm, Buffer.from(args.secret, 'hex'), async (alias, targetPublicKey) => {
    send({ type: 'alias-request', alias, targetPublicKey: Buffer.from(targetPublicKey).toString('hex') })
    return true
  })
  aliasServer.on('connection-open', ({ remoteAddress }) => send({ type: 'alias-connection', remoteAddress }))
  let rpc = new ProtomuxRpcClient(dht)

  serve(async (msg) => {
    if (msg.cmd === 'drop-alias') {
      // Closes the alias-registration connections from this side and waits for their close.
      const closing = [...aliasConnections].map((conn) => new Promise((resolve) => {
        conn.once('close', resolve)
        conn.destroy()
      }))
      const n = closing.length
      let timer
      const late = new Promise((resolve) => { timer = setTimeout(resolve, 3000, 'late') })
      const outcome = await Promise.race([Promise.all(closing), late])
      clearTimeout(timer)
      // Random punches this DHT made so far: all of them for the alias registrations.
      send({ type: 'dropped', connections: n, closed: outcome !== 'late', randomPunches: dht.stats.punches.random })
    } else if (msg.cmd === 'scrape') {
      const scraper = new DhtPromScraper(rpc, Buffer.from(msg.key, 'hex'))
      const started = process.hrtime.bigint()
      let result
      try {
        const res = await scraper.requestMetrics({ timeout: msg.timeoutMs })
        result = { ok: res.success === true && res.metrics === msg.metrics, reply: res.success ? 'metrics' : String(res.errorMessage) }
      } catch (err) {
        const message = String(err && err.message)
        result = { ok: false, error: err && err.code && !message.startsWith(err.code) ? `${err.code}: ${message}` : message }
      }
      const ms = Number(process.hrtime.bigint() - started) / 1e6
      send({ type: 'scrape-result', n: msg.n, ms, ...result })
    } else if (msg.cmd === 'reset') {
      // Closes the scrape connections, so that the next scrape dials anew.
      await rpc.close()
      rpc = new ProtomuxRpcClient(dht)
      send({ type: 'reset', n: msg.n })
    } else if (msg.cmd === 'report') {
      send({ type: 'report', threw })
    }
  }, async () => {
    await rpc.close()
    await swarm.destroy()
    await dht.destroy()
  })

  await swarm.listen()
  await dht.fullyBootstrapped()
  send({ type: 'ready', publicKey: keyPair.publicKey.toString('hex') })
}

main().catch((err) => {
  send({ type: 'error', message: String(err.stack || err) })
  process.exit(1)
})
