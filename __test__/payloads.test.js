'use strict'
// Event payloads, key for key: each scenario runs once against this package and once
// against dht-prom-client@2.1.0 (each on its own loopback testnet, with the same key pairs
// and arguments), records every event in order, and the two recordings must be deeply and
// strictly equal. Only what differs from run to run by nature is normalised first: uids
// (numbered by first appearance), UDP ports, the handshake fields the connecting JS peer
// picks at random, and the milliseconds left that protomux-rpc puts in its timeout
// message. Key order is compared too.
const assert = require('assert')
const { types } = require('util')
const HyperDHT = require('hyperdht')
const ProtomuxRpcClient = require('protomux-rpc-client')
const RustClient = require('..')
const ReferenceClient = require('dht-prom-client')
const { setup, once, within } = require('./helpers')

const SECRET = Buffer.alloc(32, 5)
const CLIENT = HyperDHT.keyPair()
const SCRAPER = HyperDHT.keyPair()
const INTRUDER = HyperDHT.keyPair()
const CLIENT_EVENTS = [
  'register-alias-success', 'register-alias-error',
  'connection-open', 'connection-close', 'connection-error',
  'metrics-request', 'metrics-success', 'metrics-error', 'firewall-block',
  'ready', 'close'
]
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g

// Every event in order ('alias-attempt' on client.aliasClient), plus marks the scenario adds.
function recorder (client) {
  const log = []
  for (const name of CLIENT_EVENTS) client.on(name, (payload) => log.push({ on: 'client', name, payload }))
  client.aliasClient.on('alias-attempt', (payload) => log.push({ on: 'aliasClient', name: 'alias-attempt', payload }))
  return { log, mark: (name, payload) => log.push({ on: 'test', name, payload }) }
}

// A comparable picture of a value: arrays of [key, value] keep the key order; Errors become
// their class, name, message, and own enumerable properties (not the stack).
function picture (value, uids, path = '') {
  if (typeof value === 'string') {
    return value.replace(UUID, (uid) => {
      if (!uids.has(uid)) uids.set(uid, `uid#${uids.size + 1}`)
      return uids.get(uid)
    }).replace(/^(\d+\.\d+\.\d+\.\d+):\d+$/, '$1:<port>').replace(/timeout of \d+ms exceeded/, 'timeout of <n>ms exceeded')
  }
  if (value === null || typeof value !== 'object') {
    // Chosen by the connecting JS peer at random (udx stream id and sequence) or by its
    // socket (port), not by the server.
    if (/(^|\.)(port|id|seq)$/.test(path) && typeof value === 'number') return `<${typeof value}>`
    return value
  }
  if (value instanceof Uint8Array) return { [value.constructor.name]: Buffer.from(value).toString('hex') }
  if (Array.isArray(value)) return value.map((v, i) => picture(v, uids, `${path}[${i}]`))
  const entries = Object.keys(value).map((key) => [key, picture(value[key], uids, `${path}.${key}`)])
  // By class name: errors made by a native addon (udx-native's) come from another realm
  // than jest's, for the reference as for us.
  if (types.isNativeError(value) || value instanceof Error) {
    return { error: value.constructor.name, name: value.name, message: picture(value.message, uids), own: entries }
  }
  return { [value.constructor ? value.constructor.name : 'null-prototype']: entries }
}

function pictureOf (log) {
  const uids = new Map()
  return log.map(({ on, name, payload }) => [on, name, picture(payload, uids)])
}

async function both (scenario) {
  const runs = {}
  for (const [impl, Client] of [['rust', RustClient], ['reference', ReferenceClient]]) {
    const env = await setup()
    try {
      runs[impl] = await scenario(env, Client)
    } finally {
      await env.teardown()
    }
  }
  return runs
}

function expectSamePayloads ({ rust, reference }) {
  const ours = pictureOf(rust)
  const theirs = pictureOf(reference)
  // The names first, so that a failure says where the sequences part.
  expect(ours.map(([on, name]) => `${on}:${name}`)).toEqual(theirs.map(([on, name]) => `${on}:${name}`))
  for (let i = 0; i < ours.length; i++) assert.deepStrictEqual(ours[i], theirs[i], `event ${i} (${ours[i][1]})`)
  assert.deepStrictEqual(ours, theirs)
}

function newClient (env, Client, getMetrics, { secret = SECRET, scraper = SCRAPER.publicKey } = {}) {
  const client = new Client(env.createDht(), getMetrics, scraper, 'payload-alias', secret, 'payload-svc', {
    keyPair: CLIENT,
    hostname: 'host-1'
  })
  env.onCleanup(() => client.close())
  return client
}

describe('every event payload deep-equals the reference\'s (one scraper key)', () => {
  test('a whole session: registration, scrapes, a failing getMetrics, a blocked key, a scraper leaving, close() with one connected', async () => {
    const runs = await both(async (env, Client) => {
      const aliasServer = await env.createAliasServer({ keyPair: SCRAPER, secret: SECRET })
      const client = newClient(env, Client, () => 'up 1\n')
      const { log, mark } = recorder(client)
      const registered = once(client, 'register-alias-success')
      await client.ready()
      mark('ready() resolved')
      await registered

      // The scraper scrapes from the swarm that registered us, as dht-prometheus does.
      let rpc = new ProtomuxRpcClient(aliasServer.dht)
      env.onCleanup(() => rpc.close())
      const { scraper } = env.createScraper(CLIENT.publicKey, { keyPair: SCRAPER })
      scraper.rpcClient = rpc
      mark('reply', await scraper.requestMetrics())
      client.getMetrics = () => { throw new Error('no metrics today') }
      const errored = once(client, 'metrics-error')
      mark('reply', await scraper.requestMetrics())
      await errored

      const intruder = env.createScraper(CLIENT.publicKey, { keyPair: INTRUDER, requestTimeout: 1500 })
      const blocked = once(client, 'firewall-block')
      const attempt = intruder.scraper.requestMetrics()
      attempt.catch(() => {})
      await blocked
      await expect(attempt).rejects.toThrow()
      await intruder.rpc.close()

      const left = once(client, 'connection-close')
      await rpc.close()
      await left
      mark('scraper left')

      client.getMetrics = async () => 'up 2\n'
      rpc = new ProtomuxRpcClient(aliasServer.dht)
      scraper.rpcClient = rpc
      mark('reply', await scraper.requestMetrics())
      await client.close()
      mark('close() resolved')
      return log
    })
    expectSamePayloads(runs)
    // What the comparison covered, so that it cannot pass on two empty recordings.
    const names = runs.rust.map(({ name }) => name)
    for (const name of ['alias-attempt', 'ready', 'register-alias-success', 'connection-open', 'metrics-request',
      'metrics-success', 'metrics-error', 'firewall-block', 'connection-error', 'connection-close', 'close']) {
      expect(names).toContain(name)
    }
    // The scraper key of the registration is there to read, just not enumerable.
    const success = runs.rust.find(({ name }) => name === 'register-alias-success').payload
    expect(Object.keys(success)).toEqual(['updated'])
    expect(success.scraperPublicKey.equals(SCRAPER.publicKey)).toBe(true)
    const attempt = runs.rust.find(({ name }) => name === 'alias-attempt').payload
    expect(Object.keys(attempt)).toEqual(['alias', 'targetKey', 'hostname', 'service', 'uid'])
    expect(attempt.scraperPublicKey.equals(SCRAPER.publicKey)).toBe(true)
  }, 60000)

  test('a wrong secret: register-alias-error is the reference\'s plain Error("Unauthorised")', async () => {
    const runs = await both(async (env, Client) => {
      await env.createAliasServer({ keyPair: SCRAPER, secret: SECRET })
      const client = newClient(env, Client, () => 'up 1\n', { secret: Buffer.alloc(32, 6) })
      const { log, mark } = recorder(client)
      const failed = once(client, 'register-alias-error')
      await client.ready()
      mark('ready() resolved')
      await failed
      await client.close()
      return log
    })
    expectSamePayloads(runs)
    const error = runs.rust.find(({ name }) => name === 'register-alias-error').payload
    expect(error.message).toBe('Unauthorised')
    expect(error.scraperPublicKey.equals(SCRAPER.publicKey)).toBe(true)
    expect(Object.keys(error)).toEqual([])
  }, 60000)

  // With a protomux-rpc-client in opts the registrations go through it, so its errors are
  // the payload, as they are the reference's.
  function withRpcClient (env, Client, requestTimeout) {
    const dht = env.createDht()
    const protomuxRpcClient = new ProtomuxRpcClient(dht, { requestTimeout })
    const client = new Client(dht, () => 'up 1\n', SCRAPER.publicKey, 'payload-alias', SECRET, 'payload-svc', {
      keyPair: CLIENT, hostname: 'host-1', protomuxRpcClient
    })
    env.onCleanup(() => client.close())
    return client
  }

  // The alias server takes the request and never answers it.
  async function silentAliasServer (env) {
    let reached
    const atServer = new Promise((resolve) => { reached = resolve })
    await env.createAliasServer({ keyPair: SCRAPER, secret: SECRET, putAlias: () => { reached(); return new Promise(() => {}) } })
    return { atServer } // wrapped: an async function returning the promise itself would wait for it
  }

  // 10 s per implementation: the request timeout neither lets a caller change.
  test('registration in Rust, no answer in time: protomux-rpc\'s TIMEOUT_EXCEEDED, as the reference gets it', async () => {
    const runs = await both(async (env, Client) => {
      const { atServer } = await silentAliasServer(env)
      const client = newClient(env, Client, () => 'up 1\n')
      const { log, mark } = recorder(client)
      const failed = once(client, 'register-alias-error', { timeout: 15000 })
      await client.ready()
      mark('ready() resolved')
      await within(atServer, 10000, 'the request reaching the alias server')
      await failed
      await client.close()
      mark('close() resolved')
      return log
    })
    expectSamePayloads(runs)
    const error = runs.rust.find(({ name }) => name === 'register-alias-error').payload
    expect(error.name).toBe('RPCError')
    expect(error.code).toBe('TIMEOUT_EXCEEDED')
  }, 60000)

  test('a protomux-rpc-client in opts, no answer in time: its timeout error is the payload', async () => {
    const runs = await both(async (env, Client) => {
      await silentAliasServer(env)
      const client = withRpcClient(env, Client, 300)
      const { log, mark } = recorder(client)
      const failed = once(client, 'register-alias-error')
      await client.ready()
      mark('ready() resolved')
      await failed
      await client.close()
      mark('close() resolved')
      return log
    })
    expectSamePayloads(runs)
    const error = runs.rust.find(({ name }) => name === 'register-alias-error').payload
    expect(['REQUEST_TIMEOUT', 'TIMEOUT_EXCEEDED']).toContain(error.code)
  }, 60000)

  test('a protomux-rpc-client in opts, close() while its request is out: the error it ends it with, then close', async () => {
    const runs = await both(async (env, Client) => {
      const { atServer } = await silentAliasServer(env)
      const client = withRpcClient(env, Client, 10000)
      const { log, mark } = recorder(client)
      await client.ready()
      mark('ready() resolved')
      await within(atServer, 10000, 'the request reaching the alias server')
      await client.close()
      mark('close() resolved')
      return log
    })
    expectSamePayloads(runs)
    const names = runs.rust.map(({ name }) => name)
    expect(names.indexOf('register-alias-error')).toBeLessThan(names.indexOf('close'))
  }, 60000)
})

describe('rust only: registrations in Rust, several scraper keys', () => {
  let env
  beforeAll(async () => { env = await setup() })
  afterAll(async () => { await env.teardown() })

  // Our Rust side does not say whether the request was out yet: the reference's client
  // gives CLIENT_CLOSING while it connects, protomux-rpc's CHANNEL_DESTROYED after.
  test('close() while a registration is under way: register-alias-error CLIENT_CLOSING, then close', async () => {
    let reached
    const atServer = new Promise((resolve) => { reached = resolve })
    const aliasServer = await env.createAliasServer({ secret: SECRET, putAlias: () => { reached(); return new Promise(() => {}) } })
    const client = new RustClient(env.createDht(), () => 'up 1\n', aliasServer.keyPair.publicKey, 'a', SECRET, 's')
    env.onCleanup(() => client.close())
    const { log } = recorder(client)
    await client.ready()
    await within(atServer, 10000, 'the request reaching the alias server')
    await client.close()
    expect(log.map(({ name }) => name)).toEqual(['alias-attempt', 'ready', 'register-alias-error', 'close'])
    const error = log[2].payload
    expect(error.name).toBe('ProtomuxRpcClientError')
    expect(error.message).toBe('CLIENT_CLOSING: The protomux-rpc client is closing')
    expect(error.code).toBe('CLIENT_CLOSING')
    expect(error.scraperPublicKey.equals(aliasServer.keyPair.publicKey)).toBe(true)
  })

  test('each payload says which scraper in a non-enumerable scraperPublicKey; enumerable keys stay the reference\'s', async () => {
    const a = await env.createAliasServer({ secret: SECRET })
    const b = await env.createAliasServer({ secret: SECRET })
    const client = new RustClient(env.createDht(), () => 'up 1\n', [a.keyPair.publicKey, b.keyPair.publicKey], 'multi', SECRET, 'svc')
    env.onCleanup(() => client.close())
    const attempts = []
    client.aliasClient.on('alias-attempt', (payload) => attempts.push(payload))
    const successes = []
    const both = new Promise((resolve) => client.on('register-alias-success', (payload) => {
      successes.push(payload)
      if (successes.length === 2) resolve()
    }))
    await client.ready()
    await within(both, 10000, 'a registration with each scraper')
    const hex = (payloads) => payloads.map((p) => p.scraperPublicKey.toString('hex')).sort()
    const keys = [a.keyPair.publicKey.toString('hex'), b.keyPair.publicKey.toString('hex')].sort()
    expect(hex(successes)).toEqual(keys)
    expect(hex(attempts)).toEqual(keys)
    for (const payload of successes) expect(payload).toStrictEqual({ updated: true })
    for (const payload of attempts) expect(Object.keys(payload)).toEqual(['alias', 'targetKey', 'hostname', 'service', 'uid'])
    await client.close()
  })
})
