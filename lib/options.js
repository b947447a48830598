'use strict'
// Argument helpers shared by the facades: keys as Buffer/hex/z32 (what hypercore-id-encoding
// decodes), bootstrap lists, setInterval's reading of a delay, construction-time warnings,
// and descriptions of wrong values for error messages.
const binding = require('../binding.js')

const PUBLIC_BOOTSTRAP = [
  '88.99.3.86@node1.hyperdht.org:49737',
  '142.93.90.113@node2.hyperdht.org:49737',
  '138.68.147.8@node3.hyperdht.org:49737'
]

// The `code` of every warning about an argument the reference would choke on later.
const ARG_WARNING_CODE = 'DHT_PROM_CLIENT_RS_ARG'

// Node's setInterval clamps delays to [1, TIMEOUT_MAX]; anything else runs every 1 ms.
const TIMEOUT_MAX = 2 ** 31 - 1

const Z32_ALPHABET = 'ybndrfg8ejkmcpqxot1uwisza345h769'

// Decodes a 32-byte key as hypercore-id-encoding does (which the reference uses): a
// 32-byte Buffer/Uint8Array is returned as it is, strings are hex, z32 or pear:// links.
function toKey (value, name) {
  if (value instanceof Uint8Array) {
    if (value.byteLength === 32) return value
    throw new TypeError(`${name} must be 32 bytes, got ${value.byteLength}`)
  }
  if (typeof value !== 'string') {
    throw new TypeError(`${name} must be a 32-byte Buffer/Uint8Array, a 64-char hex or a 52-char z32 string, got ${describe(value)}`)
  }
  try {
    return binding.decodeKey(lenientZ32(value))
  } catch (err) {
    throw new TypeError(`${name} ${err.message}`)
  }
}

// The last of 52 z32 chars carries one key bit and four padding bits; the JS decoder
// ignores the padding, so a string with non-zero padding is the same key as the canonical one.
function lenientZ32 (text) {
  const key = text.startsWith('pear://') ? text.slice(7).split('/')[0] : text
  if (key.length !== 52) return text
  const value = Z32_ALPHABET.indexOf(key[51])
  if (value < 0) return text
  return key.slice(0, 51) + Z32_ALPHABET[value & 0b10000]
}

// A key as a Buffer for the Rust side (a Uint8Array is viewed, not copied).
function keyBuffer (key) {
  return Buffer.isBuffer(key) ? key : Buffer.from(key.buffer, key.byteOffset, key.byteLength)
}

function bootstrapEntry (node) {
  if (typeof node === 'string' && /^.+:\d+$/.test(node)) return node
  if (node && typeof node.host === 'string' && Number.isInteger(node.port)) return `${node.host}:${node.port}`
  throw new TypeError('bootstrap entries must be "host:port" or { host, port }, got ' + describe(node))
}

function bootstrapList (nodes) {
  if (nodes === undefined || nodes === null) return PUBLIC_BOOTSTRAP
  if (!Array.isArray(nodes)) throw new TypeError('bootstrap must be an array, got ' + describe(nodes))
  return nodes.map(bootstrapEntry)
}

// What setInterval(fn, value) makes of `value`: { ms } or, where its `value * 1` throws
// (a BigInt, a Symbol), { error } (a TypeError naming `name`).
function timerDelay (value, name) {
  let ms
  try {
    ms = value * 1
  } catch (err) {
    return { error: new TypeError(`${name} must be a number of milliseconds, got ${describe(value)} (${err.message})`) }
  }
  return { ms: ms >= 1 && ms <= TIMEOUT_MAX ? ms : 1 }
}

function isTimerDelay (value) {
  return typeof value === 'number' && value >= 1 && value <= TIMEOUT_MAX
}

// One warning per argument the reference takes at construction and fails on later.
function warnArgument (message) {
  process.emitWarning(message, { type: 'DhtPromClientWarning', code: ARG_WARNING_CODE })
}

function describe (value) {
  if (value === null) return 'null'
  if (value === undefined) return 'undefined'
  if (Buffer.isBuffer(value)) return `a Buffer of ${value.byteLength} bytes`
  if (Array.isArray(value)) return 'an array'
  if (value instanceof Uint8Array) return `a Uint8Array of ${value.byteLength} bytes`
  if (typeof value === 'function') return 'a function'
  if (typeof value === 'symbol') return 'a symbol'
  if (typeof value === 'bigint') return `bigint ${value}n`
  return typeof value === 'object' ? 'an object' : `${typeof value} ${String(value).slice(0, 40)}`
}

module.exports = {
  PUBLIC_BOOTSTRAP,
  ARG_WARNING_CODE,
  TIMEOUT_MAX,
  toKey,
  keyBuffer,
  bootstrapEntry,
  bootstrapList,
  timerDelay,
  isTimerDelay,
  warnArgument,
  describe
}
