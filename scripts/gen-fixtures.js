'use strict'

// Writes tests/fixtures/golden.json: wire bytes produced and decoded by the real JS packages
// (dht-prom-client 2.1.0, dht-prom-alias-rpc 2.1.0, protomux-rpc 1.10.0, compact-encoding),
// which tests/golden.rs checks the Rust encoders and decoders against.
//
// The protomux-rpc messages are captured from a real ProtomuxRPC pair talking over an in-memory
// message stream, so they are the bytes the JS stack really puts in a channel. Edge cases that a
// JS peer never sends (non-minimal varints, odd flags, bad lengths) are decoded with the real
// encodings and the result or the thrown message is recorded.
//
// Run: npm run fixtures. The output is deterministic; commit it.

const fs = require('fs')
const path = require('path')
const { Duplex } = require('stream')

const c = require('compact-encoding')
const RPC = require('protomux-rpc')
const { MetricsReqEnc, MetricsReplyEnc } = require('dht-prom-client/lib/encodings')
const { AliasReqEnc, AliasRespEnc } = require('dht-prom-alias-rpc/lib/encodings')

const OUT = path.join(__dirname, '..', 'tests', 'fixtures', 'golden.json')

const hex = (b) => Buffer.from(b).toString('hex')
const unhex = (s) => Buffer.from(s.replace(/\s+/g, ''), 'hex')

// Strings and buffers as JSON: buffers become hex.
function plain (v) {
  if (v === null || v === undefined) return null
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return hex(v)
  if (Array.isArray(v)) return v.map(plain)
  if (typeof v === 'object') {
    const o = {}
    for (const k of Object.keys(v)) o[k] = plain(v[k])
    return o
  }
  return v
}

function errorView (err) {
  if (!err) return null
  const cause = err.cause
    ? {
        message: err.cause.message,
        code: err.cause.code === undefined ? null : err.cause.code,
        context: err.cause.context === undefined ? null : err.cause.context
      }
    : null
  return { message: err.message, code: err.code === undefined ? null : err.code, cause }
}

const entries = []

// A compact-encoding message: JS decodes `bytes`; when it decodes, also record the JS re-encoding
// of the decoded value (JS `m.major || 1` turns a decoded 0 into 1, for example).
function message (kind, enc, name, bytes, extra = {}) {
  const entry = { name, kind, hex: hex(bytes), ...extra }
  try {
    const decoded = c.decode(enc, bytes)
    entry.expect = plain(decoded)
    entry.reencode_hex = hex(c.encode(enc, decoded))
  } catch (err) {
    entry.error = err.message
  }
  entries.push(entry)
}

// A message the JS encoder produced from `input`.
function encoded (kind, enc, name, input, extra = {}) {
  message(kind, enc, name, c.encode(enc, input), { input: plain(input), ...extra })
}

// ---------------------------------------------------------------------------------------------
// dht-prom-client: MetricsReqEnc / MetricsReplyEnc

const MREQ = 'metrics_request'
encoded(MREQ, MetricsReqEnc, 'default request', {})
encoded(MREQ, MetricsReqEnc, 'explicit major 1 minor 1', { major: 1, minor: 1 })
encoded(MREQ, MetricsReqEnc, 'minor 0 encodes as 1 (JS ||)', { major: 1, minor: 0 })
encoded(MREQ, MetricsReqEnc, 'major 0 encodes as 1 (JS ||)', { major: 0, minor: 1 })
encoded(MREQ, MetricsReqEnc, 'major 1000', { major: 1000, minor: 1 })
encoded(MREQ, MetricsReqEnc, 'minor 1000', { major: 1, minor: 1000 })
encoded(MREQ, MetricsReqEnc, 'major 2 minor 1000 (major checked first)', { major: 2, minor: 1000 })
encoded(MREQ, MetricsReqEnc, 'major 70000 (0xfe prefix)', { major: 70000, minor: 1 })
message(MREQ, MetricsReqEnc, 'minor 0 decodes', unhex('01 00'))
message(MREQ, MetricsReqEnc, 'non-minimal varints are accepted', unhex('fd 01 00 fe 01 00 00 00'))
message(MREQ, MetricsReqEnc, 'non-minimal u64 varint is accepted', unhex('ff 01 00 00 00 00 00 00 00 01'))
message(MREQ, MetricsReqEnc, 'trailing bytes are ignored', unhex('01 01 ff ee'))
message(MREQ, MetricsReqEnc, 'empty', unhex(''))
message(MREQ, MetricsReqEnc, 'truncated after major', unhex('01'))
message(MREQ, MetricsReqEnc, 'truncated u16', unhex('fd 01'))
message(MREQ, MetricsReqEnc, 'truncated minor with bad major (truncation wins)', unhex('05'))
message(MREQ, MetricsReqEnc, 'major 2^53+1 loses precision in JS', unhex('ff 01 00 00 00 00 00 20 00 01'))
message(MREQ, MetricsReqEnc, 'major 2^64-1', unhex('ff ff ff ff ff ff ff ff ff 01'))
message(MREQ, MetricsReqEnc, 'minor 2^63+2^11+1', unhex('01 ff 01 08 00 00 00 00 00 80'))

const MREP = 'metrics_reply'
encoded(MREP, MetricsReplyEnc, 'success ascii', { success: true, metrics: '# HELP up 1\nup 1\n' })
encoded(MREP, MetricsReplyEnc, 'success multi-byte utf-8', { success: true, metrics: 'temp{city="Zürich"} 1\nemoji{x="🦀"} 2\n' })
encoded(MREP, MetricsReplyEnc, 'success empty string', { success: true, metrics: '' })
encoded(MREP, MetricsReplyEnc, 'success 252 bytes (last 1-byte length)', { success: true, metrics: 'x'.repeat(252) })
encoded(MREP, MetricsReplyEnc, 'success 253 bytes (first 0xfd length)', { success: true, metrics: 'y'.repeat(253) })
encoded(MREP, MetricsReplyEnc, 'success 300 bytes', { success: true, metrics: 'metric_total 1\n'.repeat(20) })
encoded(MREP, MetricsReplyEnc, 'failure', { success: false, errorMessage: 'Failed to obtain metrics (uid 0b5e7f1c-2a36-4c39-9a3e-6f1f8f0e2d11)' })
encoded(MREP, MetricsReplyEnc, 'failure empty message', { success: false, errorMessage: '' })
message(MREP, MetricsReplyEnc, 'future version 1', unhex('01 01 00'))
message(MREP, MetricsReplyEnc, 'future version 300', unhex('fd 2c 01 01 00'))
message(MREP, MetricsReplyEnc, 'future version only (nothing after)', unhex('05'))
message(MREP, MetricsReplyEnc, 'bool byte 2 means false', unhex('00 02 02 68 69'))
message(MREP, MetricsReplyEnc, 'bool byte ff means false', unhex('00 ff 00'))
message(MREP, MetricsReplyEnc, 'non-minimal string length', unhex('00 01 fd 02 00 68 69'))
message(MREP, MetricsReplyEnc, 'trailing bytes are ignored', unhex('00 01 02 68 69 ff'))
message(MREP, MetricsReplyEnc, 'empty', unhex(''))
message(MREP, MetricsReplyEnc, 'truncated bool', unhex('00'))
message(MREP, MetricsReplyEnc, 'truncated string', unhex('00 01 05 68 69'))
message(MREP, MetricsReplyEnc, 'huge string length', unhex('00 01 ff ff ff ff ff ff ff ff 7f'))
message(MREP, MetricsReplyEnc, 'huge u32 string length', unhex('00 01 fe ff ff ff ff 61'))
message(MREP, MetricsReplyEnc, 'invalid utf-8 (JS replaces, Rust rejects)', unhex('00 01 03 61 ff 62'), { rust_rejects: 'invalid-utf8' })
message(MREP, MetricsReplyEnc, 'truncated utf-8 sequence (JS replaces, Rust rejects)', unhex('00 01 02 61 e2'), { rust_rejects: 'invalid-utf8' })

// ---------------------------------------------------------------------------------------------
// dht-prom-alias-rpc: AliasReqEnc / AliasRespEnc

const secret = Buffer.alloc(32)
const target = Buffer.alloc(32)
for (let i = 0; i < 32; i++) {
  secret[i] = i
  target[i] = 0xff - i
}

const AREQ = 'alias_request'
const aliasReq = { secret, alias: 'my-service-1', targetPublicKey: target, hostname: 'host.example', service: 'api' }
encoded(AREQ, AliasReqEnc, 'default versions', aliasReq)
encoded(AREQ, AliasReqEnc, 'explicit versions', { ...aliasReq, major: 1, minor: 1 })
encoded(AREQ, AliasReqEnc, 'unicode alias and hostname', { ...aliasReq, alias: 'dienst-ü-🦀', hostname: 'höst.例え.jp', service: 'サービス' })
encoded(AREQ, AliasReqEnc, 'empty strings', { ...aliasReq, alias: '', hostname: '', service: '' })
encoded(AREQ, AliasReqEnc, 'major 1000', { ...aliasReq, major: 1000 })
encoded(AREQ, AliasReqEnc, 'minor 1000', { ...aliasReq, minor: 1000 })
message(AREQ, AliasReqEnc, 'minor 0 decodes', Buffer.concat([unhex('01 00'), c.encode(AliasReqEnc, aliasReq).subarray(2)]))
message(AREQ, AliasReqEnc, 'truncated secret', Buffer.concat([unhex('01 01'), secret.subarray(0, 31)]))
message(AREQ, AliasReqEnc, 'truncated service', c.encode(AliasReqEnc, aliasReq).subarray(0, -1))
message(AREQ, AliasReqEnc, 'trailing bytes are ignored', Buffer.concat([c.encode(AliasReqEnc, aliasReq), unhex('00 01')]))

const ARESP = 'alias_response'
encoded(ARESP, AliasRespEnc, 'success updated true', { success: true, updated: true })
encoded(ARESP, AliasRespEnc, 'success updated false', { success: true, updated: false })
encoded(ARESP, AliasRespEnc, 'failure Unauthorised', { success: false, errorMessage: 'Unauthorised' })
encoded(ARESP, AliasRespEnc, 'failure with uid', { success: false, errorMessage: 'Failed to register alias (uid 7d1f3c9a-1b2c-4d5e-8f90-a1b2c3d4e5f6)' })
encoded(ARESP, AliasRespEnc, 'major 2', { major: 2, minor: 1, success: true, updated: true })
encoded(ARESP, AliasRespEnc, 'minor 1000 is accepted', { major: 1, minor: 1000, success: true, updated: true })
message(ARESP, AliasRespEnc, 'minor 0 decodes', unhex('01 00 01 01'))
message(ARESP, AliasRespEnc, 'bool byte 2 means false (reads errorMessage)', unhex('01 01 02 02 6e 6f'))
message(ARESP, AliasRespEnc, 'updated byte 7 means false', unhex('01 01 01 07'))
message(ARESP, AliasRespEnc, 'truncated updated', unhex('01 01 01'))
message(ARESP, AliasRespEnc, 'wrong major with nothing after', unhex('03'))
message(ARESP, AliasRespEnc, 'major 2^64-1', unhex('ff ff ff ff ff ff ff ff ff 01 01 01'))

// ---------------------------------------------------------------------------------------------
// protomux-rpc: real traffic between two ProtomuxRPC instances

function messagePipe () {
  const frames = []
  const mk = (dir, peer) =>
    new Duplex({
      objectMode: true, // one chunk = one protomux frame, as secret-stream delivers them
      read () {},
      write (chunk, _enc, cb) {
        frames.push({ dir, frame: Buffer.from(chunk) })
        // Deliver later, as a real transport does: protomux-rpc registers a request only after
        // sending it, so a synchronous reply would be dropped.
        setImmediate(() => peer().push(chunk))
        cb()
      },
      final (cb) {
        setImmediate(() => peer().push(null))
        cb()
      }
    })
  const client = mk('client->server', () => server)
  const server = mk('server->client', () => client)
  client.userData = null
  server.userData = null
  return { client, server, frames }
}

// Split a protomux frame into channel messages (expanding batches).
function channelMessages (frame) {
  const state = { start: 0, end: frame.byteLength, buffer: frame }
  const channel = c.uint.decode(state)
  const type = c.uint.decode(state)
  if (channel !== 0) return [{ channel, type, payload: frame.subarray(state.start) }]
  if (type !== 0) return [] // open / reject / close
  const out = []
  let remote = c.uint.decode(state)
  while (state.start < state.end) {
    const len = c.uint.decode(state)
    if (len === 0) {
      remote = c.uint.decode(state)
      continue
    }
    const sub = { start: state.start, end: state.start + len, buffer: frame }
    const t = c.uint.decode(sub)
    out.push({ channel: remote, type: t, payload: frame.subarray(sub.start, sub.end) })
    state.start += len
  }
  return out
}

const UID = '0b5e7f1c-2a36-4c39-9a3e-6f1f8f0e2d11'

async function captureRpc () {
  const { client: cs, server: ss, frames } = messagePipe()

  // Server side exactly as dht-prom-client's _onconnection sets it up (no id), plus test methods.
  const server = new RPC(ss, { protocol: 'prometheus-metrics' })
  let reply = null
  server.respond('metrics', { requestEncoding: MetricsReqEnc, responseEncoding: MetricsReplyEnc }, async () => reply)
  server.respond('throws', async () => {
    const err = new Error('nope')
    err.code = 'EX'
    throw err
  })
  server.respond('throws-context', async () => {
    const err = new Error('boom')
    err.code = 'E_BOOM'
    err.context = 'while scraping'
    throw err
  })
  server.respond('throws-plain', async () => {
    throw new Error('plain failure')
  })
  server.respond('echo', async (value) => value)
  const failingEncoding = {
    preencode () {
      const err = new Error('cannot encode this')
      err.code = 'E_ENCODE'
      throw err
    },
    encode () {},
    decode () {}
  }
  server.respond('bad-encoding', { responseEncoding: failingEncoding }, async () => 'whatever')

  // Client side as the scraper / alias client: empty id.
  const client = new RPC(cs, { protocol: 'prometheus-metrics', id: Buffer.alloc(0) })
  const requestEnc = client._request.encoding // protomux-rpc's own request/response encodings
  const responseEnc = client._response.encoding

  const steps = [
    // The first four run in this order so that ids 1-4 give the exchange captured in
    // WIRE-NOTES.md (request, ok, decode error, unknown method, handler error).
    { name: 'metrics default', reply: { success: true, metrics: 'a 1\n' }, method: 'metrics', value: {}, opts: { requestEncoding: MetricsReqEnc, responseEncoding: MetricsReplyEnc }, server: { ok: 'metrics' } },
    { name: 'decode error major 1000', method: 'metrics', value: { major: 1000 }, opts: { requestEncoding: MetricsReqEnc, responseEncoding: MetricsReplyEnc }, server: { code: 'DECODE_ERROR' } },
    { name: 'unknown method', method: 'nope', value: null, opts: {}, server: { code: 'UNKNOWN_METHOD', method: 'nope' } },
    { name: 'request error with cause code', method: 'throws', value: null, opts: {}, server: { code: 'REQUEST_ERROR' } },
    { name: 'metrics failure reply', reply: { success: false, errorMessage: `Failed to obtain metrics (uid ${UID})` }, method: 'metrics', value: {}, opts: { requestEncoding: MetricsReqEnc, responseEncoding: MetricsReplyEnc }, server: { ok: 'metrics' } },
    { name: 'metrics unicode', reply: { success: true, metrics: 'x{l="ä🦀"} 1\n' }, method: 'metrics', value: {}, opts: { requestEncoding: MetricsReqEnc, responseEncoding: MetricsReplyEnc }, server: { ok: 'metrics' } },
    { name: 'decode error minor 1000', method: 'metrics', value: { minor: 1000 }, opts: { requestEncoding: MetricsReqEnc, responseEncoding: MetricsReplyEnc }, server: { code: 'DECODE_ERROR' } },
    { name: 'decode error empty value (Out of bounds)', method: 'metrics', value: Buffer.alloc(0), opts: { requestEncoding: c.raw }, server: { code: 'DECODE_ERROR' } },
    { name: 'unknown method unicode', method: 'méthode-🦀', value: null, opts: {}, server: { code: 'UNKNOWN_METHOD', method: 'méthode-🦀' } },
    { name: 'request error with cause context', method: 'throws-context', value: null, opts: {}, server: { code: 'REQUEST_ERROR' } },
    { name: 'request error without cause code', method: 'throws-plain', value: null, opts: {}, server: { code: 'REQUEST_ERROR' } },
    // A TypeError from an encoder (e.g. getMetrics returning a number) is rethrown by safety-catch
    // and crashes the JS process; only a plain Error from the encoder becomes ENCODE_ERROR.
    { name: 'encode error', method: 'bad-encoding', value: null, opts: {}, server: { code: 'ENCODE_ERROR' } },
    { name: 'echo bytes', method: 'echo', value: Buffer.from('00ff10', 'hex'), opts: {}, server: { ok: 'echo' } },
    { name: 'echo null value', method: 'echo', value: null, opts: {}, server: { ok: 'echo' } }
  ]

  let seen = 0
  const takeMessages = () => {
    const out = []
    for (; seen < frames.length; seen++) {
      for (const m of channelMessages(frames[seen].frame)) out.push({ dir: frames[seen].dir, ...m, frame: frames[seen].frame })
    }
    return out
  }

  for (const step of steps) {
    reply = step.reply || null
    let jsResult = null
    try {
      jsResult = { value: plain(await client.request(step.method, step.value, step.opts)) }
    } catch (err) {
      jsResult = { error: errorView(err) }
    }
    const msgs = takeMessages()
    const req = msgs.find((m) => m.dir === 'client->server' && m.type === 0)
    const res = msgs.find((m) => m.dir === 'server->client' && m.type === 1)
    entries.push(rpcRequestEntry(requestEnc, `captured request: ${step.name}`, req.payload, { frame_hex: hex(req.frame) }))
    entries.push(
      rpcResponseEntry(responseEnc, `captured response: ${step.name}`, res.payload, {
        frame_hex: hex(res.frame),
        server: step.server,
        requester_saw: jsResult
      })
    )
  }

  // An event: id 0, no response.
  client.event('metrics', {}, { requestEncoding: MetricsReqEnc })
  await new Promise((resolve) => setTimeout(resolve, 50))
  const ev = takeMessages().filter((m) => m.type === 0 || m.type === 1)
  if (ev.length !== 1) throw new Error('expected exactly one event message, got ' + ev.length)
  entries.push(rpcRequestEntry(requestEnc, 'captured event (id 0)', ev[0].payload, { frame_hex: hex(ev[0].frame) }))

  await client.end()
  cs.destroy()
  ss.destroy()

  return { requestEnc, responseEnc }
}

function rpcRequestEntry (enc, name, bytes, extra = {}) {
  const entry = { name, kind: 'rpc_request', hex: hex(bytes), ...extra }
  try {
    const m = c.decode(enc, bytes)
    entry.expect = { id: m.id, method: m.method, value_hex: hex(m.value) }
  } catch (err) {
    entry.error = err.message
  }
  return entry
}

function rpcResponseEntry (enc, name, bytes, extra = {}) {
  const entry = { name, kind: 'rpc_response', hex: hex(bytes), ...extra }
  try {
    const m = c.decode(enc, bytes)
    entry.expect = { id: m.id, value_hex: m.error ? null : hex(m.value), error: errorView(m.error) }
  } catch (err) {
    entry.error = err.message
  }
  return entry
}

function craftedRpc ({ requestEnc, responseEnc }) {
  const REQ = (name, bytes, extra) => entries.push(rpcRequestEntry(requestEnc, name, bytes, extra))
  const RES = (name, bytes, extra) => entries.push(rpcResponseEntry(responseEnc, name, bytes, extra))
  // Encoded by the JS response encoding from an error object (what a JS server would send).
  const RES_JS = (name, m, extra = {}) => {
    const input = { id: m.id, error: { message: m.error.message, code: m.error.code ?? null, cause: m.error.cause ? errorView(m.error.cause) : null } }
    RES(name, c.encode(responseEnc, m), { js_error_input: input, ...extra })
  }

  REQ('request with value', c.encode(requestEnc, { id: 7, method: 'metrics', value: unhex('01 01') }))
  REQ('request id 253 (0xfd prefix)', c.encode(requestEnc, { id: 253, method: 'm', value: Buffer.alloc(0) }))
  REQ('request id 2^53-1 (largest JS accepts)', c.encode(requestEnc, { id: Number.MAX_SAFE_INTEGER, method: 'm', value: Buffer.alloc(0) }))
  REQ('request id 2^53 is rejected by compact-encoding 3', unhex('ff 00 00 00 00 00 00 20 00 01 6d'))
  REQ('request empty method and value', unhex('01 00'))
  REQ('request empty', unhex(''))
  REQ('request truncated method', unhex('01 05 61 62'))
  REQ('request non-minimal id', unhex('fd 03 00 01 6d 01 01'), { noncanonical: true })
  REQ('request invalid utf-8 method (JS replaces, Rust rejects)', unhex('01 02 c3 28'), { rust_rejects: 'invalid-utf8' })

  RES('response ok empty value', unhex('00 05'))
  RES('response ok id 0', unhex('00 00 ab'))
  RES('response empty', unhex(''))
  RES('response truncated id', unhex('00 fd 01'))
  RES('response truncated error message', unhex('01 01 05 61'))
  RES('response code flag without error flag is a value', unhex('02 01 0e 55 4e 4b 4e 4f 57 4e 5f 4d 45 54 48 4f 44'), { noncanonical: true })
  RES('response high flag bits are ignored', unhex('f1 02 02 68 69'), { noncanonical: true })
  RES('response context flag without cause flag is ignored', unhex('09 02 02 68 69'), { noncanonical: true })
  RES('response flags in a 2-byte bitfield', unhex('fd 03 00 04 02 68 69 02 45 58'), { noncanonical: true })
  RES('response flags bitfield 0xff needs 8 bytes', unhex('ff 01 00 00'))
  RES('response id 2^53 is rejected by compact-encoding 3', unhex('00 ff 00 00 00 00 00 00 20 00'))
  RES('response cause with empty context string', unhex('0f 02 02 68 69 0d 52 45 51 55 45 53 54 5f 45 52 52 4f 52 01 63 00 00'))
  RES('response unknown code keeps message only in JS', unhex('03 02 02 68 69 06 43 55 53 54 4f 4d'))

  RES_JS('js error without code', { id: 4, error: new Error('plain failure') })
  RES_JS('js error without code strips "undefined: " (JS replace quirk)', { id: 4, error: new Error('x undefined: y') })
  const odd = new Error('wrapped: X: inner X: again')
  odd.code = 'X'
  RES_JS('js error code prefix stripped at first occurrence, not only at the start', { id: 9, error: odd })
  const noPrefix = new Error('no prefix here')
  noPrefix.code = 'SOME_CODE'
  RES_JS('js error with code but no prefix', { id: 10, error: noPrefix })
  const emptyCode = new Error('a: b: c')
  emptyCode.code = ''
  RES_JS('js error with empty code strips first ": "', { id: 11, error: emptyCode })
}

async function main () {
  const encs = await captureRpc()
  craftedRpc(encs)

  // Version of the package `name` as resolved from `from` (some packages do not export package.json).
  const pkg = (name, from = __dirname) => {
    let dir = path.dirname(require.resolve(name, { paths: [from] }))
    for (;;) {
      const file = path.join(dir, 'package.json')
      if (fs.existsSync(file)) {
        const json = JSON.parse(fs.readFileSync(file, 'utf8'))
        if (json.name === name) return json.version
      }
      const up = path.dirname(dir)
      if (up === dir) throw new Error('no package.json for ' + name)
      dir = up
    }
  }
  const rpcDir = path.dirname(require.resolve('protomux-rpc'))
  const out = {
    comment: 'Generated by scripts/gen-fixtures.js from the real JS packages. Do not edit by hand.',
    packages: {
      'dht-prom-client': pkg('dht-prom-client'),
      'dht-prom-alias-rpc': pkg('dht-prom-alias-rpc'),
      'protomux-rpc': pkg('protomux-rpc'),
      protomux: pkg('protomux', rpcDir),
      'compact-encoding (dht-prom-*)': pkg('compact-encoding', path.dirname(require.resolve('dht-prom-client'))),
      'compact-encoding (protomux-rpc)': pkg('compact-encoding', rpcDir),
      'compact-encoding-bitfield': pkg('compact-encoding-bitfield', rpcDir)
    },
    entries
  }
  fs.mkdirSync(path.dirname(OUT), { recursive: true })
  fs.writeFileSync(OUT, JSON.stringify(out, null, 1) + '\n')
  console.log(`wrote ${entries.length} entries to ${path.relative(process.cwd(), OUT)}`)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
