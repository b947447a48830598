'use strict'
// Constructor arguments, drop-in: whatever dht-prom-client@2.1.0 accepts we accept, we throw
// in the constructor only where it throws there, and where it fails later we fail at that
// same point. The first block runs against both implementations; the second checks what
// only we add: one process warning per such argument (code DHT_PROM_CLIENT_RS_ARG) and
// clearer messages at the point of failure.
const HyperDHT = require('hyperdht')
const idEnc = require('hypercore-id-encoding')
const RustClient = require('..')
const ReferenceClient = require('dht-prom-client')
const { setup, once, within } = require('./helpers')

const SECRET = Buffer.alloc(32, 4)
const IMPLEMENTATIONS = [['rust', RustClient], ['reference', ReferenceClient]]
const SCRAPER = HyperDHT.keyPair()
const GOOD_PAIR = HyperDHT.keyPair()
const OTHER_PAIR = HyperDHT.keyPair()

function thrown (fn) {
  try { fn() } catch (err) { return err }
  return null
}

// z32 with the 4 padding bits of its last char set: the JS decoder ignores them.
function paddedZ32 (key) {
  const z = idEnc.normalize(key)
  const alphabet = 'ybndrfg8ejkmcpqxot1uwisza345h769'
  return z.slice(0, 51) + alphabet[alphabet.indexOf(z[51]) | 0b01111]
}

// Where the reference throws in its constructor (a TypeError reading or calling a missing
// thing, or hypercore-id-encoding's Error): so do we.
const THROWING = [
  ['opts null', { opts: null }],
  ['scraperPublicKey of 31 bytes', { scraperPublicKey: Buffer.alloc(31) }],
  ['scraperPublicKey too short a string', { scraperPublicKey: 'abc' }],
  ['scraperPublicKey bad hex', { scraperPublicKey: 'z'.repeat(64) }],
  ['scraperPublicKey bad z32', { scraperPublicKey: 'l'.repeat(52) }],
  ['scraperPublicKey null', { scraperPublicKey: null }],
  ['scraperPublicKey a number', { scraperPublicKey: 42 }],
  ['scraperSecret of 33 bytes', { scraperSecret: Buffer.alloc(33) }],
  ['scraperSecret bad hex', { scraperSecret: 'g'.repeat(64) }],
  ['scraperSecret undefined', { scraperSecret: undefined }],
  ['getMetrics null', { getMetrics: null }],
  ['getMetrics undefined', { getMetrics: undefined }],
  ['getMetrics.register.metrics not a function', { getMetrics: { register: { metrics: 'x' } } }],
  ['dht null', { dht: null }],
  ['dht a string', { dht: '127.0.0.1' }],
  ['dht a number', { dht: 7 }]
]

// Taken by the reference at construction (kept as given), whatever happens later.
const ACCEPTED = [
  ['getMetrics a number', { getMetrics: 42 }, (c) => expect(c.getMetrics).toBe(42)],
  ['getMetrics a string', { getMetrics: 'up 1\n' }, (c) => expect(c.getMetrics).toBe('up 1\n')],
  ['getMetrics a plain object', { getMetrics: { a: 1 } }, (c) => expect(c.getMetrics).toEqual({ a: 1 })],
  ['alias a number', { alias: 42 }, (c) => expect(c.alias).toBe(42)],
  ['alias undefined', { alias: undefined }, (c) => expect(c.alias).toBeUndefined()],
  ['service null', { service: null }, (c) => expect(c.service).toBeNull()],
  ['service an object', { service: { name: 's' } }, (c) => expect(c.service).toEqual({ name: 's' })],
  ['opts.hostname a number', { opts: { hostname: 7 } }, (c) => expect(c.hostname).toBe(7)],
  ['opts.hostname null', { opts: { hostname: null } }, (c) => expect(c.hostname).toBeNull()],
  ['opts.registerIntervalMs 0', { opts: { registerIntervalMs: 0 } }, (c) => expect(c.registerIntervalMs).toBe(0)],
  ['opts.registerIntervalMs negative', { opts: { registerIntervalMs: -5 } }, (c) => expect(c.registerIntervalMs).toBe(-5)],
  ['opts.registerIntervalMs NaN', { opts: { registerIntervalMs: NaN } }, (c) => expect(c.registerIntervalMs).toBeNaN()],
  ['opts.registerIntervalMs Infinity', { opts: { registerIntervalMs: Infinity } }, (c) => expect(c.registerIntervalMs).toBe(Infinity)],
  ['opts.registerIntervalMs a string', { opts: { registerIntervalMs: '1000' } }, (c) => expect(c.registerIntervalMs).toBe('1000')],
  ['opts.registerIntervalMs a BigInt', { opts: { registerIntervalMs: 10n } }, (c) => expect(c.registerIntervalMs).toBe(10n)],
  ['opts.keyPair a string', { opts: { keyPair: 'pair' } }, (c) => { expect(c.serverKeyPair).toBe('pair'); expect(c.publicKey).toBeUndefined() }],
  ['opts.keyPair without secretKey', { opts: { keyPair: { publicKey: GOOD_PAIR.publicKey } } }, (c) => expect(c.publicKey).toBe(GOOD_PAIR.publicKey)],
  ['opts.keyPair with a 31-byte publicKey', { opts: { keyPair: { publicKey: Buffer.alloc(31), secretKey: GOOD_PAIR.secretKey } } }, (c) => expect(c.publicKey.byteLength).toBe(31)],
  ['opts.keyPair whose secretKey is another pair\'s', { opts: { keyPair: { publicKey: GOOD_PAIR.publicKey, secretKey: OTHER_PAIR.secretKey } } }, (c) => expect(c.publicKey).toBe(GOOD_PAIR.publicKey)],
  ['opts.keyPair falsy (a fresh pair)', { opts: { keyPair: 0 } }, (c) => { expect(Buffer.isBuffer(c.publicKey)).toBe(true); expect(c.publicKey.byteLength).toBe(32) }],
  ['opts a number', { opts: 5 }, (c) => expect(c.registerIntervalMs).toBe(60 * 60 * 1000)],
  ['opts.includeOwnMetrics not a boolean', { opts: { includeOwnMetrics: 'yes' } }, () => {}],
  ['scraperPublicKey a Uint8Array, kept as given', { scraperPublicKey: new Uint8Array(SCRAPER.publicKey) }, (c, a) => expect(c.scraperPublicKey).toBe(a.scraperPublicKey)],
  ['scraperPublicKey a Buffer, kept as given', {}, (c, a) => expect(c.scraperPublicKey).toBe(a.scraperPublicKey)],
  ['scraperPublicKey in z32 with non-zero padding bits', { scraperPublicKey: paddedZ32(SCRAPER.publicKey) }, (c) => expect(Buffer.from(c.scraperPublicKey).equals(SCRAPER.publicKey)).toBe(true)],
  ['scraperPublicKey as a pear:// link', { scraperPublicKey: `pear://${idEnc.normalize(SCRAPER.publicKey)}/x` }, (c) => expect(Buffer.from(c.scraperPublicKey).equals(SCRAPER.publicKey)).toBe(true)],
  ['scraperPublicKey in upper-case hex', { scraperPublicKey: SCRAPER.publicKey.toString('hex').toUpperCase() }, (c) => expect(Buffer.from(c.scraperPublicKey).equals(SCRAPER.publicKey)).toBe(true)]
]

describe.each(IMPLEMENTATIONS)('%s: arguments as dht-prom-client 2.1.0 takes them', (impl, Client) => {
  let env
  beforeAll(async () => { env = await setup() })
  afterAll(async () => { await env.teardown() })

  function args (change = {}) {
    return {
      dht: env.createDht(),
      getMetrics: () => 'up 1\n',
      scraperPublicKey: SCRAPER.publicKey,
      alias: 'arg-alias',
      scraperSecret: SECRET,
      service: 'arg-svc',
      opts: {},
      ...change
    }
  }

  function construct (a) {
    const client = new Client(a.dht, a.getMetrics, a.scraperPublicKey, a.alias, a.scraperSecret, a.service, a.opts)
    env.onCleanup(() => client.close().catch(() => {}))
    return client
  }

  test.each(THROWING)('throws in the constructor: %s', (_name, change) => {
    const err = thrown(() => construct(args(change)))
    expect(err).not.toBeNull()
    expect(err.name).toMatch(/Error$/)
  })

  test.each(ACCEPTED)('constructs and keeps it as given: %s', async (_name, change, check) => {
    const a = args(change)
    const client = construct(a)
    check(client, a)
    // Never started: close() destroys the dht all the same, as ready-resource closes.
    await client.close()
    expect(client.closed).toBe(true)
    expect(a.dht.destroyed).toBe(true)
  })

  test('a protomux-rpc-client without close(): close() rejects with a TypeError and leaves the dht', async () => {
    const a = args({ opts: { protomuxRpcClient: { makeRequest: async () => { throw new Error('unused') } } } })
    const client = construct(a)
    const err = await client.close().then(() => null, (e) => e)
    expect(err).not.toBeNull()
    expect(err.name).toBe('TypeError')
    expect(client.closed).toBe(false)
    expect(a.dht.destroyed).toBe(false)
  })

  test('getMetrics not a function: ready() resolves, each scrape fails with metrics-error (a TypeError)', async () => {
    const client = construct(args({ getMetrics: 42 }))
    await client.ready()
    const { scraper } = env.createScraper(client.publicKey, { keyPair: SCRAPER })
    const errored = once(client, 'metrics-error')
    const res = await scraper.requestMetrics()
    const { error, uid } = await errored
    expect(error.name).toBe('TypeError')
    expect(res).toEqual({ success: false, errorMessage: `Failed to obtain metrics (uid ${uid})` })
    // Replaced by a function later, it is used.
    client.getMetrics = () => 'late 1\n'
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'late 1\n' })
    await client.close()
  })

  // Only the registration needs them (and fails on them): scrapes are served.
  test.each([
    ['alias a number', { alias: 42 }],
    ['service an object', { service: {} }],
    ['opts.hostname null', { opts: { hostname: null } }]
  ])('%s: ready() resolves and scrapes are served', async (_name, change) => {
    const client = construct(args(change))
    await client.ready()
    const { scraper } = env.createScraper(client.publicKey, { keyPair: SCRAPER })
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'up 1\n' })
    await client.close()
  })

  test('opts.registerIntervalMs as a numeric string: re-registered that often, as setInterval reads it', async () => {
    const aliasServer = await env.createAliasServer({ secret: SECRET })
    const client = construct(args({ scraperPublicKey: aliasServer.keyPair.publicKey, opts: { registerIntervalMs: '100' } }))
    const successes = []
    const third = new Promise((resolve) => client.on('register-alias-success', (p) => {
      successes.push(p)
      if (successes.length === 3) resolve()
    }))
    await client.ready()
    await within(third, 5000, 'three registrations')
    expect(successes.map((p) => p.updated)).toEqual([true, false, false])
    await client.close()
  })

  test.each([
    ['opts.keyPair a string', { opts: { keyPair: 'pair' } }],
    ['opts.registerIntervalMs a BigInt', { opts: { registerIntervalMs: 10n } }]
  ])('%s: ready() rejects; close() resolves and leaves the dht, as ready-resource after a failed open', async (_name, change) => {
    const a = args(change)
    const client = construct(a)
    const closed = once(client, 'close')
    const err = await client.ready().then(() => null, (e) => e)
    expect(err).not.toBeNull()
    expect(err.name).toMatch(/Error$/)
    await closed // the failed open closes the client by itself
    expect(client.opened).toBe(false)
    expect(client.closed).toBe(true)
    await client.close()
    expect(a.dht.destroyed).toBe(false)
  })
})

describe('rust only: a warning at construction, a clearer failure later', () => {
  let env
  let warnings
  beforeAll(async () => { env = await setup() })
  afterAll(async () => { await env.teardown() })
  beforeEach(() => {
    warnings = []
    jest.spyOn(process, 'emitWarning').mockImplementation((message, options) => { warnings.push({ message, options }) })
  })
  afterEach(() => jest.restoreAllMocks())

  function construct (change = {}) {
    const a = {
      dht: env.createDht(),
      getMetrics: () => 'up 1\n',
      scraperPublicKey: SCRAPER.publicKey,
      alias: 'arg-alias',
      scraperSecret: SECRET,
      service: 'arg-svc',
      opts: {},
      ...change
    }
    const client = new RustClient(a.dht, a.getMetrics, a.scraperPublicKey, a.alias, a.scraperSecret, a.service, a.opts)
    env.onCleanup(() => client.close().catch(() => {}))
    return client
  }

  test.each([
    ['getMetrics a number', { getMetrics: 42 }, /^getMetrics is number 42, not a function or a prom-client: every scrape will fail/],
    ['alias a number', { alias: 42 }, /^alias must be a string, got number 42: the alias registration will fail/],
    ['alias undefined', { alias: undefined }, /^alias must be a string, got undefined: the alias registration will fail/],
    ['service null', { service: null }, /^service must be a string, got null: the alias registration will fail/],
    ['opts.hostname a number', { opts: { hostname: 7 } }, /^opts\.hostname must be a string, got number 7: the alias registration will fail/],
    ['opts.registerIntervalMs 0', { opts: { registerIntervalMs: 0 } }, /^opts\.registerIntervalMs is number 0: registering every 1 ms, as setInterval does/],
    ['opts.registerIntervalMs a string', { opts: { registerIntervalMs: '1000' } }, /^opts\.registerIntervalMs is string 1000: registering every 1000 ms/],
    ['opts.registerIntervalMs above setInterval\'s limit', { opts: { registerIntervalMs: 2 ** 31 } }, /^opts\.registerIntervalMs is number 2147483648: registering every 1 ms/],
    ['opts.registerIntervalMs a BigInt', { opts: { registerIntervalMs: 10n } }, /^opts\.registerIntervalMs must be a number of milliseconds, got bigint 10n .*: ready\(\) will fail/],
    ['opts.keyPair a string', { opts: { keyPair: 'pair' } }, /^opts\.keyPair must be \{ publicKey: 32 bytes, secretKey: 64 bytes \}, got string pair: ready\(\) will fail/],
    ['opts.keyPair of two pairs', { opts: { keyPair: { publicKey: GOOD_PAIR.publicKey, secretKey: OTHER_PAIR.secretKey } } }, /^opts\.keyPair\.secretKey does not belong to opts\.keyPair\.publicKey: ready\(\) will fail/],
    ['opts.protomuxRpcClient without makeRequest', { opts: { protomuxRpcClient: 5 } }, /^opts\.protomuxRpcClient must be a protomux-rpc-client, got number 5 without makeRequest\(\): the alias registration will fail/],
    ['opts.protomuxRpcClient without close', { opts: { protomuxRpcClient: { makeRequest () {} } } }, /^opts\.protomuxRpcClient has no close\(\): close\(\) will fail/],
    ['opts.includeOwnMetrics not a boolean', { opts: { includeOwnMetrics: 'yes' } }, /^opts\.includeOwnMetrics is string yes, not a boolean: ignored/]
  ])('%s: one warning naming it', (_name, change, message) => {
    construct(change)
    expect(warnings.length).toBe(1)
    expect(warnings[0].message).toMatch(message)
    expect(warnings[0].options).toEqual({ type: 'DhtPromClientWarning', code: 'DHT_PROM_CLIENT_RS_ARG' })
  })

  test('one warning per argument; none for good arguments', () => {
    construct({ alias: 1, service: 2, getMetrics: 3 })
    expect(warnings.map((w) => w.message.split(' ')[0])).toEqual(['getMetrics', 'alias', 'service'])
    warnings.length = 0
    construct({ opts: { keyPair: GOOD_PAIR, hostname: 'h', registerIntervalMs: 1000, includeOwnMetrics: true } })
    construct({ scraperPublicKey: [SCRAPER.publicKey, idEnc.normalize(GOOD_PAIR.publicKey)] })
    expect(warnings).toEqual([])
  })

  test('the thrown errors are TypeErrors naming the argument', () => {
    for (const [change, message] of [
      [{ opts: null }, /^opts must be an object/],
      [{ scraperPublicKey: Buffer.alloc(31) }, /^scraperPublicKey must be 32 bytes, got 31/],
      [{ scraperPublicKey: 'abc' }, /^scraperPublicKey .*got 3 chars/],
      [{ scraperPublicKey: 'z'.repeat(64) }, /^scraperPublicKey .*not valid hex/],
      [{ scraperPublicKey: 'l'.repeat(52) }, /^scraperPublicKey .*not valid z32/],
      [{ scraperPublicKey: [] }, /^scraperPublicKey must not be an empty array/],
      [{ scraperPublicKey: [SCRAPER.publicKey, 'abc'] }, /^scraperPublicKey\[1\] /],
      [{ scraperSecret: undefined }, /^scraperSecret must be a 32-byte/],
      [{ getMetrics: null }, /^getMetrics must be a function or a prom-client instance, got null/],
      [{ getMetrics: { register: { metrics: 'x' } } }, /^getMetrics\.register\.metrics must be a function/],
      [{ dht: null }, /^dht must be a HyperDHT instance or \{ bootstrap, host \}/],
      [{ dht: { bootstrap: '127.0.0.1:49737' } }, /^dht\.bootstrap must be an array/],
      [{ dht: { bootstrap: [{ host: '127.0.0.1' }] } }, /^bootstrap entries must be/],
      [{ dht: { host: 127 } }, /^dht\.host must be a string/]
    ]) {
      const err = thrown(() => construct(change))
      expect(err).not.toBeNull()
      expect(err.name).toBe('TypeError')
      expect(err.message).toMatch(message)
    }
  })

  test('a non-string service: every attempt is announced, then fails naming it; nothing reaches the scraper', async () => {
    const aliasServer = await env.createAliasServer({ secret: SECRET })
    const client = construct({ service: 42, scraperPublicKey: aliasServer.keyPair.publicKey, opts: { registerIntervalMs: 50 } })
    const seen = []
    client.aliasClient.on('alias-attempt', (p) => seen.push(['attempt', p]))
    const errors = new Promise((resolve) => client.on('register-alias-error', (e) => {
      seen.push(['error', e])
      if (seen.filter(([kind]) => kind === 'error').length === 2) resolve()
    }))
    await client.ready()
    await within(errors, 5000, 'two failed registrations')
    expect(seen.slice(0, 4).map(([kind]) => kind)).toEqual(['attempt', 'error', 'attempt', 'error'])
    const [, attempt] = seen[0]
    expect(attempt.service).toBe(42) // as the reference announces it
    const [, error] = seen[1]
    expect(error.name).toBe('TypeError')
    expect(error.code).toBe('DHT_PROM_CLIENT_RS_ARG')
    expect(error.message).toBe('cannot register the alias: service must be a string, got number 42')
    expect(error.scraperPublicKey.equals(aliasServer.keyPair.publicKey)).toBe(true)
    expect(aliasServer.calls).toEqual([])
    const { scraper } = env.createScraper(client.publicKey, { keyPair: aliasServer.keyPair })
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'up 1\n' })
    await client.close()
  })

  test('a protomux-rpc-client without makeRequest: registration fails naming it; close() rejects naming it', async () => {
    const client = construct({ opts: { protomuxRpcClient: 5 } })
    const failed = once(client, 'register-alias-error')
    await client.ready()
    expect((await failed).message).toMatch(/^cannot register the alias: opts\.protomuxRpcClient must be a protomux-rpc-client/)
    await expect(client.close()).rejects.toThrow(/^opts\.protomuxRpcClient has no close\(\)/)
    expect(client.closed).toBe(false)
    expect(client.dht.destroyed).toBe(false) // as the reference, which fails before destroying it
    // Our server has stopped all the same: nothing of it outlives the failed close().
    const { scraper } = env.createScraper(client.publicKey, { keyPair: SCRAPER, requestTimeout: 1500 })
    await expect(scraper.requestMetrics()).rejects.toThrow()
  })

  test('getMetrics not a function: the metrics-error names it', async () => {
    const client = construct({ getMetrics: 'up 1\n' })
    await client.ready()
    const { scraper } = env.createScraper(client.publicKey, { keyPair: SCRAPER })
    const errored = once(client, 'metrics-error')
    expect((await scraper.requestMetrics()).success).toBe(false)
    const { error } = await errored
    expect(error.message).toMatch(/^getMetrics is string up 1/)
    await client.close()
  })

  test.each([
    ['opts.keyPair a string', { opts: { keyPair: 'pair' } }, /^opts\.keyPair must be \{ publicKey: 32 bytes, secretKey: 64 bytes \}, got string pair: the server cannot listen on it/],
    ['opts.keyPair without secretKey', { opts: { keyPair: { publicKey: GOOD_PAIR.publicKey } } }, /^opts\.keyPair must be/],
    ['opts.keyPair with a 32-byte secretKey', { opts: { keyPair: { publicKey: GOOD_PAIR.publicKey, secretKey: Buffer.alloc(32) } } }, /^opts\.keyPair must be/],
    ['opts.keyPair of two pairs', { opts: { keyPair: { publicKey: GOOD_PAIR.publicKey, secretKey: OTHER_PAIR.secretKey } } }, /^opts\.keyPair\.secretKey does not belong to opts\.keyPair\.publicKey/],
    ['opts.registerIntervalMs a Symbol', { opts: { registerIntervalMs: Symbol('ms') } }, /^opts\.registerIntervalMs must be a number of milliseconds, got a symbol/]
  ])('%s: ready() rejects with a TypeError naming it, before anything starts', async (_name, change, message) => {
    const client = construct(change)
    await expect(client.ready()).rejects.toThrow(message)
    expect(client.ownMetrics()).toBe('') // no server was started
  })
})
