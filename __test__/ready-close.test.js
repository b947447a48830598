'use strict'
// ready() and close() as dht-prom-client@2.1.0 has them from ready-resource: the same
// promise on every call, 'ready' and 'close' events, what ready() after close() and
// close() before or during ready() do, property values before and after, and the order of
// the events around them. Every test runs against both implementations.
const { EventEmitter } = require('events')
const HyperDHT = require('hyperdht')
const RustClient = require('..')
const ReferenceClient = require('dht-prom-client')
const { setup, once } = require('./helpers')

const SECRET = Buffer.alloc(32, 8)
const IMPLEMENTATIONS = [['rust', RustClient], ['reference', ReferenceClient]]

describe.each(IMPLEMENTATIONS)('%s: ready() and close() as ready-resource', (_impl, Client) => {
  let env
  const scraperKeyPair = HyperDHT.keyPair()

  beforeAll(async () => { env = await setup() })
  afterAll(async () => { await env.teardown() })

  function create (opts) {
    const dht = env.createDht()
    const getMetrics = () => 'rc 1\n'
    const client = new Client(dht, getMetrics, scraperKeyPair.publicKey, 'rc-alias', SECRET, 'rc-svc', opts)
    env.onCleanup(() => client.close())
    return { client, dht, getMetrics }
  }

  // Events on the client and its aliasClient, and marks, in one order.
  function timeline (client) {
    const order = []
    for (const name of ['ready', 'close', 'register-alias-success', 'register-alias-error', 'connection-open', 'connection-close']) {
      client.on(name, () => order.push(name))
    }
    client.aliasClient.on('alias-attempt', () => order.push('alias-attempt'))
    return order
  }

  test('before ready(): the properties as given, nothing opened', () => {
    const keyPair = HyperDHT.keyPair()
    const { client, dht, getMetrics } = create({ keyPair, hostname: 'rc-host', registerIntervalMs: 4321 })
    expect(client.opening).toBeNull()
    expect(client.closing).toBeNull()
    expect(client.opened).toBe(false)
    expect(client.closed).toBe(false)
    expect(client.dht).toBe(dht)
    expect(client.getMetrics).toBe(getMetrics)
    expect(client.promClient).toBeNull()
    expect(client.scraperPublicKey).toBe(scraperKeyPair.publicKey)
    expect(client.serverKeyPair).toBe(keyPair)
    expect(client.publicKey).toBe(keyPair.publicKey)
    expect(client.alias).toBe('rc-alias')
    expect(client.service).toBe('rc-svc')
    expect(client.hostname).toBe('rc-host')
    expect(client.registerIntervalMs).toBe(4321)
    expect(client.aliasClient).toBeInstanceOf(EventEmitter)
    expect(client.aliasClient.serverPubKey).toBe(scraperKeyPair.publicKey)
    expect(client.aliasClient.secret).toBe(SECRET)
  })

  test('ready(): one promise; alias-attempt, then the ready event, then it resolves; properties unchanged', async () => {
    const { client } = create()
    const publicKey = client.publicKey
    const order = timeline(client)
    const opening = client.ready()
    expect(client.ready()).toBe(opening)
    expect(client.opening).toBe(opening)
    expect(client.opened).toBe(false)
    await opening
    order.push('ready() resolved')
    expect(order).toEqual(['alias-attempt', 'ready', 'ready() resolved'])
    expect(client.opened).toBe(true)
    expect(client.closed).toBe(false)
    expect(client.publicKey).toBe(publicKey)
    expect(client.scraperPublicKey).toBe(scraperKeyPair.publicKey)
    await client.close()
  })

  test('close(): one promise; a connected scraper\'s connection-close, then the close event, then it resolves; then silence', async () => {
    const { client, dht } = create()
    await client.ready()
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'rc 1\n' })
    const order = timeline(client)
    const closing = client.close()
    expect(client.close()).toBe(closing)
    expect(client.closing).toBe(closing)
    await closing
    order.push('close() resolved')
    // The reference may also end a registration still trying to reach the scraper
    // (register-alias-error); ours has given up on it already. Left out of the order.
    expect(order.filter((name) => name !== 'register-alias-error')).toEqual(['connection-close', 'close', 'close() resolved'])
    expect(client.closed).toBe(true)
    expect(dht.destroyed).toBe(true)
    const after = order.length
    await expect(scraper.requestMetrics({ timeout: 1500 })).rejects.toThrow()
    expect(order.length).toBe(after)
  })

  test('close() before ready(): the dht is destroyed and the close event comes; ready() then resolves without opening', async () => {
    const { client, dht } = create()
    const order = timeline(client)
    await client.close()
    expect(client.closed).toBe(true)
    expect(dht.destroyed).toBe(true)
    await client.ready()
    expect(client.opened).toBe(false)
    expect(order).toEqual(['close'])
  })

  test('close() while ready() runs: ready() resolves (opened, ready event), then close() finishes', async () => {
    const { client, dht } = create()
    const order = timeline(client)
    const opening = client.ready()
    const closing = client.close()
    await opening
    order.push('ready() resolved')
    await closing
    expect(client.opened).toBe(true)
    expect(client.closed).toBe(true)
    expect(dht.destroyed).toBe(true)
    expect(order.filter((name) => name !== 'register-alias-error')).toEqual(['alias-attempt', 'ready', 'ready() resolved', 'close'])
  })

  test('a failed ready(): it rejects, the client closes by itself (close event), close() resolves', async () => {
    const { client } = create({ keyPair: 'not a key pair' })
    const order = timeline(client)
    const closed = once(client, 'close')
    await expect(client.ready()).rejects.toThrow()
    await closed
    expect(client.opened).toBe(false)
    expect(client.closed).toBe(true)
    await client.close()
    expect(order).toEqual(['close'])
  })
})
