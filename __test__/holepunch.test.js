'use strict'
// Issue 11, on loopback: what this package's server says in its handshake reply, decoded by
// the real JS hyperdht (its NoiseWrap and messages), next to the JS reference's; and a real
// JS client that holepunches to it (its LAN shortcut off, so the PEER_HOLEPUNCH rounds run).
const HyperDHT = require('hyperdht')
const NoiseWrap = require('hyperdht/lib/noise-wrap')
const { FIREWALL, ERROR } = require('hyperdht/lib/constants')
const ReferenceClient = require('dht-prom-client')
const DhtPromClient = require('..')
const { setup } = require('./helpers')

const SECRET = Buffer.alloc(32, 7)
const OPEN_WITHIN_MS = 10000

// A hyperdht handshake whose decoded reply payloads the test keeps.
function capturingHandshake () {
  const replies = []
  function createHandshake (keyPair, remotePublicKey) {
    const wrap = new NoiseWrap(keyPair, remotePublicKey)
    const recv = wrap.recv.bind(wrap)
    wrap.recv = (buf) => {
      const payload = recv(buf)
      replies.push(payload)
      return payload
    }
    return wrap
  }
  return { replies, createHandshake }
}

// Connects like a scraper with `opts`, waits for the stream to open, and closes it.
async function connectAndCapture (dht, publicKey, keyPair, opts = {}) {
  const { replies, createHandshake } = capturingHandshake()
  const socket = dht.connect(publicKey, { keyPair, createHandshake, ...opts })
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no open within ${OPEN_WITHIN_MS} ms`)), OPEN_WITHIN_MS)
      socket.once('open', () => { clearTimeout(timer); resolve() })
      socket.once('error', (err) => { clearTimeout(timer); reject(err) })
    })
  } finally {
    await new Promise((resolve) => {
      if (socket.destroyed) return resolve()
      socket.once('close', resolve)
      socket.destroy()
    })
  }
  return replies[0]
}

function expectDialable (addr) {
  expect(addr.host).toMatch(/^\d{1,3}(\.\d{1,3}){3}$/)
  expect(addr.port).toBeGreaterThan(0)
  expect(addr.port).toBeLessThan(65536)
}

// What a JS client needs from a server's reply, whoever made it.
function expectUsablePayload (payload, relayAddresses) {
  expect(payload.version).toBe(1)
  expect(payload.error).toBe(ERROR.NONE)
  expect([FIREWALL.UNKNOWN, FIREWALL.OPEN]).toContain(payload.firewall)
  // Open: dialled at its first address; otherwise holepunched through its relays.
  if (payload.firewall === FIREWALL.OPEN) {
    expect(payload.holepunch).toBeNull()
    expect(payload.addresses4.length).toBeGreaterThan(0)
  } else {
    expect(Number.isInteger(payload.holepunch.id)).toBe(true)
    expect(payload.holepunch.relays.length).toBeGreaterThan(0)
    for (const { relayAddress, peerAddress } of payload.holepunch.relays) {
      expect(relayAddresses).toContain(`${relayAddress.host}:${relayAddress.port}`)
      expectDialable(peerAddress)
    }
  }
  // Loopback nodes share loopback addresses only, never port 0.
  for (const addr of payload.addresses4) {
    expectDialable(addr)
    expect(addr.host).toBe('127.0.0.1')
  }
  expect(payload.addresses6).toEqual([])
  expect(payload.udx).toMatchObject({ version: 1, seq: 0 })
  expect(payload.udx.id).toBeGreaterThan(0)
  expect(payload.secretStream).toEqual({ version: 1 })
  expect(payload.relayThrough).toBeNull()
}

describe('handshake payloads and holepunching (Rust server, real JS client)', () => {
  let env
  const scraperKeyPair = HyperDHT.keyPair()

  beforeEach(async () => { env = await setup() })
  afterEach(async () => { await env.teardown() })

  function startClient (Impl) {
    const client = new Impl(env.createDht(), () => 'up 1\n', scraperKeyPair.publicKey, 'hp', SECRET, 'svc', { registerIntervalMs: 60 * 60 * 1000 })
    env.onCleanup(() => client.close())
    return client
  }

  test('each payload field, decoded by hyperdht, is one a JS client can use; as the reference\'s', async () => {
    const relayAddresses = env.testnet.nodes.map((n) => `${n.address().host}:${n.address().port}`)
    const dht = env.createDht({ keyPair: scraperKeyPair })
    const ours = startClient(DhtPromClient)
    const reference = startClient(ReferenceClient)
    await Promise.all([ours.ready(), reference.ready()])

    const fromReference = await connectAndCapture(dht, reference.publicKey, scraperKeyPair)
    expectUsablePayload(fromReference, relayAddresses)

    const fromOurs = await connectAndCapture(dht, ours.publicKey, scraperKeyPair)
    expectUsablePayload(fromOurs, relayAddresses)
    // A node nobody has seen reachable unsolicited is holepunched to, never dialled.
    expect(fromOurs.firewall).toBe(FIREWALL.UNKNOWN)
    expect(fromOurs.addresses4.length).toBeGreaterThan(0)
    expect(fromOurs.udx.reusableSocket).toBe(false)
    expect(fromOurs.relayAddresses).toBeNull()
  })

  test('a JS client without its LAN shortcut connects through the PEER_HOLEPUNCH rounds, again and again', async () => {
    const dht = env.createDht({ keyPair: scraperKeyPair })
    const ours = startClient(DhtPromClient)
    await ours.ready()
    const ids = []
    for (let i = 0; i < 3; i++) {
      const payload = await connectAndCapture(dht, ours.publicKey, scraperKeyPair, { localConnection: false })
      expect(payload.firewall).toBe(FIREWALL.UNKNOWN)
      ids.push(payload.holepunch.id)
    }
    // A slot is kept a while after its connection opened, so the next one gets another.
    expect(new Set(ids).size).toBe(3)
  })
})
