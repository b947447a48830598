'use strict'
const path = require('path')
const { spawn } = require('child_process')
const HyperDHT = require('hyperdht')
const DhtPromClient = require('..')
const { setup, once, recordEvents } = require('./helpers')

const SECRET = Buffer.alloc(32, 2)

async function openSocket (dht, publicKey, keyPair) {
  const socket = dht.connect(publicKey, { keyPair })
  socket.on('error', () => {})
  await once(socket, 'open')
  return socket
}

describe('lifecycle and hostile input', () => {
  let env
  const scraperKeyPair = HyperDHT.keyPair()

  beforeEach(async () => { env = await setup() })
  afterEach(async () => { await env.teardown() })

  async function startClient () {
    const client = new DhtPromClient(env.createDht(), () => 'm 1\n', scraperKeyPair.publicKey, 'a', SECRET, 's')
    env.onCleanup(() => client.close())
    await client.ready()
    return client
  }

  test.each([
    ['a batch item with a 2^64 length (panics peeroxide-dht decoder)', '000001ffffffffffffffffff00'],
    ['an unknown control type', '0009'],
    ['a truncated open', '000101ffff']
  ])('%s ends that connection with connection-error; the next connection is served', async (_name, hex) => {
    const client = await startClient()
    const dht = env.createDht({ keyPair: scraperKeyPair })
    const opened = once(client, 'connection-open')
    const socket = await openSocket(dht, client.publicKey, scraperKeyPair)
    const { uid } = await opened
    const errored = once(client, 'connection-error', { filter: (e) => e.uid === uid })
    const closed = once(client, 'connection-close', { filter: (e) => e.uid === uid })
    socket.write(Buffer.from(hex, 'hex'))
    const { error } = await errored
    expect(error.code).toBe('ERR_PROTOCOL')
    expect(error.message).toMatch(/malformed protomux frame/)
    await closed
    socket.destroy()

    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'm 1\n' })
  })

  test('a flood of requests on one connection closes it with ERR_PROTOCOL; others are served', async () => {
    const client = await startClient()
    client.getMetrics = () => new Promise(() => {}) // every request stays in flight
    const dht = env.createDht({ keyPair: scraperKeyPair })
    const opened = once(client, 'connection-open')
    const socket = await openSocket(dht, client.publicKey, scraperKeyPair)
    const { uid } = await opened
    const errored = once(client, 'connection-error', { filter: (e) => e.uid === uid })
    const uint = (n) => n <= 0xfc ? Buffer.from([n]) : Buffer.from([0xfd, n & 0xff, n >> 8])
    const method = Buffer.concat([Buffer.from([7]), Buffer.from('metrics')])
    socket.write(Buffer.concat([Buffer.from([0, 1, 1, 18]), Buffer.from('prometheus-metrics'), Buffer.from([0])]))
    for (let id = 1; id <= 1100; id++) {
      socket.write(Buffer.concat([Buffer.from([1, 0]), uint(id), method, Buffer.from([1, 1])]))
    }
    const { error } = await errored
    expect(error.code).toBe('ERR_PROTOCOL')
    expect(error.message).toMatch(/requests in flight/)
    socket.destroy()
    client.getMetrics = () => 'm 1\n'
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'm 1\n' })
  })

  test('after close(): a scrape in flight fails at once, no new connection, no more events', async () => {
    const client = await startClient()
    const { scraper, rpc } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair, requestTimeout: 3000 })
    expect((await scraper.requestMetrics()).success).toBe(true)
    client.getMetrics = () => new Promise(() => {}) // never settles
    const requested = once(client, 'metrics-request')
    const inFlight = scraper.requestMetrics({ timeout: 10000 })
    inFlight.catch(() => {})
    await requested
    const events = []
    for (const name of ['connection-open', 'connection-close', 'connection-error', 'metrics-request', 'firewall-block']) {
      client.on(name, () => events.push(name))
    }
    const started = Date.now()
    await client.close()
    expect(Date.now() - started).toBeLessThan(3000)
    expect(client.dht.destroyed).toBe(true)
    const afterClose = events.length

    await expect(inFlight).rejects.toMatchObject({ code: 'CHANNEL_CLOSED' })
    expect(Date.now() - started).toBeLessThan(3000) // not the 10 s request timeout
    await rpc.close()
    const { scraper: fresh } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair, requestTimeout: 3000 })
    await expect(fresh.requestMetrics()).rejects.toThrow()
    expect(events.length).toBe(afterClose)
    await client.close() // idempotent
  })

  test('close() before ready() finishes, and twice, resolves', async () => {
    const client = new DhtPromClient(env.createDht(), () => 'x 1\n', scraperKeyPair.publicKey, 'a', SECRET, 's')
    const ready = client.ready()
    await Promise.all([client.close(), client.close()])
    await ready
    expect(client.closed).toBe(true)
  })

  test('the process exits by itself after close()', async () => {
    const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'close-and-exit.js')], {
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => { stdout += d })
    child.stderr.on('data', (d) => { stderr += d })
    const code = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error('child did not exit within 20 s: ' + stdout + stderr)) }, 20000)
      child.on('exit', (c) => { clearTimeout(timer); resolve(c) })
    })
    expect(stderr).toBe('')
    expect(code).toBe(0)
    const result = JSON.parse(stdout.trim())
    expect(result.res).toEqual({ success: true, metrics: 'up 1\n' })
    expect(result.dhtDestroyed).toBe(true)
    expect(result.closeMs).toBeLessThan(1500) // milliseconds in practice (4-13 ms measured)
  })
})
