'use strict'
const idEnc = require('hypercore-id-encoding')
const { decodeKey, normalizeKey, keyPair } = require('..')

describe('key decoding (native, through the index.js loader)', () => {
  const { publicKey } = keyPair()

  test('accepts a Buffer, a Uint8Array, hex, z32 and pear:// like hypercore-id-encoding', () => {
    const forms = [
      publicKey,
      new Uint8Array(publicKey),
      publicKey.toString('hex'),
      idEnc.normalize(publicKey),
      `pear://${idEnc.normalize(publicKey)}/app`
    ]
    for (const form of forms) {
      const decoded = decodeKey(form)
      expect(Buffer.isBuffer(decoded)).toBe(true)
      expect(decoded.equals(idEnc.decode(form))).toBe(true)
    }
    expect(normalizeKey(publicKey)).toBe(idEnc.normalize(publicKey))
  })

  test.each([
    ['a short buffer', Buffer.alloc(31), /32 bytes, got 31/],
    ['a short string', 'abc', /got 3 chars/],
    ['bad hex', 'z'.repeat(64), /not valid hex/],
    ['bad z32', 'l'.repeat(52), /not valid z32/]
  ])('rejects %s with ERR_INVALID_KEY', (_name, input, message) => {
    let thrown = null
    try { decodeKey(input) } catch (err) { thrown = err }
    // Native errors come from Node's realm, not jest's: check the shape, not instanceof.
    expect(Object.prototype.toString.call(thrown)).toBe('[object Error]')
    expect(thrown.code).toBe('ERR_INVALID_KEY')
    expect(thrown.message).toMatch(message)
    expect(() => idEnc.decode(input)).toThrow() // the JS reference rejects it too
  })

  test('keyPair(seed) is deterministic and matches HyperDHT.keyPair(seed)', () => {
    const HyperDHT = require('hyperdht')
    const seed = Buffer.alloc(32, 7)
    const ours = keyPair(seed)
    const theirs = HyperDHT.keyPair(seed)
    expect(ours.publicKey.equals(theirs.publicKey)).toBe(true)
    expect(ours.secretKey.equals(theirs.secretKey)).toBe(true)
  })
})
