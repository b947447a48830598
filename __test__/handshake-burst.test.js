'use strict'
// A burst of real JS hyperdht clients with random keys (their handshakes relayed by the
// testnet's nodes, retried as hyperdht retries them) against a DhtPromClient running in a
// child process (scripts/soak/server.js), whose RSS and descriptors are measured, while
// the scraper keeps scraping: 1,000 clients from 25 DHT nodes. tests/hostile_dht.rs sends
// 1,000 raw handshakes faster than any client would; this is the same through the real client.
const path = require('path')
const readline = require('readline')
const { spawn } = require('child_process')
const HyperDHT = require('hyperdht')
const { setup, within } = require('./helpers')

const ATTACKERS = 25
const PER_ATTACKER = 40

function startServer (bootstrap, scraperPublicKey) {
  const child = spawn(process.execPath, [path.join(__dirname, '..', 'scripts', 'soak', 'server.js'), JSON.stringify({
    bootstrap, scraperPublicKey: scraperPublicKey.toString('hex'), secret: '00'.repeat(32), sizes: [1024], registerIntervalMs: 3600000
  })], { stdio: ['pipe', 'pipe', 'pipe'] })
  const messages = []
  const waiters = []
  let stderr = ''
  child.stderr.on('data', (d) => { stderr += d })
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    messages.push(JSON.parse(line))
    for (const w of waiters.splice(0)) w()
  })
  const next = async (type) => {
    const started = Date.now()
    for (;;) {
      const i = messages.findIndex((m) => m.type === type || m.type === 'error')
      if (i !== -1) {
        const m = messages.splice(i, 1)[0]
        if (m.type === 'error') throw new Error(m.message)
        return m
      }
      if (Date.now() - started > 30000) throw new Error(`no ${type} from the server within 30 s: ${stderr}`)
      await new Promise((resolve) => { waiters.push(resolve); setTimeout(resolve, 1000) })
    }
  }
  return {
    child,
    stderr: () => stderr,
    ready: () => next('ready'),
    sample: () => { child.stdin.write(JSON.stringify({ type: 'sample' }) + '\n'); return next('sample') },
    close: () => { child.stdin.write(JSON.stringify({ type: 'close' }) + '\n'); return next('closed') }
  }
}

test(`${ATTACKERS * PER_ATTACKER} JS clients with random keys at once: none connects, each is blocked, the scraper is served throughout`, async () => {
  const env = await setup()
  const scraperKeyPair = HyperDHT.keyPair()
  const server = startServer(env.bootstrap, scraperKeyPair.publicKey)
  env.onCleanup(() => server.child.kill())
  try {
    const publicKey = Buffer.from((await server.ready()).publicKey, 'hex')
    const { scraper } = env.createScraper(publicKey, { keyPair: scraperKeyPair })
    expect(await scraper.requestMetrics()).toMatchObject({ success: true })
    const before = await server.sample()

    let stop = false
    let scrapes = 0
    let onScrape = () => {}
    const failures = []
    // A scrape every 20 ms or so: a steady load beside the burst, not a wait for anything.
    const PACE_MS = 20
    const scraping = (async () => {
      while (!stop) {
        try {
          const res = await scraper.requestMetrics({ timeout: 5000 })
          if (res.success) { scrapes++; onScrape() } else failures.push(res)
        } catch (err) {
          failures.push(err.code || err.message)
        }
        await new Promise((resolve) => setTimeout(resolve, PACE_MS))
      }
    })()

    const started = Date.now()
    const keys = []
    const outcomes = await Promise.all(Array.from({ length: ATTACKERS }, () => env.createDht()).flatMap((dht) =>
      Array.from({ length: PER_ATTACKER }, () => {
        const keyPair = HyperDHT.keyPair()
        keys.push(keyPair.publicKey.toString('hex'))
        const socket = dht.connect(publicKey, { keyPair })
        return new Promise((resolve) => {
          socket.on('error', (err) => resolve(err.code))
          socket.on('open', () => { socket.destroy(); resolve('opened') })
        })
      })))
    const burstMs = Date.now() - started
    const duringBurst = scrapes
    // Three more scrapes after the burst: the scraper is still served.
    await within(new Promise((resolve) => { onScrape = () => { if (scrapes >= duringBurst + 3) resolve() } }), 30000, 'three scrapes after the burst')
    stop = true
    await scraping

    expect(outcomes.filter((o) => o !== 'PEER_CONNECTION_FAILED')).toEqual([])
    expect(failures).toEqual([])
    expect(duringBurst).toBeGreaterThan(10)
    const after = await server.sample()
    const blocks = after.own.firewall_blocks_total - before.own.firewall_blocks_total
    const dropped = after.own.handshakes_dropped_total - before.own.handshakes_dropped_total
    // Every client was reported at least once (a client retries with a new handshake, and
    // each handshake is reported, as by the reference), or had handshakes dropped, counted.
    expect(blocks + dropped).toBeGreaterThanOrEqual(keys.length)
    expect(after.events['connection-open']).toBe(1) // the scraper's
    expect(after.own.open_connections).toBe(1)
    expect(after.fds).toBeLessThanOrEqual(before.fds)
    expect(after.rss).toBeLessThan(before.rss + 32 * 1024 * 1024)
    console.log(`${keys.length} clients in ${burstMs} ms: ${blocks} firewall-block, ${dropped} dropped; ${duringBurst} scrapes during the burst; ` +
      `server RSS ${(before.rss / 1048576).toFixed(1)} -> ${(after.rss / 1048576).toFixed(1)} MB, fds ${before.fds} -> ${after.fds}`)
    await server.close()
    expect(server.stderr()).toBe('')
  } finally {
    await env.teardown()
  }
}, 90000)
