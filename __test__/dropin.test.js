'use strict'
// The drop-in claim, table-driven: every test in the first block runs against this package
// AND against the JS reference dht-prom-client@2.1.0 (same constructor, same real JS scraper),
// so each behaviour we claim to copy is shown to be the reference's. The second block covers
// what we do differently on purpose or beyond the reference; each test says why it is ours only.
const os = require('os')
const { EventEmitter } = require('events')
const HyperDHT = require('hyperdht')
const idEnc = require('hypercore-id-encoding')
const promClient = require('prom-client')
const RustClient = require('..')
const ReferenceClient = require('dht-prom-client')
const { setup, once, recordEvents } = require('./helpers')

const SECRET = Buffer.alloc(32, 3)
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const IMPLEMENTATIONS = [['rust', RustClient], ['reference', ReferenceClient]]

// On prom-client's default registry (the one `promClient.register` is), for the module form.
const upCounter = new promClient.Counter({ name: 'dropin_test_up_total', help: 'Times up' })
upCounter.inc(3)

const ALL_EVENTS = [
  'register-alias-success', 'register-alias-error',
  'connection-open', 'connection-close', 'connection-error',
  'metrics-request', 'metrics-success', 'metrics-error', 'firewall-block'
]

// The error fn throws (or null). Errors made in index.js come from another realm than
// jest's globals, so tests check err.name rather than instanceof.
function thrown (fn) {
  try { fn() } catch (err) { return err }
  return null
}

function memoryLogger (level) {
  const lines = []
  return {
    level,
    lines,
    info (msg) { lines.push(`info: ${msg}`) },
    debug (msg) { lines.push(`debug: ${msg}`) }
  }
}

// Every event a client emits, in order, including 'alias-attempt' on client.aliasClient
// (where the reference's registerLogger listens for it).
function recordAll (client) {
  const seen = []
  for (const name of ALL_EVENTS) client.on(name, (payload) => seen.push({ target: 'client', name, payload }))
  if (client.aliasClient) {
    client.aliasClient.on('alias-attempt', (payload) => seen.push({ target: 'aliasClient', name: 'alias-attempt', payload }))
  }
  return seen
}

// What the reference's own registerLogger logs for these events: its method, run on a
// stand-in with the fields it reads (alias, aliasClient), fed the same payloads.
function referenceLines (level, alias, seen) {
  const standIn = new EventEmitter()
  standIn.alias = alias
  standIn.aliasClient = new EventEmitter()
  const logger = memoryLogger(level)
  ReferenceClient.prototype.registerLogger.call(standIn, logger)
  for (const { target, name, payload } of seen) {
    (target === 'aliasClient' ? standIn.aliasClient : standIn).emit(name, payload)
  }
  return logger.lines
}

function metricValue (text, name) {
  const match = text.match(new RegExp(`^${name} (\\d+)$`, 'm'))
  return match === null ? null : Number(match[1])
}

describe.each(IMPLEMENTATIONS)('%s: drop-in behaviour shared with dht-prom-client 2.1.0', (_impl, Client) => {
  let env
  const scraperKeyPair = HyperDHT.keyPair()

  beforeAll(async () => { env = await setup() })
  afterAll(async () => { await env.teardown() })

  function create (getMetrics, opts) {
    const client = new Client(env.createDht(), getMetrics, scraperKeyPair.publicKey, 'drop-in', SECRET, 'svc', opts)
    env.onCleanup(() => client.close())
    return client
  }

  async function start (getMetrics, opts) {
    const client = create(getMetrics, opts)
    await client.ready()
    return client
  }

  function scraperFor (client, opts = {}) {
    return env.createScraper(client.publicKey, { keyPair: scraperKeyPair, ...opts })
  }

  // A stranger's connection attempt, and the firewall-block it gives.
  async function intrude (client) {
    const intruder = HyperDHT.keyPair()
    const { scraper, rpc, dht } = env.createScraper(client.publicKey, { keyPair: intruder, requestTimeout: 1500 })
    const blocked = once(client, 'firewall-block', {
      filter: ({ remotePublicKey }) => Buffer.from(remotePublicKey).equals(intruder.publicKey)
    })
    const attempt = scraper.requestMetrics()
    attempt.catch(() => {})
    const event = await blocked
    await expect(attempt).rejects.toThrow()
    await rpc.close()
    await dht.destroy()
    return { event, intruder }
  }

  test('a scrape: success reply, and connection-open, metrics-request, metrics-success, connection-close payloads', async () => {
    const client = await start(() => 'up 1\n')
    const seen = recordEvents(client, ['connection-open', 'metrics-request', 'metrics-success', 'connection-close'])
    const { scraper, rpc } = scraperFor(client)
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'up 1\n' })
    const closed = once(client, 'connection-close')
    await rpc.close()
    await closed

    expect(seen.map((e) => e.name)).toEqual(['connection-open', 'metrics-request', 'metrics-success', 'connection-close'])
    const [open, ...rest] = seen.map((e) => e.payload)
    expect(Object.keys(open)).toEqual(['uid', 'remoteAddress', 'remotePublicKey'])
    expect(open.uid).toMatch(UUID)
    expect(open.remoteAddress).toMatch(/^127\.0\.0\.1:\d+$/)
    expect(Buffer.isBuffer(open.remotePublicKey)).toBe(true)
    expect(open.remotePublicKey.equals(scraperKeyPair.publicKey)).toBe(true)
    for (const payload of rest) {
      expect(Object.keys(payload)).toEqual(['uid', 'remotePublicKey'])
      expect(payload.uid).toBe(open.uid)
      expect(payload.remotePublicKey.equals(scraperKeyPair.publicKey)).toBe(true)
    }
    await client.close()
  })

  // When the scraper closes its protomux-rpc-client, the reference's socket errors with
  // ECONNRESET ("connection reset by peer") before it closes; the Rust server reports the same.
  test('a scraper that goes away: connection-error ECONNRESET { error, uid, remotePublicKey }, then connection-close', async () => {
    const client = await start(() => 'bye 1\n')
    const seen = recordEvents(client, ['connection-open', 'connection-error', 'connection-close'])
    const { scraper, rpc } = scraperFor(client)
    expect((await scraper.requestMetrics()).success).toBe(true)
    const closed = once(client, 'connection-close')
    await rpc.close()
    await closed
    const [open, error, close] = seen
    expect(seen.map((e) => e.name)).toEqual(['connection-open', 'connection-error', 'connection-close'])
    expect(Object.keys(error.payload)).toEqual(['error', 'uid', 'remotePublicKey'])
    expect(error.payload.error.code).toBe('ECONNRESET')
    expect(error.payload.uid).toBe(open.payload.uid)
    expect(close.payload.uid).toBe(open.payload.uid)
    await client.close()
  })

  test('sync and async getMetrics functions are served as returned; promClient is null', async () => {
    const client = await start(() => 'sync 1\n')
    expect(client.promClient).toBeNull()
    const { scraper } = scraperFor(client)
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'sync 1\n' })
    client.getMetrics = async () => 'async 1\n'
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'async 1\n' })
    await client.close()
  })

  test('the prom-client module: promClient is the module, scrapes are register.metrics()', async () => {
    const client = await start(promClient)
    expect(client.promClient).toBe(promClient)
    const { scraper } = scraperFor(client)
    const res = await scraper.requestMetrics()
    expect(res).toEqual({ success: true, metrics: await promClient.register.metrics() })
    expect(res.metrics).toMatch(/^dropin_test_up_total 3$/m)
    await client.close()
  })

  test('any object with .register.metrics is a prom-client; a throwing collector gives metrics-error', async () => {
    const registry = new promClient.Registry()
    const gauge = new promClient.Gauge({ name: 'dropin_test_ok', help: 'ok', registers: [registry] })
    gauge.set(7)
    const custom = { register: registry }
    const client = await start(custom)
    expect(client.promClient).toBe(custom)
    const { scraper } = scraperFor(client)
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: await registry.metrics() })

    const failure = new Error('collector broke')
    // eslint-disable-next-line no-new
    new promClient.Gauge({ name: 'dropin_test_broken', help: 'broken', registers: [registry], collect () { throw failure } })
    const errored = once(client, 'metrics-error')
    const res = await scraper.requestMetrics()
    const { error, uid } = await errored
    expect(error).toBe(failure)
    expect(res).toEqual({ success: false, errorMessage: `Failed to obtain metrics (uid ${uid})` })
    await client.close()
  })

  test('a throw and a rejection: success:false naming the connection uid; metrics-error carries the Error', async () => {
    const client = await start(() => 'unused 1\n')
    const opened = once(client, 'connection-open')
    const { scraper } = scraperFor(client)
    for (const [kind, fail] of [['throw', (e) => () => { throw e }], ['reject', (e) => async () => { throw e }]]) {
      const failure = new Error(`broken by ${kind}`)
      client.getMetrics = fail(failure)
      const errored = once(client, 'metrics-error')
      const res = await scraper.requestMetrics()
      const payload = await errored
      const { uid } = await opened
      expect(Object.keys(payload)).toEqual(['error', 'remotePublicKey', 'uid'])
      expect(payload.error).toBe(failure)
      expect(payload.uid).toBe(uid)
      expect(payload.remotePublicKey.equals(scraperKeyPair.publicKey)).toBe(true)
      expect(res).toEqual({ success: false, errorMessage: `Failed to obtain metrics (uid ${uid})` })
    }
    await client.close()
  })

  test('another key is blocked: firewall-block { remotePublicKey, payload, address } as hyperdht gives it', async () => {
    const client = await start(() => 'ok 1\n')
    const opened = recordEvents(client, ['connection-open'])
    const { event, intruder } = await intrude(client)
    expect(Object.keys(event)).toEqual(['remotePublicKey', 'payload', 'address'])
    expect(event.remotePublicKey.equals(intruder.publicKey)).toBe(true)
    expect(event.address).toMatch(/^127\.0\.0\.1:\d+$/)
    expect(Object.keys(event.payload)).toEqual([
      'version', 'error', 'firewall', 'holepunch', 'addresses4', 'addresses6',
      'udx', 'secretStream', 'relayThrough', 'relayAddresses'
    ])
    expect(event.payload).toMatchObject({
      version: 1,
      error: 0,
      firewall: expect.any(Number),
      holepunch: null,
      addresses4: expect.arrayContaining([{ host: '127.0.0.1', port: expect.any(Number) }]),
      addresses6: [],
      udx: { version: 1, reusableSocket: expect.any(Boolean), id: expect.any(Number), seq: expect.any(Number) },
      secretStream: { version: 1 },
      relayThrough: null,
      relayAddresses: null
    })
    expect(opened).toEqual([])
    await client.close()
  })

  test('opts.keyPair: publicKey is that key and the scraper reaches the server on it', async () => {
    const keyPair = HyperDHT.keyPair()
    const client = await start(() => 'kp 1\n', { keyPair })
    expect(client.publicKey).toBe(keyPair.publicKey)
    const { scraper } = env.createScraper(keyPair.publicKey, { keyPair: scraperKeyPair })
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'kp 1\n' })
    await client.close()
  })

  test('publicKey is a 32-byte Buffer when no key pair is given', async () => {
    const client = create(() => '')
    expect(Buffer.isBuffer(client.publicKey)).toBe(true)
    expect(client.publicKey.byteLength).toBe(32)
    await client.close()
  })

  test('hostname defaults to os.hostname(); opts.hostname and opts.registerIntervalMs are kept', async () => {
    const plain = create(() => '')
    expect(plain.hostname).toBe(os.hostname())
    expect(plain.registerIntervalMs).toBe(60 * 60 * 1000)
    const named = create(() => '', { hostname: 'box-7', registerIntervalMs: 1234 })
    expect(named.hostname).toBe('box-7')
    expect(named.registerIntervalMs).toBe(1234)
    expect(named.alias).toBe('drop-in')
    expect(named.service).toBe('svc')
    await Promise.all([plain.close(), named.close()])
  })

  test('the scraper key as a Buffer, hex or z32 decodes to the same key', async () => {
    for (const form of [scraperKeyPair.publicKey, scraperKeyPair.publicKey.toString('hex'), idEnc.normalize(scraperKeyPair.publicKey)]) {
      const client = new Client(env.createDht(), () => '', form, 'a', SECRET.toString('hex'), 's')
      expect(Buffer.isBuffer(client.scraperPublicKey)).toBe(true)
      expect(client.scraperPublicKey.equals(scraperKeyPair.publicKey)).toBe(true)
      await client.close()
    }
  })

  test('a null or undefined getMetrics throws a TypeError at construction', () => {
    for (const getMetrics of [null, undefined]) {
      const err = thrown(() => new Client(env.createDht(), getMetrics, scraperKeyPair.publicKey, 'a', SECRET, 's'))
      expect(err).not.toBeNull()
      expect(err.name).toBe('TypeError')
    }
  })

  test('close() resolves promptly, destroys the dht, and a second close() resolves', async () => {
    const client = await start(() => 'c 1\n')
    const { scraper } = scraperFor(client)
    expect((await scraper.requestMetrics()).success).toBe(true)
    const started = Date.now()
    await client.close()
    expect(Date.now() - started).toBeLessThan(3000)
    expect(client.dht.destroyed).toBe(true)
    await client.close()
  })

  test('registerLogger at debug level logs what the reference logs for the same events', async () => {
    const client = create(() => 'log 1\n')
    const logger = memoryLogger('debug')
    client.registerLogger(logger)
    const seen = recordAll(client)
    await client.ready()

    const { scraper, rpc } = scraperFor(client)
    expect((await scraper.requestMetrics()).success).toBe(true)
    client.getMetrics = () => { throw new Error('no metrics today') }
    expect((await scraper.requestMetrics()).success).toBe(false)
    await intrude(client)
    const closed = once(client, 'connection-close')
    await rpc.close()
    await closed

    // Same tick: every event recorded so far has been logged, and nothing else.
    const lines = logger.lines.slice()
    const expected = referenceLines('debug', client.alias, seen)
    expect(lines).toEqual(expected)
    for (const pattern of [
      /^info: Prom client opened connection to \w{52} \(uid: [0-9a-f-]{36}\)$/,
      /^debug: Prom client received metrics request from \w{52} \(uid: [0-9a-f-]{36}\)$/,
      /^debug: Prom client successfully processed metrics request \(uid: [0-9a-f-]{36}\)$/,
      /^info: Prom client failed to process metrics request: Error: no metrics today \(uid: [0-9a-f-]{36}\)$/,
      /^info: Firewall blocked unauthorised connection attempt from 127\.0\.0\.1:\d+ \(public key: \w{52}\)$/,
      /^info: Prom client closed connection to \w{52} \(uid: [0-9a-f-]{36}\)$/
    ]) {
      expect(lines.some((line) => pattern.test(line))).toBe(true)
    }
    await client.close()
  })

  test('registerLogger below debug level: no debug lines, even if the level changes later', async () => {
    const client = create(() => 'log 1\n')
    const logger = memoryLogger('info')
    client.registerLogger(logger)
    logger.level = 'debug' // too late: the rule is applied when registerLogger is called
    const seen = recordAll(client)
    await client.ready()
    const { scraper } = scraperFor(client)
    const succeeded = once(client, 'metrics-success')
    expect((await scraper.requestMetrics()).success).toBe(true)
    await succeeded
    const lines = logger.lines.slice()
    expect(lines).toEqual(referenceLines('info', client.alias, seen))
    expect(seen.some((e) => e.name === 'metrics-request')).toBe(true)
    expect(lines.filter((line) => line.startsWith('debug:'))).toEqual([])
    expect(lines.some((line) => line.startsWith('info: Prom client opened connection to'))).toBe(true)
    await client.close()
  })

  test('registerLogger: alias and connection-error lines are the reference lines', async () => {
    const client = create(() => '')
    const logger = memoryLogger('debug')
    client.registerLogger(logger)
    const remotePublicKey = scraperKeyPair.publicKey
    const connectionError = new Error('connection reset')
    const aliasError = new Error('alias refused')
    const events = [
      { target: 'aliasClient', name: 'alias-attempt', payload: { alias: 'drop-in', targetKey: client.publicKey, hostname: 'host-1', service: 'svc', uid: 'u-1' } },
      { target: 'client', name: 'register-alias-success', payload: { updated: true } },
      { target: 'client', name: 'register-alias-success', payload: { updated: false } },
      { target: 'client', name: 'register-alias-error', payload: aliasError },
      { target: 'client', name: 'connection-error', payload: { error: connectionError, uid: 'u-2', remotePublicKey } }
    ]
    for (const { target, name, payload } of events) {
      (target === 'aliasClient' ? client.aliasClient : client).emit(name, payload)
    }
    expect(logger.lines).toEqual(referenceLines('debug', 'drop-in', events))
    expect(logger.lines).toEqual([
      `info: Prom client attempting to register drop-in->${idEnc.normalize(client.publicKey)} for service svc at host host-1}`,
      'info: Prom client successfully registered alias drop-in (updated: true)',
      'info: Prom client successfully registered alias drop-in (updated: false)',
      `info: Prom client failed to register alias ${aliasError.stack}`,
      `info: Prom client error on connection to ${idEnc.normalize(remotePublicKey)}: ${connectionError.stack} (uid: u-2)`
    ])
    await client.close()
  })
})

describe('rust only: beyond or deliberately unlike the reference', () => {
  let env
  const scraperKeyPair = HyperDHT.keyPair()

  beforeAll(async () => { env = await setup() })
  afterAll(async () => { await env.teardown() })

  async function start (getMetrics, opts, { dht = env.createDht(), scraperPublicKey = scraperKeyPair.publicKey } = {}) {
    const client = new RustClient(dht, getMetrics, scraperPublicKey, 'rust-only', SECRET, 'svc', opts)
    env.onCleanup(() => client.close())
    await client.ready()
    return client
  }

  // Which arguments throw, warn or fail later (against both implementations): arguments.test.js.
  test('unlike the reference: no server property, protomuxRpcClient null unless given, aliasClient without registerAlias()', () => {
    const client = new RustClient({ bootstrap: [], host: '127.0.0.1' }, () => '', scraperKeyPair.publicKey, 'a', SECRET, 's')
    expect(client.server).toBeUndefined()
    expect(client.protomuxRpcClient).toBeNull()
    expect(client.aliasClient.rpcClient).toBeNull()
    expect(client.aliasClient.registerAlias).toBeUndefined()
    const reference = new ReferenceClient(env.createDht(), () => '', scraperKeyPair.publicKey, 'a', SECRET, 's')
    expect(typeof reference.server.listen).toBe('function')
    expect(typeof reference.protomuxRpcClient.makeRequest).toBe('function')
    expect(typeof reference.aliasClient.registerAlias).toBe('function')
    return Promise.all([client.close(), reference.close()])
  })

  test('beyond the reference: Uint8Array keys and key pair, hex/z32 secret, pear:// key, a key array', () => {
    const goodKey = RustClient.keyPair().publicKey
    const goodPair = RustClient.keyPair()
    const pair = { publicKey: new Uint8Array(goodPair.publicKey), secretKey: new Uint8Array(goodPair.secretKey) }
    const client = new RustClient({ bootstrap: [], host: '127.0.0.1' }, () => '', [new Uint8Array(goodKey), `pear://${idEnc.normalize(goodKey)}`], 'a', idEnc.normalize(SECRET), 's', { keyPair: pair, includeOwnMetrics: false })
    // Kept as given, as hypercore-id-encoding keeps a 32-byte Uint8Array.
    expect(client.publicKey).toBe(pair.publicKey)
    expect(client.scraperPublicKeys.map((k) => Buffer.from(k).equals(goodKey))).toEqual([true, true])
    expect(client.scraperPublicKey).toBe(client.scraperPublicKeys[0])
    // Never started, so close() has nothing to stop and no dht to destroy.
    return client.close()
  })

  // The reference awaits getMetrics() and encodes the result as a string: a number, an
  // object or undefined makes compact-encoding throw inside protomux-rpc, which crashes
  // the process. Ours answers success:false and emits metrics-error with a TypeError.
  test('a non-string return (number, object, Buffer, undefined) gives success:false and metrics-error with a TypeError', async () => {
    const client = await start(() => 'ok 1\n')
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    for (const value of [42, { a: 1 }, Buffer.from('a 1\n'), undefined]) {
      client.getMetrics = async () => value
      const errored = once(client, 'metrics-error')
      const res = await scraper.requestMetrics()
      const { error, uid } = await errored
      expect(error.name).toBe('TypeError')
      expect(error.message).toMatch(/^getMetrics must return a string/)
      expect(res).toEqual({ success: false, errorMessage: `Failed to obtain metrics (uid ${uid})` })
    }
    client.getMetrics = () => 'ok 2\n'
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'ok 2\n' })
    await client.close()
  })

  // The reference sees no .register on a Registry, takes it for a function, and fails
  // every scrape with "this.getMetrics is not a function". Ours serves registry.metrics().
  // promClient stays null for both: a Registry is not a prom-client module (no .register).
  test('a prom-client Registry instance is served; promClient is null', async () => {
    const registry = new promClient.Registry()
    const counter = new promClient.Counter({ name: 'dropin_registry_total', help: 'r', registers: [registry] })
    counter.inc(5)
    const client = await start(registry)
    expect(client.promClient).toBeNull()
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    const res = await scraper.requestMetrics()
    expect(res).toEqual({ success: true, metrics: await registry.metrics() })
    expect(res.metrics).toMatch(/^dropin_registry_total 5$/m)
    await client.close()
  })

  // The reference needs a HyperDHT instance (it calls dht.createServer).
  test.each([
    ['{ host, port } bootstrap nodes', (bootstrap) => bootstrap],
    ['"host:port" bootstrap strings', (bootstrap) => bootstrap.map(({ host, port }) => `${host}:${port}`)]
  ])('dht as plain options with %s: scraped, and close() resolves', async (_name, form) => {
    const dht = { bootstrap: form(env.bootstrap), host: '127.0.0.1' }
    const before = JSON.stringify(dht)
    const client = await start(() => 'plain 1\n', {}, { dht })
    expect(client.dht).toBe(dht)
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: 'plain 1\n' })
    await client.close()
    await client.close()
    expect(client.closed).toBe(true)
    expect(JSON.stringify(dht)).toBe(before)
  })

  // The reference takes one scraper key (its README calls several the obvious extension).
  test('scraperPublicKey as an array: each scraper is served, any other key is still blocked', async () => {
    const second = HyperDHT.keyPair()
    const client = await start(() => 'multi 1\n', {}, { scraperPublicKey: [scraperKeyPair.publicKey, idEnc.normalize(second.publicKey)] })
    const opened = recordEvents(client, ['connection-open'])
    const { scraper: a } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    const { scraper: b } = env.createScraper(client.publicKey, { keyPair: second })
    expect(await a.requestMetrics()).toEqual({ success: true, metrics: 'multi 1\n' })
    expect(await b.requestMetrics()).toEqual({ success: true, metrics: 'multi 1\n' })
    const keys = opened.map(({ payload }) => idEnc.normalize(payload.remotePublicKey)).sort()
    expect(keys).toEqual([idEnc.normalize(scraperKeyPair.publicKey), idEnc.normalize(second.publicKey)].sort())

    const intruder = HyperDHT.keyPair()
    const { scraper: c } = env.createScraper(client.publicKey, { keyPair: intruder, requestTimeout: 1500 })
    const blocked = once(client, 'firewall-block', {
      filter: ({ remotePublicKey }) => Buffer.from(remotePublicKey).equals(intruder.publicKey)
    })
    const attempt = c.requestMetrics()
    attempt.catch(() => {})
    await blocked
    await expect(attempt).rejects.toThrow()
    expect(opened.length).toBe(2)
    await client.close()
  })

  // Not in the reference: the addon's own counters.
  test('ownMetrics() counts scrapes served and firewall blocks', async () => {
    const client = await start(() => 'own 1\n')
    const { scraper } = env.createScraper(client.publicKey, { keyPair: scraperKeyPair })
    for (let i = 0; i < 3; i++) expect((await scraper.requestMetrics()).success).toBe(true)
    let own = client.ownMetrics()
    expect(own).toMatch(/^# TYPE dht_prom_client_scrapes_served_total counter$/m)
    expect(metricValue(own, 'dht_prom_client_scrapes_served_total')).toBe(3)
    expect(metricValue(own, 'dht_prom_client_firewall_blocks_total')).toBe(0)
    expect(metricValue(own, 'dht_prom_client_scrape_bytes_sent_total')).toBeGreaterThan(3 * 'own 1\n'.length)
    // Read from the server's sockets: nothing dropped either way on a quiet loopback.
    expect(metricValue(own, 'dht_prom_client_datagrams_dropped_total')).toBe(0)
    expect(metricValue(own, 'dht_prom_client_datagrams_unsent_total')).toBe(0)

    client.getMetrics = () => { throw new Error('nope') }
    expect((await scraper.requestMetrics()).success).toBe(false)
    own = client.ownMetrics()
    expect(metricValue(own, 'dht_prom_client_metrics_errors_total')).toBe(1)
    expect(metricValue(own, 'dht_prom_client_scrapes_served_total')).toBe(3)

    const intruder = HyperDHT.keyPair()
    const { scraper: stranger } = env.createScraper(client.publicKey, { keyPair: intruder, requestTimeout: 1500 })
    const blocked = once(client, 'firewall-block')
    const attempt = stranger.requestMetrics()
    attempt.catch(() => {})
    await blocked
    await expect(attempt).rejects.toThrow()
    expect(metricValue(client.ownMetrics(), 'dht_prom_client_firewall_blocks_total')).toBeGreaterThanOrEqual(1)
    await client.close()
  })

  test('includeOwnMetrics: true appends ownMetrics() to each scrape; off by default (byte-exact)', async () => {
    const plain = await start(() => 'exact 1')
    const withOwn = await start(() => 'exact 1', { includeOwnMetrics: true })
    expect(plain.includeOwnMetrics).toBe(false)
    const { scraper: s1 } = env.createScraper(plain.publicKey, { keyPair: scraperKeyPair })
    const { scraper: s2 } = env.createScraper(withOwn.publicKey, { keyPair: scraperKeyPair })
    expect(await s1.requestMetrics()).toEqual({ success: true, metrics: 'exact 1' })
    expect(await s1.requestMetrics()).toEqual({ success: true, metrics: 'exact 1' })

    const first = await s2.requestMetrics()
    expect(first.success).toBe(true)
    expect(first.metrics.startsWith('exact 1\n# HELP ')).toBe(true)
    expect(metricValue(first.metrics, 'dht_prom_client_scrapes_served_total')).toBe(0)
    const second = await s2.requestMetrics()
    expect(metricValue(second.metrics, 'dht_prom_client_scrapes_served_total')).toBe(1)

    // Text already ending in a newline gets no blank line.
    withOwn.getMetrics = () => 'exact 2\n'
    const third = await s2.requestMetrics()
    expect(third.metrics.startsWith('exact 2\n# HELP ')).toBe(true)
    await Promise.all([plain.close(), withOwn.close()])
  })
})
