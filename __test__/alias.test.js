'use strict'
const os = require('os')
const HyperDHT = require('hyperdht')
const Hyperswarm = require('hyperswarm')
const ProtomuxRpcClient = require('protomux-rpc-client')
const AliasRpcServer = require('dht-prom-alias-rpc')
const DhtPromClient = require('..')
const { setup, once } = require('./helpers')

const SECRET = Buffer.alloc(32, 3)

describe('alias registration (Rust) against the real dht-prom-alias-rpc server', () => {
  let env

  beforeEach(async () => { env = await setup() })
  afterEach(async () => { await env.teardown() })

  // The scraper side of dht-prometheus: an alias server on a Hyperswarm with the scraper's key.
  async function startAliasServer ({ secret = SECRET, keyPair = HyperDHT.keyPair() } = {}) {
    const swarm = new Hyperswarm({ keyPair, bootstrap: env.bootstrap, dht: env.createDht({ keyPair }) })
    env.onCleanup(() => swarm.destroy())
    const aliases = new Map()
    const calls = []
    const server = new AliasRpcServer(swarm, secret, async (alias, targetPublicKey, hostname, service) => {
      calls.push({ alias, targetPublicKey, hostname, service })
      const previous = aliases.get(alias)
      aliases.set(alias, targetPublicKey)
      return !previous || !previous.equals(targetPublicKey)
    })
    await swarm.listen()
    return { keyPair, server, calls }
  }

  function makeClient (scraperPublicKey, opts = {}, secret = SECRET) {
    const client = new DhtPromClient(env.createDht(), () => 'm 1\n', scraperPublicKey, 'my-alias', secret, 'my-service', opts)
    env.onCleanup(() => client.close())
    return client
  }

  test('registers at ready() (updated:true), re-registers every interval (updated:false)', async () => {
    const { keyPair, calls } = await startAliasServer()
    const client = makeClient(keyPair.publicKey, { registerIntervalMs: 200 })
    const attempts = []
    client.aliasClient.on('alias-attempt', (a) => attempts.push(a))
    const first = once(client, 'register-alias-success')
    await client.ready()
    expect(await first).toMatchObject({ updated: true })
    expect(await once(client, 'register-alias-success')).toMatchObject({ updated: false })
    expect(calls[0].alias).toBe('my-alias')
    expect(Buffer.from(calls[0].targetPublicKey).equals(client.publicKey)).toBe(true)
    expect(calls[0].hostname).toBe(os.hostname())
    expect(calls[0].service).toBe('my-service')
    expect(attempts.length).toBeGreaterThanOrEqual(2)
    expect(Buffer.from(attempts[0].targetKey).equals(client.publicKey)).toBe(true)
  })

  test('option keyPair sets client.publicKey, which is what gets registered', async () => {
    const { keyPair, calls } = await startAliasServer()
    const own = HyperDHT.keyPair()
    const client = makeClient(keyPair.publicKey, { keyPair: own, hostname: 'box-1' })
    expect(client.publicKey.equals(own.publicKey)).toBe(true)
    const done = once(client, 'register-alias-success')
    await client.ready()
    await done
    expect(Buffer.from(calls[0].targetPublicKey).equals(own.publicKey)).toBe(true)
    expect(calls[0].hostname).toBe('box-1')
  })

  test('a wrong secret gives register-alias-error "Unauthorised"', async () => {
    const { keyPair } = await startAliasServer()
    const client = makeClient(keyPair.publicKey, {}, Buffer.alloc(32, 9))
    const failed = once(client, 'register-alias-error')
    await client.ready()
    const error = await failed
    expect(error.message).toBe('Unauthorised')
  })

  test('an unreachable scraper gives register-alias-error with a code; scrapes still work', async () => {
    const scraperKeyPair = HyperDHT.keyPair() // nobody listens on it
    const client = makeClient(scraperKeyPair.publicKey)
    const failed = once(client, 'register-alias-error', { timeout: 20000 })
    await client.ready()
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'm 1\n' })
    const error = await failed
    expect(['PEER_CONNECTION_FAILED', 'REQUEST_TIMEOUT']).toContain(error.code)
    expect(error.message.length).toBeGreaterThan(0)
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'm 1\n' })
  }, 30000)

  // protomux-rpc-client keeps dialling after a request's timeout (5 s, 15 s, ... between
  // failed dials); so does ours, so a scraper that comes up late, or a punch slower than the
  // 10 s a registration waits, still ends in a registration.
  test('a scraper that comes up after the first dial failed still gets the first registration (the dial is retried)', async () => {
    const keyPair = HyperDHT.keyPair()
    const client = makeClient(keyPair.publicKey)
    const outcome = new Promise((resolve) => {
      client.once('register-alias-success', (success) => resolve({ ok: true, ...success }))
      client.once('register-alias-error', (error) => resolve({ ok: false, error }))
    })
    await client.ready() // the first dial is under way: nobody announces the scraper's key yet
    const { calls } = await startAliasServer({ keyPair })
    expect(await outcome).toMatchObject({ ok: true, updated: true })
    expect(calls).toHaveLength(1)
  }, 30000)

  test('a given protomuxRpcClient is used for registration and closed by close()', async () => {
    const { keyPair, calls } = await startAliasServer()
    const rpc = new ProtomuxRpcClient(env.createDht())
    const used = jest.spyOn(rpc, 'makeRequest')
    const client = makeClient(keyPair.publicKey, { protomuxRpcClient: rpc })
    const done = once(client, 'register-alias-success')
    await client.ready()
    expect(await done).toMatchObject({ updated: true })
    expect(used).toHaveBeenCalledTimes(1)
    expect(used.mock.calls[0][1]).toBe('alias')
    expect(calls.length).toBe(1)
    await client.close()
    expect(rpc.closed).toBe(true)
  })

  test('several scraper keys: each one is registered with, and events say which', async () => {
    const a = await startAliasServer()
    const b = await startAliasServer()
    const client = makeClient([a.keyPair.publicKey, b.keyPair.publicKey])
    const seen = new Set()
    const both = new Promise((resolve) => {
      client.on('register-alias-success', ({ scraperPublicKey }) => {
        seen.add(Buffer.from(scraperPublicKey).toString('hex'))
        if (seen.size === 2) resolve()
      })
    })
    await client.ready()
    await both
    expect(seen).toEqual(new Set([a.keyPair.publicKey.toString('hex'), b.keyPair.publicKey.toString('hex')]))
    expect(a.calls.length).toBe(1)
    expect(b.calls.length).toBe(1)
  })
})
