'use strict'
const crypto = require('crypto')
const HyperDHT = require('hyperdht')
const DhtPromClient = require('..')
const { setup, once, recordEvents } = require('./helpers')

const SECRET = Buffer.alloc(32, 1)

describe('metrics server (Rust) scraped by the real JS scraper', () => {
  let env
  let client
  let metricsText
  const scraperKeyPair = HyperDHT.keyPair()

  beforeAll(async () => {
    env = await setup()
    metricsText = '# HELP a 1\na 1\n'
    client = new DhtPromClient(
      env.createDht(),
      () => metricsText,
      scraperKeyPair.publicKey,
      'my-alias',
      SECRET,
      'my-service'
    )
    await client.ready()
  })

  afterAll(async () => {
    if (client) await client.close()
    if (env) await env.teardown()
  })

  test('serves a 1 KB multi-byte payload byte-exact and reports the connection', async () => {
    metricsText = ('# métriques ✓ ' + 'x'.repeat(40) + '\n').repeat(20).slice(0, 1024)
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    const opened = once(client, 'connection-open')
    const res = await scraper.requestMetrics()
    expect(res).toEqual({ success: true, metrics: metricsText })
    const { uid, remoteAddress, remotePublicKey } = await opened
    expect(uid).toMatch(/^[0-9a-f-]{36}$/)
    expect(remoteAddress).toMatch(/^127\.0\.0\.1:\d+$/)
    expect(Buffer.from(remotePublicKey).equals(scraperKeyPair.publicKey)).toBe(true)
  })

  test('serves 5 MB byte-exact (length and sha256)', async () => {
    metricsText = 'métrique_€ 1\n'.repeat(400000)
    expect(Buffer.byteLength(metricsText)).toBeGreaterThan(5 * 1024 * 1024)
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    const res = await scraper.requestMetrics()
    expect(res.success).toBe(true)
    expect(res.metrics.length).toBe(metricsText.length)
    const sha = (s) => crypto.createHash('sha256').update(s).digest('hex')
    expect(sha(res.metrics)).toBe(sha(metricsText))
  })

  test('metrics larger than one reply can carry: success:false and metrics-error with a RangeError', async () => {
    const { MAX_METRICS_BYTES } = require('../binding.js')
    expect(MAX_METRICS_BYTES).toBeGreaterThan(16 * 1024 * 1024 - 64)
    metricsText = 'x'.repeat(MAX_METRICS_BYTES + 1)
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    const errored = once(client, 'metrics-error')
    const res = await scraper.requestMetrics()
    const { error, uid } = await errored
    expect(error.name).toBe('RangeError')
    expect(error.message).toMatch(/more than the \d+ bytes one reply can carry/)
    expect(res).toEqual({ success: false, errorMessage: `Failed to obtain metrics (uid ${uid})` })
    metricsText = 'small 1\n'
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'small 1\n' })
  })

  test('200 sequential scrapes on one connection, then 20 concurrent ones', async () => {
    let n = 0
    client.getMetrics = () => `counter ${n++}\n`
    const { scraper, rpc } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    const seen = recordEvents(client, ['connection-open'])
    for (let i = 0; i < 200; i++) {
      const res = await scraper.requestMetrics()
      expect(res).toEqual({ success: true, metrics: `counter ${i}\n` })
    }
    const results = await Promise.all(Array.from({ length: 20 }, () => scraper.requestMetrics()))
    const values = results.map((r) => r.metrics).sort()
    expect(new Set(values).size).toBe(20)
    expect(seen.length).toBe(1)
    expect(rpc.nrConnections).toBe(1)
  })

  test('another key never connects, gets firewall-block, and the scraper is still served', async () => {
    client.getMetrics = () => 'ok 1\n'
    const intruder = HyperDHT.keyPair()
    const { scraper: stranger } = env.createScraper(client.publicKey, { keyPair: intruder, requestTimeout: 3000 })
    const seen = recordEvents(client, ['connection-open'])
    const blocked = once(client, 'firewall-block', {
      filter: ({ remotePublicKey }) => Buffer.from(remotePublicKey).equals(intruder.publicKey)
    })
    const attempt = stranger.requestMetrics()
    const event = await blocked
    expect(event.address).toMatch(/^127\.0\.0\.1:\d+$/)
    expect(event.payload.version).toBe(1)
    expect(event.payload.udx).toBeTruthy()
    await expect(attempt).rejects.toThrow()
    expect(seen).toEqual([])
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'ok 1\n' })
  })

  test('major or minor version 1000 gets DECODE_ERROR without calling getMetrics', async () => {
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    const requests = recordEvents(client, ['metrics-request'])
    await expect(scraper.requestMetrics({ major: 1000 })).rejects.toMatchObject({
      code: 'DECODE_ERROR',
      cause: expect.objectContaining({ message: 'Cannot decode RegisterRequest of other major version 1000 (own major: 1)' })
    })
    await expect(scraper.requestMetrics({ minor: 1000 })).rejects.toMatchObject({
      code: 'DECODE_ERROR',
      cause: expect.objectContaining({ message: 'Cannot decode RegisterRequest of higher minor version 1000 (own minor: 1)' })
    })
    expect(requests).toEqual([])
  })

  test('a getMetrics slower than the scraper timeout gives TIMEOUT_EXCEEDED; the next scrape works', async () => {
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    expect((await scraper.requestMetrics()).success).toBe(true) // connection is warm
    let release
    client.getMetrics = () => new Promise((resolve) => { release = () => resolve('slow 1\n') })
    const late = once(client, 'metrics-success')
    await expect(scraper.requestMetrics({ timeout: 50 })).rejects.toMatchObject({ code: 'TIMEOUT_EXCEEDED' })
    release()
    await late
    client.getMetrics = () => 'fast 1\n'
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'fast 1\n' })
  })

  test('a failing getMetrics gives success:false with the uid, and metrics-error with the Error', async () => {
    const failure = new Error('collector broke')
    client.getMetrics = async () => { throw failure }
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    const errored = once(client, 'metrics-error')
    const res = await scraper.requestMetrics()
    const { error, uid } = await errored
    expect(error).toBe(failure)
    expect(res).toEqual({ success: false, errorMessage: `Failed to obtain metrics (uid ${uid})` })
  })
})
