'use strict'
// DhtPromScraper, as `dht-prom-client/scraper`, in two forms:
// - drop-in: new DhtPromScraper(protomuxRpcClient, clientPublicKey), a JS protomux-rpc-client
//   does the networking exactly as in dht-prom-client 2.1.0;
// - native: new DhtPromScraper({ bootstrap, host, keyPair }, clientPublicKey, { requestTimeoutMs }),
//   the connection, protomux-rpc and decoding run in Rust.
const binding = require('./binding.js')
const { toKey, keyBuffer, bootstrapList, describe } = require('./lib/options')

const PROTOCOL_NAME = 'prometheus-metrics'

// compact-encoding-shaped codecs over the Rust wire layer, so both forms share one
// implementation and the reference's error texts.
const MetricsReqEnc = {
  preencode (state, m) { state.end += bytesOf(m).byteLength },
  encode (state, m) {
    const bytes = bytesOf(m)
    state.buffer.set(bytes, state.start)
    state.start += bytes.byteLength
  },
  decode () { throw new Error('MetricsReqEnc is encode-only here') }
}

function bytesOf (m) {
  if (!m._bytes) m._bytes = binding.encodeMetricsRequest(m.major, m.minor)
  return m._bytes
}

const MetricsReplyEnc = {
  preencode () { throw new Error('MetricsReplyEnc is decode-only here') },
  encode () { throw new Error('MetricsReplyEnc is decode-only here') },
  decode (state) {
    const bytes = state.buffer.subarray(state.start, state.end)
    state.start = state.end
    return toReply(binding.decodeMetricsReply(bytes))
  }
}

function toReply ({ success, metrics, errorMessage }) {
  return success ? { success: true, metrics } : { success: false, errorMessage }
}

class DhtPromScraper {
  constructor (transport, promClientPubKey, opts = {}) {
    this.targetKey = toKey(promClientPubKey, 'clientPublicKey')
    if (transport && typeof transport.makeRequest === 'function') {
      this.rpcClient = transport
      this._native = null
      return
    }
    if (transport === null || typeof transport !== 'object') {
      throw new TypeError('the first argument must be a protomux-rpc-client or { bootstrap, host, keyPair }, got ' + describe(transport))
    }
    const { requestTimeoutMs = 5000, maxBytes } = opts || {}
    if (typeof requestTimeoutMs !== 'number' || !(requestTimeoutMs > 0) || !Number.isFinite(requestTimeoutMs)) {
      throw new TypeError('opts.requestTimeoutMs must be a positive finite number, got ' + describe(requestTimeoutMs))
    }
    const keyPair = transport.keyPair || null
    if (keyPair !== null && !(keyPair.secretKey instanceof Uint8Array && keyPair.secretKey.byteLength === 64)) {
      throw new TypeError('keyPair must be { publicKey, secretKey } with a 64-byte secretKey')
    }
    this.rpcClient = null
    this._nativeOptions = {
      bootstrap: bootstrapList(transport.bootstrap),
      host: typeof transport.host === 'string' ? transport.host : '0.0.0.0',
      secretKey: keyPair ? Buffer.from(keyPair.secretKey) : undefined,
      requestTimeoutMs,
      maxBytes
    }
    this._native = null
    this._starting = null
    this._closed = false
  }

  async requestMetrics ({ major, minor, timeout } = {}) {
    if (this.rpcClient !== null) {
      // Note: can throw (for example on req timeout or if rpc closed halfway through)
      return this.rpcClient.makeRequest(this.targetKey, 'metrics', { major, minor }, {
        requestEncoding: MetricsReqEnc,
        responseEncoding: MetricsReplyEnc,
        timeout,
        protocol: PROTOCOL_NAME,
        id: Buffer.alloc(0)
      })
    }
    const native = await this._start()
    const outcome = await native.requestMetrics({ timeoutMs: timeout, major, minor })
    if (outcome.errorCode) {
      const error = new Error(outcome.failure)
      error.code = outcome.errorCode
      throw error
    }
    return toReply(outcome)
  }

  _start () {
    if (this._closed) return Promise.reject(Object.assign(new Error('scraper is closed'), { code: 'SCRAPER_CLOSED' }))
    if (this._starting === null) {
      this._starting = binding.startScraper(this._nativeOptions, keyBuffer(this.targetKey)).then((native) => {
        this._native = native
        return native
      })
    }
    return this._starting
  }

  // The native form owns its DHT node; the drop-in form leaves the rpc client to its owner.
  async close () {
    if (this.rpcClient !== null) return
    this._closed = true
    if (this._starting !== null) {
      try { await this._starting } catch {}
    }
    if (this._native !== null) await this._native.close()
  }
}

module.exports = DhtPromScraper
module.exports.DhtPromScraper = DhtPromScraper
