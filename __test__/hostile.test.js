'use strict'
// Hostile traffic from a peer with the scraper's key, seen from JS (the Rust side has its
// own tests in tests/hostile_scraper.rs), and close() racing scrapes and ready().
const v8 = require('v8')
const vm = require('vm')
const HyperDHT = require('hyperdht')
const ProtomuxRPC = require('protomux-rpc')
const cenc = require('compact-encoding')
const { MetricsReqEnc, MetricsReplyEnc } = require('dht-prom-client/lib/encodings')
const DhtPromClient = require('..')
const { setup, once } = require('./helpers')

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc')

const SECRET = Buffer.alloc(32, 3)
const EVENTS = ['connection-open', 'connection-close', 'connection-error', 'metrics-request', 'metrics-success',
  'metrics-error', 'firewall-block', 'register-alias-success', 'register-alias-error', 'ready', 'close']

function metricValue (text, name) {
  const match = text.match(new RegExp(`^${name} (\\d+)$`, 'm'))
  return match === null ? null : Number(match[1])
}

// protomux and protomux-rpc frames as a JS scraper writes them (WIRE-NOTES.md).
const uint = (n) => n <= 0xfc ? Buffer.from([n]) : Buffer.from([0xfd, n & 0xff, n >> 8])
const OPEN = Buffer.concat([Buffer.from([0, 1, 1, 18]), Buffer.from('prometheus-metrics'), Buffer.from([0])])
const request = (id) => Buffer.concat([Buffer.from([1, 0]), uint(id), Buffer.from([7]), Buffer.from('metrics'), Buffer.from([1, 1])])

async function until (what, check, timeout = 10000) {
  const started = Date.now()
  while (!check()) {
    if (Date.now() - started > timeout) throw new Error(`${what}: not within ${timeout} ms`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

describe('hostile scraper-key traffic and close() races', () => {
  let env
  const scraperKeyPair = HyperDHT.keyPair()

  beforeEach(async () => { env = await setup() })
  afterEach(async () => { await env.teardown() })

  async function startClient (getMetrics) {
    const client = new DhtPromClient(env.createDht(), getMetrics, scraperKeyPair.publicKey, 'a', SECRET, 's')
    env.onCleanup(() => client.close())
    await client.ready()
    return client
  }

  test.each([['this package', DhtPromClient], ['dht-prom-client 2.1.0', require('dht-prom-client')]])('%s: an unknown method gets UNKNOWN_METHOD and the channel goes on', async (_name, Client) => {
    const client = new Client(env.createDht(), () => 'm 1\n', scraperKeyPair.publicKey, 'a', SECRET, 's')
    env.onCleanup(() => client.close())
    await client.ready()
    const socket = env.createDht({ keyPair: scraperKeyPair }).connect(client.publicKey, { keyPair: scraperKeyPair })
    socket.on('error', () => {})
    env.onCleanup(() => socket.destroy())
    const rpc = new ProtomuxRPC(socket, { protocol: 'prometheus-metrics', id: Buffer.alloc(0), valueEncoding: cenc.none })
    const err = await rpc.request('nope', Buffer.alloc(0)).catch((e) => e)
    expect(err).toMatchObject({ code: 'UNKNOWN_METHOD', message: "UNKNOWN_METHOD: Unknown method 'nope'" })
    const reply = await rpc.request('metrics', {}, { requestEncoding: MetricsReqEnc, responseEncoding: MetricsReplyEnc })
    expect(reply).toEqual({ success: true, metrics: 'm 1\n' })
  })

  test('1,000 getMetrics calls that never settle: the scraper times out, each call goes with its connection', async () => {
    const hung = [] // the getMetrics promises, kept, as a hung collector keeps them
    const client = await startClient(() => {
      const p = new Promise(() => {})
      hung.push(p)
      return p
    })
    let requests = 0
    client.on('metrics-request', () => { requests++ })
    let closes = 0
    client.on('connection-close', () => { closes++ })

    // The real scraper gives up after its timeout; its connection stays open, the call
    // waiting on it.
    const { scraper, rpc } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair, requestTimeout: 500 })
    await expect(scraper.requestMetrics()).rejects.toMatchObject({ code: 'TIMEOUT_EXCEEDED' })
    await rpc.close()
    await until('the scraper connection closed', () => closes === 1)

    // 64 connections (8 at a time) of 16 requests each (what one connection serves at
    // once): 1,024 calls made and never settled, then the connections close.
    const dht = env.createDht({ keyPair: scraperKeyPair })
    const heap = () => { gc(); return process.memoryUsage().heapUsed }
    let heapAfterFirstRound = 0
    for (let round = 0; round < 8; round++) {
      const sockets = []
      for (let i = 0; i < 8; i++) {
        const socket = dht.connect(client.publicKey, { keyPair: scraperKeyPair })
        socket.on('error', () => {})
        sockets.push(socket)
      }
      await Promise.all(sockets.map((s) => once(s, 'open')))
      const before = requests
      for (const socket of sockets) {
        socket.write(OPEN)
        for (let id = 1; id <= 16; id++) socket.write(request(id))
      }
      await until('16 calls on each connection', () => requests === before + 8 * 16)
      expect(metricValue(client.ownMetrics(), 'dht_prom_client_metrics_pending')).toBe(8 * 16)
      const closesBefore = closes
      for (const socket of sockets) socket.destroy()
      await until('the connections closed', () => closes === closesBefore + 8)
      await until('their calls dropped', () => metricValue(client.ownMetrics(), 'dht_prom_client_metrics_pending') === 0)
      if (round === 0) heapAfterFirstRound = heap()
    }
    expect(requests).toBe(1 + 64 * 16)
    expect(hung.length).toBe(1 + 64 * 16)
    // What stays in JS is what the collector keeps (its promises and what waits on them);
    // once it lets go, nothing of the 1,025 calls remains.
    hung.length = 0
    const heapAtEnd = heap()
    expect(heapAtEnd - heapAfterFirstRound).toBeLessThan(4 * 1024 * 1024)
    // The client is served as before.
    client.getMetrics = () => 'm 2\n'
    const { scraper: fresh } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    expect(await fresh.requestMetrics()).toEqual({ success: true, metrics: 'm 2\n' })
  }, 60000)

  test('close() while a 2 MB reply is on its way: resolves promptly, and no event follows it', async () => {
    const big = 'x'.repeat(2 * 1024 * 1024)
    const client = await startClient(() => big)
    const seen = []
    let closeResolved = false
    for (const name of EVENTS) client.on(name, () => seen.push({ name, afterClose: closeResolved }))
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair, requestTimeout: 10000 })
    expect((await scraper.requestMetrics()).metrics.length).toBe(big.length)
    const requested = once(client, 'metrics-request')
    const inFlight = scraper.requestMetrics().then((res) => res.metrics.length, (err) => err.code)
    await requested
    const started = Date.now()
    await client.close()
    closeResolved = true
    expect(Date.now() - started).toBeLessThan(3000)
    // Either it made it before the channel closed, or the scraper saw the close.
    expect([big.length, 'CHANNEL_CLOSED']).toContain(await inFlight)
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(seen.filter((e) => e.afterClose)).toEqual([])
    expect(seen.map((e) => e.name)).toContain('connection-close')
  })

  test('a closed client is collected: nothing of it stays behind in the process', async () => {
    let finalized = 0
    const registry = new FinalizationRegistry(() => { finalized++ })
    // In a function of its own, so that no local variable keeps the client.
    async function openScrapeClose () {
      const client = new DhtPromClient({ bootstrap: env.bootstrap, host: '127.0.0.1' }, () => 'm 1\n', scraperKeyPair.publicKey, 'a', SECRET, 's')
      await client.ready()
      const { scraper, rpc } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
      expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'm 1\n' })
      await client.close()
      await rpc.close()
      registry.register(client, null)
    }
    for (let i = 0; i < 5; i++) await openScrapeClose()
    // Before: none ever was (the event listener the native side held referred back to it).
    await until('the closed clients collected', () => { gc(); return finalized === 5 }, 5000)
  })

  test('close() twice at once while ready() runs: both resolve, ready() settles, no event after', async () => {
    const client = new DhtPromClient(env.createDht(), () => 'x 1\n', scraperKeyPair.publicKey, 'a', SECRET, 's')
    const seen = []
    let closeResolved = false
    for (const name of EVENTS) client.on(name, () => seen.push({ name, afterClose: closeResolved }))
    const ready = client.ready().then(() => 'resolved', (err) => err.message)
    await Promise.all([client.close(), client.close()])
    closeResolved = true
    expect(client.closed).toBe(true)
    expect(await ready).toBe('resolved')
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(seen.filter((e) => e.afterClose)).toEqual([])
    // Nothing is left listening: a scraper finds no server.
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair, requestTimeout: 2000 })
    await expect(scraper.requestMetrics()).rejects.toThrow()
  })
})
