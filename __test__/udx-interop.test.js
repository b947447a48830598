'use strict'
// Interop of our UDX (crates/udx, driven by its udx_peer example in a child process) with
// the C libudx (npm udx-native, in this process): byte-exact transfers in both directions
// from 1 byte to 16 MiB, echo both ways, both sides closing cleanly; then the same through
// a lossy UDP relay (seeded loss, reordering, duplication); and a header the C libudx
// wrote, decoded by our parser. Everything on 127.0.0.1.
const dgram = require('dgram')
const UDX = require('udx-native')
const { pattern, fnv64, runNativeMode, PeerProcess, buildUdxPeer } = require('../benchmark/udx-lib')

const SIZES = [1, 1024, 1152, 1153, 100000, 2 << 20, 16 << 20]
const BUILD_MS = 20 * 60 * 1000 // a cold debug build of the example and its dev-deps
const PEER_TIMEOUT_S = 120 // the Rust peer gives up (and says so) after this

let peerBin = null
const udx = new UDX()
const processes = new Set()
const sockets = new Set()
const relays = new Set()
let nextId = 1000

beforeAll(() => {
  peerBin = buildUdxPeer()
  pattern(Math.max(...SIZES)) // generated once, outside the timed sessions
}, BUILD_MS)

afterAll(async () => {
  for (const p of processes) p.kill()
  for (const r of relays) r.close()
  for (const s of sockets) {
    for (const st of s.streams) st.destroy()
    await settle(s.close(), 2000)
  }
})

// Waits for `promise` at most `ms` (cleanup must not hang, nor leave a timer behind).
async function settle (promise, ms) {
  let timer
  await Promise.race([promise, new Promise((resolve) => { timer = setTimeout(resolve, ms) })])
  clearTimeout(timer)
}

// Deterministic PRNG (mulberry32): the relay's choices repeat for a given packet order.
function prng (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

// A UDP relay between two ports that drops, delays (reorders) and duplicates packets.
// Once an END has passed in both directions it forwards faithfully (the C libudx keeps no
// time-wait: a lost final ACK from it leaves our side retransmitting into silence), except
// that `dropFirstAfterEnds` drops exactly the first packet after both ENDs.
function createRelay ({ seed, loss = 0, reorder = 0, dup = 0, maxDelayMs = 5, dropFirstAfterEnds = false }) {
  const rand = prng(seed)
  const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 })
  const timers = new Set()
  const stats = { forwarded: 0, dropped: 0, delayed: 0, duplicated: 0 }
  const endSeen = new Map()
  let ends = null
  let finalDropped = false
  const relay = {
    sock,
    stats,
    port: 0,
    connect (portA, portB) { ends = { [portA]: portB, [portB]: portA } },
    close () {
      for (const t of timers) clearTimeout(t)
      timers.clear()
      try { sock.close() } catch {}
      relays.delete(relay)
    }
  }
  const send = (msg, port) => {
    stats.forwarded++
    sock.send(msg, port, '127.0.0.1')
  }
  sock.on('message', (msg, rinfo) => {
    const to = ends && ends[rinfo.port]
    if (!to) return
    const isEnd = msg.length >= 20 && msg[0] === 0xff && msg[1] === 1 && (msg[2] & 0x02) !== 0
    const calm = endSeen.size === 2
    if (calm && dropFirstAfterEnds && !finalDropped) {
      finalDropped = true
      stats.dropped++
      return
    }
    if (!calm) {
      if (rand() < loss) { stats.dropped++; return }
      if (rand() < dup) { stats.duplicated++; send(msg, to) }
      if (rand() < reorder) {
        stats.delayed++
        const t = setTimeout(() => { timers.delete(t); send(msg, to) }, 1 + Math.floor(rand() * maxDelayMs))
        timers.add(t)
        if (isEnd) endSeen.set(rinfo.port, true)
        return
      }
    }
    if (isEnd) endSeen.set(rinfo.port, true)
    send(msg, to)
  })
  relays.add(relay)
  return new Promise((resolve) => sock.bind(0, '127.0.0.1', () => { relay.port = sock.address().port; resolve(relay) }))
}

function spawnPeer (args, env) {
  const p = new PeerProcess(peerBin, ['--timeout', String(PEER_TIMEOUT_S), ...args], { name: 'udx_peer', env: env && { ...process.env, ...env } })
  processes.add(p)
  p.exited.then(() => processes.delete(p))
  return p
}

// Runs one Rust session (`rustMode`) against one udx-native session (`cMode`), directly or
// through a lossy relay. Resolves with both sides' reports and the Rust peer's exit code.
async function session ({ rustMode, rustArgs = [], cMode, cArgs = [], lossy = null, waitMs, env }) {
  const socket = udx.createSocket()
  sockets.add(socket)
  socket.bind(0, '127.0.0.1')
  const cPort = socket.address().port
  const rustId = nextId++
  const cId = nextId++

  const rust = spawnPeer(['--mode', rustMode, '--local-id', String(rustId), '--remote-id', String(cId), ...rustArgs], env)
  const rustPort = (await rust.next('listening', 10000)).port
  let relay = null
  if (lossy) {
    relay = await createRelay(lossy)
    relay.connect(rustPort, cPort)
  }
  const towardsRust = relay ? relay.port : rustPort
  const towardsC = relay ? relay.port : cPort

  const stream = udx.createStream(cId)
  stream.connect(socket, rustId, towardsRust, '127.0.0.1')
  // The Rust stream exists before the C side sends anything (packets for an unknown
  // stream would be dropped and cost a retransmission timeout).
  rust.send(String(towardsC))
  await rust.next('connected', 10000)
  const cDone = runNativeMode(stream, cMode, cArgs)

  let timer
  const bound = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`session ${rustMode}/${cMode} not done in ${waitMs} ms`)), waitMs)
  })
  try {
    const [rustResult, c, exit] = await Promise.race([
      Promise.all([rust.next('result', waitMs), cDone, rust.exited]),
      bound
    ])
    c.stats = { rtoCount: stream.rtoCount, retransmits: stream.retransmits, fastRecoveries: stream.fastRecoveries }
    const out = { rust: rustResult, c, exit, relay: relay && relay.stats }
    if (process.env.UDX_INTEROP_VERBOSE) console.log(describeReport(out).slice(0, 2000))
    return out
  } finally {
    clearTimeout(timer)
    rust.kill()
    if (relay) relay.close()
    stream.destroy()
    await settle(socket.close(), 2000)
    sockets.delete(socket)
  }
}

function describeReport (r) {
  const c = { ...r.c }
  delete c.data
  return JSON.stringify({ rust: r.rust, c, exit: r.exit, relay: r.relay })
}

function expectCleanClose (r) {
  // Rust: closed with CloseReason::Done and exited 0.
  expect({ close: r.rust.close, ok: r.rust.ok, exit: r.exit.code }).toEqual({ close: 'Done', ok: true, exit: 0 })
  // C: 'end' and 'finish' then 'close', no 'error'.
  expect(r.c.events).toEqual({ end: true, finish: true, close: true, error: null })
  expect(r.c.close).toBe('Done')
}

function budgetMs (size, lossy) {
  // Generous: a debug build on 2 shared cores, and a JS relay in the path when lossy.
  return 30000 + Math.ceil(size / (1 << 20)) * (lossy ? 6000 : 3000)
}

const ECHOES = [
  ['1 KiB x 200', 1024, 200],
  ['2 MiB x 1 (both directions at once)', 2 << 20, 1]
]

const LOSSY = [
  null,
  { seed: 0xC0FFEE, loss: 0.01, reorder: 0.02, dup: 0.01 },
  { seed: 0xBADC0DE, loss: 0.03, reorder: 0.03, dup: 0.02 }
]

// Runs the assertions; on failure, appends both sides' reports to the message.
function check (reports, assertions) {
  try {
    assertions()
  } catch (err) {
    err.message += '\n' + reports.map(describeReport).join('\n')
    throw err
  }
}

for (const lossy of LOSSY) {
  const pct = (p) => `${Math.round(p * 100)}%`
  const label = lossy ? `through a lossy relay (${pct(lossy.loss)} lost, ${pct(lossy.reorder)} delayed 1-5 ms, ${pct(lossy.dup)} duplicated)` : 'direct'
  // A seed per test, so each transfer meets its own (reproducible) faults.
  const faults = (salt) => lossy && { ...lossy, seed: lossy.seed + salt }

  describe(`udx <-> udx-native, ${label}`, () => {
    for (const size of SIZES) {
      test(`Rust sends ${size} bytes to C, byte-exact, both close cleanly`, async () => {
        const r = await session({ rustMode: 'source', rustArgs: [String(size)], cMode: 'sink', lossy: faults(size), waitMs: budgetMs(size, lossy) })
        check([r], () => {
          expect(r.c.received).toBe(size)
          expect(r.c.hash).toBe(fnv64(pattern(size)))
          expect(r.c.patternOk).toBe(true)
          expect(r.rust.sent).toBe(size)
          expectCleanClose(r)
        })
      }, budgetMs(size, lossy) + 15000)

      test(`C sends ${size} bytes to Rust, byte-exact, both close cleanly`, async () => {
        const r = await session({ rustMode: 'sink', cMode: 'source', cArgs: [String(size)], lossy: faults(7 * size), waitMs: budgetMs(size, lossy) })
        check([r], () => {
          expect(r.rust.received).toBe(size)
          expect(r.rust.hash).toBe(fnv64(pattern(size)))
          expect(r.rust.patternOk).toBe(true)
          expect(r.c.sent).toBe(size)
          expectCleanClose(r)
        })
      }, budgetMs(size, lossy) + 15000)
    }

    for (const [name, size, count] of ECHOES) {
      const waitMs = budgetMs(2 * size * count, lossy)

      test(`C writes, Rust echoes: ${name}`, async () => {
        const r = await session({ rustMode: 'echo', cMode: 'rtt', cArgs: [String(size), String(count)], lossy: faults(11 * size), waitMs })
        check([r], () => {
          expect(r.c.patternOk).toBe(true)
          expect(r.c.received).toBe(size * count)
          expect(r.rust.received).toBe(size * count)
          expect(r.rust.hash).toBe(fnv64(...Array(count).fill(pattern(size))))
          expectCleanClose(r)
        })
      }, waitMs + 15000)

      test(`Rust writes, C echoes: ${name}`, async () => {
        const r = await session({ rustMode: 'rtt', rustArgs: [String(size), String(count)], cMode: 'echo', lossy: faults(13 * size), waitMs })
        check([r], () => {
          expect(r.rust.patternOk).toBe(true)
          expect(r.rust.received).toBe(size * count)
          expect(r.rust.timesUs).toHaveLength(count)
          expect(r.c.received).toBe(size * count)
          expectCleanClose(r)
        })
      }, waitMs + 15000)
    }

    test('request/response (the benchmark\'s serve/client) both ways', async () => {
      const ops = '64:64x20,16:100000,1024:1024x10,16:2097152'
      const replies = 64 * 20 + 100000 + 1024 * 10 + 2097152
      const waitMs = budgetMs(4 << 20, lossy)
      const a = await session({ rustMode: 'serve', cMode: 'client', cArgs: [ops], lossy: faults(1), waitMs })
      const b = await session({ rustMode: 'client', rustArgs: [ops], cMode: 'serve', lossy: faults(2), waitMs })
      check([a, b], () => {
        expect(a.c.patternOk).toBe(true)
        expect(a.c.received).toBe(replies)
        expect(a.c.timesUs).toHaveLength(20 + 1 + 10 + 1)
        expectCleanClose(a)
        expect(b.rust.patternOk).toBe(true)
        expect(b.rust.received).toBe(replies)
        expect(b.rust.timesUs).toHaveLength(20 + 1 + 10 + 1)
        expectCleanClose(b)
      })
    }, 2 * budgetMs(4 << 20, lossy) + 15000)

    if (lossy) {
      test('the relay really injected faults, and our side recovered from them', async () => {
        const r = await session({ rustMode: 'source', rustArgs: [String(2 << 20)], cMode: 'sink', lossy: faults(3), waitMs: budgetMs(2 << 20, lossy) })
        check([r], () => {
          expect(r.c.hash).toBe(fnv64(pattern(2 << 20)))
          expectCleanClose(r)
          expect(r.relay.dropped).toBeGreaterThan(0)
          expect(r.relay.delayed).toBeGreaterThan(0)
          expect(r.relay.duplicated).toBeGreaterThan(0)
          expect(r.rust.stats.retransmits).toBeGreaterThan(0)
        })
      }, budgetMs(2 << 20, lossy) + 15000)
    }
  })
}

describe('time-wait: the final ACK is lost', () => {
  // The first packet after both ENDs (our ACK of the C side's END) is dropped: the C side
  // retransmits its END after its RTO, and our closed stream, still in time-wait,
  // acknowledges it again, so the C side closes cleanly instead of timing out.
  test('the C side gets its END acknowledged again and closes cleanly', async () => {
    const r = await session({
      rustMode: 'source',
      rustArgs: ['1000'],
      cMode: 'sink',
      lossy: { seed: 1, dropFirstAfterEnds: true },
      waitMs: 30000,
      env: { UDX_PEER_LINGER_MS: '6000' }
    })
    check([r], () => {
      expect(r.relay.dropped).toBe(1)
      expect(r.c.received).toBe(1000)
      expectCleanClose(r)
    })
  }, 45000)
})

describe('wire format: what udx-native writes, our parser reads', () => {
  // A UDX header as the protocol lays it out, built here by hand (not by our encoder).
  function header ({ flags, id, rwnd = 4 << 20, seq, ack }) {
    const b = Buffer.alloc(20)
    b[0] = 0xff
    b[1] = 1
    b[2] = flags
    b[3] = 0
    b.writeUInt32LE(id, 4)
    b.writeUInt32LE(rwnd, 8)
    b.writeUInt32LE(seq, 12)
    b.writeUInt32LE(ack, 16)
    return b
  }

  test('a C data packet and a C SACK decode field for field', async () => {
    const raw = dgram.createSocket('udp4')
    await new Promise((resolve) => raw.bind(0, '127.0.0.1', resolve))
    const captured = []
    let onPacket = null
    raw.on('message', (msg) => { captured.push(msg); if (onPacket) onPacket() })
    const waitFor = (pred, what) => new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} from udx-native in 5 s`)), 5000)
      const check = () => {
        const hit = captured.find(pred)
        if (hit) { clearTimeout(timer); onPacket = null; resolve(hit) }
      }
      onPacket = check
      check()
    })

    const socket = udx.createSocket()
    sockets.add(socket)
    socket.bind(0, '127.0.0.1')
    const cId = nextId++
    const rawId = nextId++
    const stream = udx.createStream(cId)
    const closed = new Promise((resolve) => stream.once('close', resolve))
    stream.on('error', () => {}) // a destroy with an error is fine here
    try {
      stream.connect(socket, rawId, raw.address().port, '127.0.0.1')
      stream.write(Buffer.from('hello'))
      const data = await waitFor((m) => m[2] & 0x01, 'data packet')

      // Two packets after a gap (seq 0 missing): C answers with a SACK for [1, 3).
      // Our ack field acknowledges C's seq 0, so it stops retransmitting it.
      const port = socket.address().port
      raw.send(Buffer.concat([header({ flags: 0x01, id: cId, seq: 1, ack: 1 }), Buffer.from('b')]), port, '127.0.0.1')
      raw.send(Buffer.concat([header({ flags: 0x01, id: cId, seq: 2, ack: 1 }), Buffer.from('c')]), port, '127.0.0.1')
      // C may first acknowledge seq 1 alone; wait for the ACK that covers both.
      const sack = await waitFor((m) => (m[2] & 0x04) && m.length >= 28 && m.readUInt32LE(24) === 3, 'SACK of [1, 3)')

      const out = require('child_process').execFileSync(peerBin, ['decode', data.toString('hex'), sack.toString('hex')], { encoding: 'utf8', timeout: 10000 })
      const [d, s] = out.trim().split('\n').map((l) => JSON.parse(l))
      expect(d).toEqual({
        udx: true,
        flags: 0x01,
        dataOffset: 0,
        streamId: rawId,
        recvWindow: data.readUInt32LE(8),
        seq: 0,
        ack: 0,
        sacks: [],
        payload: Buffer.from('hello').toString('hex')
      })
      expect(d.recvWindow).toBeGreaterThan(0)
      expect(s.udx).toBe(true)
      expect(s.flags & 0x04).toBe(0x04)
      expect(s.streamId).toBe(rawId)
      expect(s.ack).toBe(0)
      // C sends SACK blocks with data_offset 0: the blocks are the rest of the packet.
      expect(s.dataOffset).toBe(0)
      expect(s.sacks).toEqual([[1, 3]])
    } finally {
      stream.destroy()
      await settle(closed, 2000)
      await settle(socket.close(), 2000)
      sockets.delete(socket)
      raw.close()
    }
  }, 20000)
})
