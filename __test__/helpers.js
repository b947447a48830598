'use strict'
// Shared set-up for interop tests: a loopback hyperdht testnet, the real JS scraper
// (dht-prom-client/scraper over protomux-rpc-client), and bounded waits for events.
const createTestnet = require('hyperdht/testnet')
const HyperDHT = require('hyperdht')
const ProtomuxRpcClient = require('protomux-rpc-client')
const ReferenceScraper = require('dht-prom-client/scraper')

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

module.exports = { setup, once, recordEvents }
