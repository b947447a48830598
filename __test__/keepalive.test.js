'use strict'
const path = require('path')
const { spawn } = require('child_process')
const HyperDHT = require('hyperdht')
const DhtPromClient = require('..')
const { setup, once } = require('./helpers')

describe('keep-alive', () => {
  let env
  beforeAll(async () => { env = await setup() })
  afterAll(async () => { await env.teardown() })

  test('a scraper killed without a goodbye is noticed and its connection closed', async () => {
    const scraperKeyPair = HyperDHT.keyPair()
    const client = new DhtPromClient(env.createDht(), () => 'alive 1\n', scraperKeyPair.publicKey, 'a', Buffer.alloc(32), 's')
    client.on('register-alias-error', () => {})
    env.onCleanup(() => client.close())
    await client.ready()
    const opened = once(client, 'connection-open')
    const child = spawn(process.execPath, [
      path.join(__dirname, 'fixtures', 'scrape-and-hang.js'),
      client.publicKey.toString('hex'),
      scraperKeyPair.secretKey.toString('hex'),
      JSON.stringify(env.bootstrap)
    ], { stdio: ['ignore', 'pipe', 'inherit'] })
    env.onCleanup(() => child.kill('SIGKILL'))
    const line = String(await once(child.stdout, 'data'))
    expect(JSON.parse(line)).toEqual({ success: true, metrics: 'alive 1\n' })
    const { uid } = await opened
    const errored = once(client, 'connection-error', { timeout: 60000, filter: (e) => e.uid === uid })
    const closed = once(client, 'connection-close', { timeout: 60000, filter: (e) => e.uid === uid })
    const started = Date.now()
    child.kill('SIGKILL')
    const { error } = await errored
    await closed
    // Keep-alive after 5 s idle, then 15 s without an acknowledgement: about 20 s.
    expect(error.code).toBe('ETIMEDOUT')
    expect(Date.now() - started).toBeLessThan(40000)
  }, 90000)
})
