'use strict'
// Argument helpers shared by the facades: keys as Buffer/hex/z32, bootstrap lists, and
// descriptions of wrong values for TypeError messages.
const binding = require('../binding.js')

const PUBLIC_BOOTSTRAP = [
  '88.99.3.86@node1.hyperdht.org:49737',
  '142.93.90.113@node2.hyperdht.org:49737',
  '138.68.147.8@node3.hyperdht.org:49737'
]

function toKey (value, name) {
  if (typeof value !== 'string' && !(value instanceof Uint8Array)) {
    throw new TypeError(`${name} must be a 32-byte Buffer/Uint8Array, a 64-char hex or a 52-char z32 string, got ${describe(value)}`)
  }
  try {
    return binding.decodeKey(value)
  } catch (err) {
    throw new TypeError(`${name} ${err.message}`)
  }
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

function describe (value) {
  if (value === null) return 'null'
  if (Buffer.isBuffer(value)) return `a Buffer of ${value.byteLength} bytes`
  if (Array.isArray(value)) return 'an array'
  if (value instanceof Uint8Array) return `a Uint8Array of ${value.byteLength} bytes`
  if (typeof value === 'function') return 'a function'
  return typeof value === 'object' ? 'an object' : `${typeof value} ${String(value).slice(0, 40)}`
}

module.exports = { PUBLIC_BOOTSTRAP, toKey, bootstrapEntry, bootstrapList, describe }
