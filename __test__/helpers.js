'use strict'
// Shared set-up for interop tests: a loopback hyperdht testnet, the real JS scraper
// (dht-prom-client/scraper over protomux-rpc-client), and bounded waits for events.
const createTestnet = require('hyperdht/testnet')
const HyperDHT = require('hyperdht')
const ProtomuxRpcClient = require('protomux-rpc-client')
const ReferenceScraper = require('dht-prom-client/scraper')
const Hyperswarm = require('hyperswarm')
const AliasRpcServer = require('dht-prom-alias-rpc')
const ProtomuxRPC = require('protomux-rpc')
const cenc = require('compact-encoding')

async function setup ({ size = 3 } = {}) {
  const testnet = await createTestnet(size, { host: '127.0.0.1' })
  const cleanups = []
  const env = {
    testnet,
    bootstrap: testnet.bootstrap,
    // A JS HyperDHT on the testnet, bound to loopback.
    createDht (opts = {}) {
      const dht = new HyperDHT({ bootstrap: testnet.bootstrap, host: '127.0.0.1', ...opts })
      cleanups.push(() => dht.destroy())
      return dht
    },
    // The real scraper side, with its own key pair and DHT.
    createScraper (clientPublicKey, { keyPair = HyperDHT.keyPair(), requestTimeout = 10000 } = {}) {
      const dht = env.createDht({ keyPair })
      const rpc = new ProtomuxRpcClient(dht, { requestTimeout })
      cleanups.push(() => rpc.close())
      return { scraper: new ReferenceScraper(rpc, clientPublicKey), rpc, dht, keyPair }
    },
    // The scraper side of dht-prometheus: one swarm with the scraper's key pair that runs
    // the alias server (answering with `putAlias`, default: updated when the target changed).
    async createAliasServer ({ keyPair = HyperDHT.keyPair(), secret, putAlias } = {}) {
      const dht = env.createDht({ keyPair })
      const swarm = new Hyperswarm({ keyPair, dht })
      cleanups.push(() => swarm.destroy())
      const aliases = new Map()
      const calls = []
      const server = new AliasRpcServer(swarm, secret, async (alias, targetPublicKey, hostname, service) => {
        calls.push({ alias, targetPublicKey, hostname, service })
        if (putAlias) return putAlias(alias, targetPublicKey, hostname, service)
        const previous = aliases.get(alias)
        aliases.set(alias, targetPublicKey)
        return !previous || !previous.equals(targetPublicKey)
      })
      await swarm.listen()
      return { keyPair, dht, swarm, server, calls }
    },
    // A real JS scraper (dht-prom-client/scraper) over one hyperdht socket the test can
    // watch: protomux-rpc on it as protomux-rpc-client would set it up.
    connectScraper (clientPublicKey, { keyPair = HyperDHT.keyPair(), dht = env.createDht({ keyPair }) } = {}) {
      const socket = dht.connect(clientPublicKey, { keyPair })
      const errors = []
      socket.on('error', (err) => errors.push(err))
      const closed = new Promise((resolve) => socket.once('close', resolve))
      const rpc = new ProtomuxRPC(socket, { protocol: 'prometheus-metrics', id: Buffer.alloc(0), valueEncoding: cenc.none })
      const rpcClient = {
        makeRequest (_key, method, args, { requestEncoding, responseEncoding, timeout = 10000 }) {
          return rpc.request(method, args, { requestEncoding, responseEncoding, timeout })
        }
      }
      cleanups.push(() => socket.destroy())
      return { scraper: new ReferenceScraper(rpcClient, clientPublicKey), socket, rpc, errors, closed, dht }
    },
    onCleanup (fn) { cleanups.push(fn) },
    async teardown () {
      for (const fn of cleanups.reverse()) {
        try { await fn() } catch {}
      }
      await testnet.destroy()
    }
  }
  return env
}

// Resolves with the first `name` event's payload (optionally the first that matches).
function once (emitter, name, { timeout = 10000, filter = () => true } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(name, listener)
      reject(new Error(`no ${name} event within ${timeout} ms`))
    }, timeout)
    function listener (payload) {
      if (!filter(payload)) return
      clearTimeout(timer)
      emitter.off(name, listener)
      resolve(payload)
    }
    emitter.on(name, listener)
  })
}

// Records every event a client emits, in order.
function recordEvents (client, names) {
  const seen = []
  for (const name of names) client.on(name, (payload) => seen.push({ name, payload }))
  return seen
}

// Settles as `promise` does, or rejects naming `what` after `ms`.
function within (promise, ms, what) {
  let timer
  const limit = new Promise((resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms) })
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer))
}

module.exports = { setup, once, recordEvents, within }
