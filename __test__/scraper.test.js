'use strict'
const path = require('path')
const { execFile } = require('child_process')
const HyperDHT = require('hyperdht')
const ProtomuxRpcClient = require('protomux-rpc-client')
const ReferenceClient = require('dht-prom-client')
const DhtPromClient = require('..')
const DhtPromScraper = require('../scraper')
const { setup } = require('./helpers')

const SECRET = Buffer.alloc(32, 4)
const CLI = path.join(__dirname, '..', 'bin', 'dht-prom-client.js')
const METRICS = '# HELP up 1\nup{name="données ✓"} 1\n'

function runCli (args, timeout = 30000) {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout }, (error, stdout, stderr) => {
      resolve({ code: error ? error.code : 0, stdout, stderr })
    })
  })
}

describe.each([
  ['the Rust client', DhtPromClient],
  ['the JS reference client', ReferenceClient]
])('scraping %s', (_name, Client) => {
  let env
  let client
  const scraperKeyPair = HyperDHT.keyPair()

  beforeAll(async () => {
    env = await setup()
    // The reference also starts alias registration against the scraper key; nobody serves
    // it here, so it fails in the background until close().
    const dht = env.createDht()
    client = new Client(dht, () => METRICS, scraperKeyPair.publicKey, 'alias', SECRET, 'service')
    client.on('register-alias-error', () => {})
    await client.ready()
  })

  afterAll(async () => {
    await client.close()
    await env.teardown()
  })

  test('drop-in form over a JS protomux-rpc-client is byte-exact', async () => {
    const rpc = new ProtomuxRpcClient(env.createDht({ keyPair: scraperKeyPair }))
    env.onCleanup(() => rpc.close())
    const scraper = new DhtPromScraper(rpc, client.publicKey)
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: METRICS })
    await expect(scraper.requestMetrics({ major: 1000 })).rejects.toMatchObject({ code: 'DECODE_ERROR' })
  })

  test('native form (Rust connection) is byte-exact, keeps its connection, and closes', async () => {
    const scraper = new DhtPromScraper(
      { bootstrap: env.bootstrap, host: '127.0.0.1', keyPair: scraperKeyPair },
      client.publicKey.toString('hex'),
      { requestTimeoutMs: 5000 }
    )
    env.onCleanup(() => scraper.close())
    for (let i = 0; i < 5; i++) {
      expect(await scraper.requestMetrics()).toEqual({ success: true, metrics: METRICS })
    }
    await expect(scraper.requestMetrics({ minor: 1000 })).rejects.toMatchObject({ code: 'DECODE_ERROR' })
    await scraper.close()
    await expect(scraper.requestMetrics()).rejects.toMatchObject({ code: 'SCRAPER_CLOSED' })
  })

  test('CLI scrape prints the metrics; --json prints the reply object', async () => {
    const args = ['scrape', client.publicKey.toString('hex'), '--secret-key', scraperKeyPair.secretKey.toString('hex')]
    for (const { host, port } of env.bootstrap) args.push('--bootstrap', `${host}:${port}`)
    args.push('--host', '127.0.0.1')
    const plain = await runCli(args)
    expect(plain).toEqual({ code: 0, stdout: METRICS, stderr: '' })
    const json = await runCli([...args, '--json'])
    expect(json.code).toBe(0)
    expect(JSON.parse(json.stdout)).toEqual({ success: true, metrics: METRICS })
    const small = await runCli([...args, '--max-bytes', '10'])
    expect(small.code).toBe(5)
    expect(small.stdout).toBe('')
    expect(small.stderr).toMatch(/^dht-prom-client: reply too large: .*exceeds the limit of 10 bytes\n$/)
  })

  test('CLI with a key the firewall refuses exits 3', async () => {
    const args = ['scrape', client.publicKey.toString('hex'), '--host', '127.0.0.1', '--timeout', '5000']
    for (const { host, port } of env.bootstrap) args.push('--bootstrap', `${host}:${port}`)
    const res = await runCli(args)
    expect(res.code).toBe(3)
    expect(res.stderr).toMatch(/^dht-prom-client: unreachable or refused by its firewall: .+\n$/)
  })
})

describe('CLI failures', () => {
  let env
  beforeAll(async () => { env = await setup() })
  afterAll(async () => { await env.teardown() })

  test('an unknown key is unreachable: exit 3 with a one-line reason', async () => {
    const args = ['scrape', HyperDHT.keyPair().publicKey.toString('hex'), '--host', '127.0.0.1', '--timeout', '5000']
    for (const { host, port } of env.bootstrap) args.push('--bootstrap', `${host}:${port}`)
    const res = await runCli(args)
    expect(res.code).toBe(3)
    expect(res.stdout).toBe('')
    expect(res.stderr).toMatch(/^dht-prom-client: unreachable or refused by its firewall: .+\n$/)
  })

  test('connected but no reply in time: exit 4', async () => {
    const scraperKeyPair = HyperDHT.keyPair()
    // The promise is kept, as a hung collector keeps it: one that nothing refers to may be
    // collected by V8 before the timeout, and then the scrape fails (success:false) instead
    // of timing out (README, Differences from the reference).
    const hung = []
    const client = new DhtPromClient(env.createDht(), () => { const p = new Promise(() => {}); hung.push(p); return p }, scraperKeyPair.publicKey, 'a', SECRET, 's')
    client.on('register-alias-error', () => {})
    env.onCleanup(() => client.close())
    await client.ready()
    const args = ['scrape', client.publicKey.toString('hex'), '--host', '127.0.0.1', '--timeout', '1000',
      '--secret-key', scraperKeyPair.secretKey.toString('hex')]
    for (const { host, port } of env.bootstrap) args.push('--bootstrap', `${host}:${port}`)
    const res = await runCli(args)
    expect(res.code).toBe(4)
    expect(res.stderr).toBe('dht-prom-client: timeout: timeout of 1000ms exceeded\n')
  })

  test.each([
    [['scrape', 'not-a-key'], /<client-key> must be a 64-char hex or 52-char z32 string/],
    [['scrape'], /exactly one <client-key>/],
    [['scrape', 'a'.repeat(64), '--timeout', 'soon'], /--timeout must be a positive integer/],
    [['scrape', 'a'.repeat(64), '--secret-key', 'abc'], /--secret-key must be 128 hex characters/],
    [['frobnicate'], /unknown command 'frobnicate'/]
  ])('bad arguments %j exit 2', async (args, message) => {
    const res = await runCli(args)
    expect(res.code).toBe(2)
    expect(res.stderr).toMatch(message)
  })

  test('keygen prints a usable key pair', async () => {
    const res = await runCli(['keygen', '--json'])
    expect(res.code).toBe(0)
    const pair = JSON.parse(res.stdout)
    const derived = HyperDHT.keyPair(Buffer.from(pair.secretKey, 'hex').subarray(0, 32))
    expect(derived.publicKey.toString('hex')).toBe(pair.publicKey)
    expect(pair.publicKeyZ32).toHaveLength(52)
  })
})
