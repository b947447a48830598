// Type-checked (never run) by __test__/types.test.js: `tsc --noEmit -p __test__/types`.
// Realistic use of the public API, plus `@ts-expect-error` lines that must stay errors.
import os from 'os'
import HyperDHT from 'hyperdht'
import * as promClient from 'prom-client'
import DhtPromClient = require('../..')

const { decodeKey, normalizeKey, keyPair } = DhtPromClient

async function main (): Promise<void> {
  const scraperPublicKey: Buffer = decodeKey('a'.repeat(64))
  const secret = 'b'.repeat(64)

  // A HyperDHT instance and a prom-client module.
  const dht = new HyperDHT({ host: '127.0.0.1' })
  const client = new DhtPromClient(dht, promClient, scraperPublicKey, 'my-alias', secret, 'my-service', {
    keyPair: keyPair(Buffer.alloc(32, 1)),
    registerIntervalMs: 60 * 1000,
    hostname: os.hostname(),
    includeOwnMetrics: true
  })
  const pk: Buffer = client.publicKey
  const z32: string = normalizeKey(pk)
  const prom: DhtPromClient.PromClientLike | null = client.promClient
  void z32
  void prom

  client.registerLogger({ level: 'info', info: console.log, debug: console.debug })
  client.registerLogger(console)

  client.on('connection-open', ({ uid, remoteAddress, remotePublicKey }) => {
    const line: string = `${uid} ${remoteAddress} ${normalizeKey(remotePublicKey)}`
    void line
  })
  client.once('connection-close', ({ uid }) => { void uid.toUpperCase() })
  client.on('connection-error', ({ error }) => { void error.message })
  client.on('metrics-request', ({ remotePublicKey }) => { void remotePublicKey.byteLength })
  client.on('metrics-success', ({ uid }) => { void uid })
  client.on('metrics-error', ({ error, uid }) => { console.warn(`metrics failed (uid ${uid})`, error) })
  client.on('firewall-block', ({ address, payload }) => {
    const port: number | undefined = payload.addresses4[0]?.port
    const udx: number | undefined = payload.udx?.version
    void address.split(':')
    void port
    void udx
  })
  client.on('register-alias-success', ({ updated }) => { const b: boolean = updated; void b })
  const onAliasError = (error: Error): void => { void error.stack }
  client.on('register-alias-error', onAliasError)
  client.off('register-alias-error', onAliasError)
  client.aliasClient.on('alias-attempt', () => {})
  client.on('some-other-event', (...args: unknown[]) => { void args })

  await client.ready()
  const own: string = client.ownMetrics()
  void own
  await client.close()

  // Plain options instead of a HyperDHT, several scrapers, a function or a Registry.
  const registry = new promClient.Registry()
  const viaOptions = new DhtPromClient(
    { bootstrap: ['127.0.0.1:49737', { host: '127.0.0.1', port: 49738 }], host: '127.0.0.1' },
    registry,
    [scraperPublicKey, 'c'.repeat(64)],
    'alias',
    Buffer.alloc(32),
    'service'
  )
  const sync = new DhtPromClient({}, () => 'up 1\n', scraperPublicKey, 'a', secret, 's')
  const asyncFn = new DhtPromClient({}, async () => 'up 1\n', scraperPublicKey, 'a', secret, 's')
  sync.getMetrics = async () => 'replaced 1\n'
  await Promise.all([viaOptions.close(), sync.close(), asyncFn.close()])

  // Wrong usage that must not compile.
  // @ts-expect-error payloads are typed per event
  client.on('connection-open', (e) => e.nope)
  // @ts-expect-error connection-close has no remoteAddress
  client.on('connection-close', (e) => e.remoteAddress.length)
  // @ts-expect-error register-alias-success carries { updated }, not an Error
  client.once('register-alias-success', (e) => e.stack)
  // @ts-expect-error alias must be a string
  void new DhtPromClient(dht, promClient, scraperPublicKey, 42, secret, 'service')
  // @ts-expect-error getMetrics must give a string
  void new DhtPromClient(dht, () => 42, scraperPublicKey, 'a', secret, 's')
  // @ts-expect-error unknown option value type
  void new DhtPromClient(dht, promClient, scraperPublicKey, 'a', secret, 's', { registerIntervalMs: '1h' })
  // @ts-expect-error the dht options take bootstrap nodes, not a number
  void new DhtPromClient({ bootstrap: 5 }, promClient, scraperPublicKey, 'a', secret, 's')
  // @ts-expect-error publicKey is read-only
  client.publicKey = Buffer.alloc(32)
  // @ts-expect-error ready() takes no callback
  await client.ready(() => {})
  // @ts-expect-error ownMetrics() is text
  const n: number = client.ownMetrics()
  void n
}

void main

// The scraper, both forms.
import DhtPromScraper = require('../../scraper')

async function scrapeBoth (rpc: DhtPromScraper.ProtomuxRpcClientLike, key: Buffer): Promise<string[]> {
  const dropIn = new DhtPromScraper(rpc, key)
  const native = new DhtPromScraper({ bootstrap: ['127.0.0.1:49737'], host: '127.0.0.1' }, key.toString('hex'), { requestTimeoutMs: 2000 })
  const out: string[] = []
  for (const scraper of [dropIn, native]) {
    const res: DhtPromScraper.MetricsResult = await scraper.requestMetrics({ timeout: 1000 })
    out.push(res.success ? res.metrics : res.errorMessage)
  }
  await native.close()
  // @ts-expect-error requestTimeoutMs is a number
  void new DhtPromScraper({}, key, { requestTimeoutMs: 'soon' })
  return out
}
void scrapeBoth
