#!/usr/bin/env node
'use strict'

// Seeds fuzz/corpus/<target>/ with real bytes: the messages of tests/fixtures/golden.json
// (made by the JS packages), protomux frames captured from a real JS Protomux pair (open
// with and without id and handshake, reject, close, single messages, a corked batch that
// switches channels), and key spellings made by hypercore-id-encoding.
//
// Files are named by the SHA-1 of their bytes, as libFuzzer names what it adds, so running
// this again adds nothing twice and never removes what fuzzing found.
// Run: node scripts/gen-fuzz-corpus.js

const crypto = require('crypto')
const fs = require('fs')
const path = require('path')
const { Duplex } = require('stream')

const c = require('compact-encoding')
const Protomux = require('protomux')
const idEnc = require('hypercore-id-encoding')

const ROOT = path.join(__dirname, '..')
const CORPUS = path.join(ROOT, 'fuzz', 'corpus')
const golden = JSON.parse(fs.readFileSync(path.join(ROOT, 'tests', 'fixtures', 'golden.json'), 'utf8'))

const unhex = (s) => Buffer.from(s, 'hex')

// The first byte of a roundtrip input picks the kind (fuzz_targets/roundtrip.rs).
const ROUNDTRIP_KIND = {
  metrics_request: 0,
  metrics_reply: 1,
  alias_request: 2,
  alias_response: 3,
  rpc_request: 4,
  rpc_response: 5,
  frame: 6,
  key: 7
}

const seeds = { wire: [], rpc: [], mux: [], keys: [], roundtrip: [] }

function add (target, bytes, kind) {
  seeds[target].push(Buffer.from(bytes))
  if (kind !== undefined) seeds.roundtrip.push(Buffer.concat([Buffer.from([ROUNDTRIP_KIND[kind]]), bytes]))
}

// Two Protomux instances over an in-memory message stream; every frame either side
// writes is recorded, one chunk per frame as secret-stream delivers them.
function muxPair () {
  const frames = []
  const mk = (peer) =>
    new Duplex({
      objectMode: true,
      read () {},
      write (chunk, _enc, cb) {
        frames.push(Buffer.from(chunk))
        setImmediate(() => peer().push(chunk))
        cb()
      }
    })
  const a = mk(() => b)
  const b = mk(() => a)
  a.userData = null
  b.userData = null
  return { a: new Protomux(a), b: new Protomux(b), frames, streams: [a, b] }
}

const tick = () => new Promise((resolve) => setImmediate(resolve))

async function captureFrames () {
  const { a, b, frames, streams } = muxPair()

  // What a scraper and our server exchange: the metrics channel, no id.
  const serverSide = b.createChannel({ protocol: 'prometheus-metrics' })
  const serverRaw = serverSide.addMessage({ encoding: c.raw })
  serverSide.open()
  const clientSide = a.createChannel({ protocol: 'prometheus-metrics', id: Buffer.alloc(0) })
  const clientRaw = clientSide.addMessage({ encoding: c.raw })
  const clientEvent = clientSide.addMessage({ encoding: c.raw })
  clientSide.open()
  await tick()

  // A channel with an id and a handshake.
  const other = a.createChannel({ protocol: 'register-alias', id: Buffer.from('alias-id'), handshake: c.string })
  other.open('hello')
  const otherRaw = other.addMessage({ encoding: c.raw })
  b.createChannel({ protocol: 'register-alias', id: Buffer.from('alias-id'), handshake: c.string }).open('hi')
  await tick()

  // Nobody serves this protocol: the other side rejects it.
  a.createChannel({ protocol: 'unknown-protocol' }).open()
  await tick()

  clientRaw.send(Buffer.from('0107' + Buffer.from('metrics').toString('hex') + '0101', 'hex'))
  serverRaw.send(Buffer.from('a 1\n'))
  // A corked batch: two channels, switching back and forth, with an empty message.
  a.cork()
  clientRaw.send(Buffer.from([1, 2, 3]))
  clientEvent.send(Buffer.alloc(0))
  otherRaw.send(Buffer.from('x'))
  clientRaw.send(Buffer.alloc(300, 0x61)) // a length past one varint byte
  a.uncork()
  await tick()

  clientSide.close()
  other.close()
  await tick()
  for (const s of streams) s.destroy()
  return frames
}

async function main () {
  for (const entry of golden.entries) {
    const bytes = unhex(entry.hex)
    switch (entry.kind) {
      case 'metrics_request':
      case 'metrics_reply':
      case 'alias_request':
      case 'alias_response':
        add('wire', bytes, entry.kind)
        break
      case 'rpc_request':
      case 'rpc_response':
        add('rpc', bytes, entry.kind)
        if (entry.frame_hex) add('mux', unhex(entry.frame_hex), 'frame')
        break
    }
    // Keys from the alias fixtures, in every spelling the parser takes (and raw).
    if (entry.kind === 'alias_request' && entry.input) {
      for (const field of ['secret', 'targetPublicKey']) {
        if (typeof entry.input[field] !== 'string' || entry.input[field].length !== 64) continue
        const key = unhex(entry.input[field])
        const z = idEnc.normalize(key)
        for (const spelling of [key, entry.input[field], entry.input[field].toUpperCase(), z, `pear://${z}/some/path`]) {
          add('keys', Buffer.from(spelling), 'key')
        }
      }
    }
  }

  for (const frame of await captureFrames()) add('mux', frame, 'frame')
  // Hostile shapes the unit tests pin (a batch length past the frame, a truncated open).
  for (const h of ['000001ffffffffffffffffff00', '0000010500 61', '0009', '000101ffff', '00', '']) {
    add('mux', unhex(h.replace(/ /g, '')))
  }

  // Near misses for the key parser: wrong lengths, letters outside the alphabets, and a
  // z32 spelling with non-zero padding bits.
  const z = idEnc.normalize(Buffer.alloc(32, 0xff))
  for (const text of ['0'.repeat(63), 'g'.repeat(64), 'l'.repeat(52), z.slice(0, -1) + '9', 'pear://', 'é'.repeat(26)]) {
    add('keys', Buffer.from(text))
  }

  let written = 0
  for (const [target, list] of Object.entries(seeds)) {
    const dir = path.join(CORPUS, target)
    fs.mkdirSync(dir, { recursive: true })
    for (const bytes of list) {
      const file = path.join(dir, crypto.createHash('sha1').update(bytes).digest('hex'))
      if (!fs.existsSync(file)) {
        fs.writeFileSync(file, bytes)
        written++
      }
    }
  }
  const counts = Object.entries(seeds).map(([t, l]) => `${t} ${l.length}`).join(', ')
  console.log(`seeds: ${counts}; ${written} new files under fuzz/corpus/`)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
