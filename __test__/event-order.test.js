'use strict'
// Events and getMetrics calls reach JS through two threadsafe functions; when both have a
// call waiting, Node runs them in the order the functions were made. A connection's
// connection-open must still come before its first metrics-request, as in the reference.
// The client runs in a worker whose event loop the test holds while a scrape arrives, so
// that both calls are waiting when the loop runs again.
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
for (const name of ['connection-open', 'metrics-request', 'metrics-success']) {
  client.on(name, () => {
    order.push(name)
    if (name === 'metrics-success') parentPort.postMessage({ type: 'order', order })
  })
}
const nap = new Int32Array(new SharedArrayBuffer(4))
parentPort.on('message', async (msg) => {
  if (msg === 'hold') {
    parentPort.postMessage({ type: 'holding' })
    // The loop is held (no event or call is dispatched) until the scrape's getMetrics call
    // has been made in Rust: by then its connection's connection-open is waiting as well.
    const deadline = Date.now() + 20000
    while (!/^dht_prom_client_metrics_pending 1$/m.test(client.ownMetrics())) {
      if (Date.now() > deadline) {
        parentPort.postMessage({ type: 'error', message: 'no scrape reached the client within 20 s' })
        return
      }
      Atomics.wait(nap, 0, 0, 2)
    }
    Atomics.wait(nap, 0, 0, 20) // the call itself reaches its queue
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

describe('event order across the two threadsafe functions', () => {
  let env
  beforeAll(async () => { env = await setup() })
  afterAll(async () => { await env.teardown() })

  test('connection-open comes before the first metrics-request when both wait on a busy loop', async () => {
    const scraperKeyPair = HyperDHT.keyPair()
    const worker = new Worker(WORKER, {
      eval: true,
      workerData: { root: path.join(__dirname, '..'), bootstrap: env.bootstrap, scraperKey: scraperKeyPair.publicKey.toString('hex') }
    })
    env.onCleanup(() => worker.terminate())
    const { publicKey } = await next(worker, 'ready')
    const holding = next(worker, 'holding')
    worker.postMessage('hold')
    await holding
    const order = next(worker, 'order')
    const { scraper } = env.createScraper(Buffer.from(publicKey, 'hex'), { keyPair: scraperKeyPair })
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'm 1\n' })
    expect((await order).order).toEqual(['connection-open', 'metrics-request', 'metrics-success'])
    const closed = next(worker, 'closed')
    worker.postMessage('close')
    await closed
  }, 60000)
})
