'use strict'
// Events and getMetrics calls reach JS from Rust through one threadsafe function, so in the
// order Rust made them (two would not keep it: when both have a call waiting, Node runs
// whichever function was made first). As in the reference, a
// connection's connection-open must come before its first metrics-request, and a request
// that came in before the connection closed before that connection-close.
// The client runs in a worker whose event loop the test holds while a scrape arrives (and,
// in the second test, while its connection closes), so that all of it waits at once.
const path = require('path')
const { Worker } = require('worker_threads')
const HyperDHT = require('hyperdht')
const { setup, once } = require('./helpers')

const WORKER = `
const { parentPort, workerData } = require('worker_threads')
const HyperDHT = require('hyperdht')
const DhtPromClient = require(workerData.root)
const dht = new HyperDHT({ bootstrap: workerData.bootstrap, host: '127.0.0.1' })
const client = new DhtPromClient(dht, () => 'm 1\\n', Buffer.from(workerData.scraperKey, 'hex'), 'a', Buffer.alloc(32), 's')
client.on('register-alias-error', () => {})
const order = []
const last = workerData.closeWhileHeld ? 'connection-close' : 'metrics-success'
for (const name of ['connection-open', 'metrics-request', 'metrics-success', 'connection-close']) {
  client.on(name, () => {
    order.push(name)
    if (name === last) parentPort.postMessage({ type: 'order', order })
  })
}
client.on('connection-error', () => {})
const gauge = (name) => Number((new RegExp('^' + name + ' ([0-9]+)$', 'm').exec(client.ownMetrics()) || [])[1])
function waitHeld (what, done) {
  const deadline = Date.now() + 20000
  while (!done()) {
    if (Date.now() > deadline) {
      parentPort.postMessage({ type: 'error', message: what + ' within 20 s' })
      return false
    }
    Atomics.wait(nap, 0, 0, 2)
  }
  return true
}
const nap = new Int32Array(new SharedArrayBuffer(4))
parentPort.on('message', async (msg) => {
  if (msg === 'hold') {
    parentPort.postMessage({ type: 'holding' })
    // The loop is held (no event or call is dispatched) until the scrape's getMetrics call
    // has been made in Rust: by then its connection's connection-open is waiting as well.
    if (!waitHeld('no scrape reached the client', () => gauge('dht_prom_client_metrics_pending') === 1)) return
    if (workerData.closeWhileHeld) {
      // Still held: the scraper goes away and Rust ends the connection.
      parentPort.postMessage({ type: 'scrape-waiting' })
      if (!waitHeld('the connection did not end', () => gauge('dht_prom_client_open_connections') === 0)) return
    }
    Atomics.wait(nap, 0, 0, 20) // the last call itself reaches its queue
  } else if (msg === 'close') {
    await client.close()
    await dht.destroy()
    parentPort.postMessage({ type: 'closed' })
  }
})
client.ready().then(() => parentPort.postMessage({ type: 'ready', publicKey: client.publicKey.toString('hex') }))
`

function next (worker, type, timeout = 20000) {
  return once(worker, 'message', { timeout, filter: (m) => m.type === type || m.type === 'error' }).then((m) => {
    if (m.type === 'error') throw new Error(m.message)
    return m
  })
}

describe('event order between getMetrics calls and events on a busy loop', () => {
  let env
  beforeAll(async () => { env = await setup() })
  afterAll(async () => { await env.teardown() })

  // A client in a worker, ready, whose loop is held until a scrape's getMetrics call waits.
  async function heldClient (closeWhileHeld) {
    const scraperKeyPair = HyperDHT.keyPair()
    const worker = new Worker(WORKER, {
      eval: true,
      workerData: { root: path.join(__dirname, '..'), bootstrap: env.bootstrap, scraperKey: scraperKeyPair.publicKey.toString('hex'), closeWhileHeld }
    })
    env.onCleanup(() => worker.terminate())
    const { publicKey } = await next(worker, 'ready')
    const holding = next(worker, 'holding')
    worker.postMessage('hold')
    await holding
    return { worker, scraperKeyPair, clientKey: Buffer.from(publicKey, 'hex') }
  }

  async function closeClient (worker) {
    const closed = next(worker, 'closed')
    worker.postMessage('close')
    await closed
  }

  test('connection-open comes before the first metrics-request when both wait on a busy loop', async () => {
    const { worker, scraperKeyPair, clientKey } = await heldClient(false)
    const order = next(worker, 'order')
    const { scraper } = env.createScraper(clientKey, { keyPair: scraperKeyPair })
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'm 1\n' })
    expect((await order).order).toEqual(['connection-open', 'metrics-request', 'metrics-success'])
    await closeClient(worker)
  }, 60000)

  test('a request that came before its connection closed comes before the connection-close', async () => {
    const { worker, scraperKeyPair, clientKey } = await heldClient(true)
    const order = next(worker, 'order')
    const waiting = next(worker, 'scrape-waiting')
    const { scraper, rpc } = env.createScraper(clientKey, { keyPair: scraperKeyPair })
    const scrape = scraper.requestMetrics()
    scrape.catch(() => {})
    await waiting
    await rpc.close() // the scraper goes away with its request unanswered
    const seen = (await order).order
    expect(seen[0]).toBe('connection-open')
    expect(seen.indexOf('metrics-request')).toBeGreaterThan(0)
    expect(seen.indexOf('metrics-request')).toBeLessThan(seen.indexOf('connection-close'))
    await closeClient(worker)
  }, 60000)
})
