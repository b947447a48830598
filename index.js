'use strict'
// Hand-written facade over the generated loader (binding.js): the drop-in DhtPromClient
// class of dht-prom-client 2.1.0, with the networking in Rust. `napi build` never
// overwrites this file.
const { EventEmitter } = require('events')
const crypto = require('crypto')
const os = require('os')
const binding = require('./binding.js')
const { toKey, bootstrapEntry, bootstrapList, describe } = require('./lib/options')

const DEFAULT_REGISTER_INTERVAL_MS = 1000 * 60 * 60

// compact-encoding's raw: the bytes as they are (Rust encodes and decodes the messages).
const RAW = {
  preencode (state, buf) { state.end += buf.byteLength },
  encode (state, buf) { state.buffer.set(buf, state.start); state.start += buf.byteLength },
  decode (state) {
    const buf = state.buffer.subarray(state.start, state.end)
    state.start = state.end
    return Buffer.from(buf)
  }
}

class DhtPromClient extends EventEmitter {
  constructor (dht, getMetrics, scraperPublicKey, alias, scraperSecret, service, opts = {}) {
    super()
    const {
      keyPair = null,
      registerIntervalMs = DEFAULT_REGISTER_INTERVAL_MS,
      hostname = os.hostname(),
      protomuxRpcClient = null,
      includeOwnMetrics = false
    } = opts || {}

    this.dht = checkDht(dht)
    const metrics = resolveGetMetrics(getMetrics)
    this.promClient = metrics.promClient
    this.getMetrics = metrics.getMetrics
    this.scraperPublicKeys = toKeyList(scraperPublicKey, 'scraperPublicKey')
    this.scraperPublicKey = this.scraperPublicKeys[0]
    this.scraperSecret = toKey(scraperSecret, 'scraperSecret')
    this.alias = checkString(alias, 'alias')
    this.service = checkString(service, 'service')
    this.hostname = checkString(hostname, 'opts.hostname')
    this.registerIntervalMs = checkInterval(registerIntervalMs)
    this.serverKeyPair = keyPair === null || keyPair === undefined ? binding.keyPair() : checkKeyPair(keyPair)
    this.protomuxRpcClient = protomuxRpcClient
    // Where 'alias-attempt' is emitted, as on the reference's AliasRpcClient.
    this.aliasClient = new EventEmitter()
    this.includeOwnMetrics = checkBoolean(includeOwnMetrics, 'opts.includeOwnMetrics')

    this._native = null
    this._opening = null
    this._closing = null
    this.opened = false
    this.closed = false
  }

  get publicKey () {
    return this.serverKeyPair.publicKey
  }

  ready () {
    if (this._opening === null) this._opening = this._open()
    return this._opening
  }

  async _open () {
    const { bootstrap, host } = nodeOptions(this.dht)
    const native = await binding.startServer(
      {
        bootstrap,
        host,
        publicKey: this.serverKeyPair.publicKey,
        secretKey: this.serverKeyPair.secretKey,
        allowedKeys: this.scraperPublicKeys,
        alias: {
          secret: this.scraperSecret,
          alias: this.alias,
          hostname: this.hostname,
          service: this.service,
          registerIntervalMs: this.registerIntervalMs
        }
      },
      this._serveMetrics.bind(this),
      this._onNativeEvent.bind(this),
      // With a JS protomux-rpc-client the registrations go through it; else all in Rust.
      this.protomuxRpcClient ? this._registerThroughRpcClient.bind(this) : undefined
    )
    if (this._closing !== null) {
      await native.close()
      return
    }
    this._native = native
    this.opened = true
  }

  close () {
    if (this._closing === null) this._closing = this._close()
    return this._closing
  }

  async _close () {
    if (this._opening !== null) {
      try { await this._opening } catch {}
    }
    if (this._native !== null) await this._native.close()
    if (this.protomuxRpcClient && typeof this.protomuxRpcClient.close === 'function') {
      await this.protomuxRpcClient.close()
    }
    if (this.dht && typeof this.dht.destroy === 'function') await this.dht.destroy()
    this.closed = true
  }

  ownMetrics () {
    return this._native === null ? '' : this._native.ownMetrics()
  }

  // Called from Rust for each scrape. Never throws and never rejects: it returns the
  // metrics text, or null once metrics-error has been emitted, or a Promise of either.
  _serveMetrics ({ uid, remotePublicKey }) {
    this._emitOpen('metrics-request', { uid, remotePublicKey })
    let metrics
    try {
      metrics = this.getMetrics()
    } catch (error) {
      this._emitOpen('metrics-error', { error, remotePublicKey, uid })
      return null
    }
    // A synchronous getMetrics: the text goes back at once, with no promise round trip
    // through napi (half the event-loop time per scrape; benchmark/README.md), and
    // metrics-success still comes a microtask later, as after the reference's await. Text
    // of at most MAX/3 UTF-16 units cannot exceed MAX UTF-8 bytes: no byte count needed.
    if (typeof metrics === 'string' && metrics.length * 3 <= binding.MAX_METRICS_BYTES) {
      queueMicrotask(() => this._emitOpen('metrics-success', { uid, remotePublicKey }))
      return this.includeOwnMetrics ? withOwnMetrics(metrics, this.ownMetrics()) : metrics
    }
    return this._settleMetrics(uid, remotePublicKey, metrics)
  }

  async _settleMetrics (uid, remotePublicKey, returned) {
    try {
      const metrics = await returned
      if (typeof metrics !== 'string') {
        throw new TypeError(`getMetrics must return a string (or a Promise of one), got ${describe(metrics)}`)
      }
      // One reply is one secret-stream message: what does not fit cannot be sent at all.
      const bytes = Buffer.byteLength(metrics)
      if (bytes > binding.MAX_METRICS_BYTES) {
        throw new RangeError(`metrics are ${bytes} bytes, more than the ${binding.MAX_METRICS_BYTES} bytes one reply can carry`)
      }
      this._emitOpen('metrics-success', { uid, remotePublicKey })
      return this.includeOwnMetrics ? withOwnMetrics(metrics, this.ownMetrics()) : metrics
    } catch (error) {
      this._emitOpen('metrics-error', { error, remotePublicKey, uid })
      return null
    }
  }

  // Called from Rust for each registration when opts.protomuxRpcClient is given. Settles
  // with the encoded AliasResponse, or with the error protomux-rpc-client gave.
  async _registerThroughRpcClient ({ scraperPublicKey, body, timeoutMs }) {
    try {
      const response = await this.protomuxRpcClient.makeRequest(scraperPublicKey, 'alias', body, {
        requestEncoding: RAW,
        responseEncoding: RAW,
        timeout: timeoutMs,
        protocol: 'register-alias',
        id: Buffer.alloc(0)
      })
      return { response }
    } catch (err) {
      return { errorCode: err && err.code ? String(err.code) : undefined, errorMessage: String((err && err.message) || err) }
    }
  }

  _onNativeEvent (event) {
    const { name, uid, remotePublicKey } = event
    switch (name) {
      case 'alias-attempt':
        // The reference's AliasRpcClient emits this on client.aliasClient.
        if (this.closed) return
        return this.aliasClient.emit('alias-attempt', {
          alias: event.alias,
          targetKey: event.targetKey,
          hostname: event.hostname,
          service: event.service,
          uid: crypto.randomUUID(),
          scraperPublicKey: event.scraperPublicKey
        })
      case 'register-alias-success':
        return this._emitOpen(name, { updated: event.updated, scraperPublicKey: event.scraperPublicKey })
      case 'register-alias-error': {
        const error = new Error(event.errorMessage)
        if (event.errorCode) error.code = event.errorCode
        error.scraperPublicKey = event.scraperPublicKey
        return this._emitOpen(name, error)
      }
      case 'connection-open':
        return this._emitOpen(name, { uid, remoteAddress: event.remoteAddress, remotePublicKey })
      case 'connection-close':
        return this._emitOpen(name, { uid, remotePublicKey })
      case 'connection-error': {
        const error = new Error(event.errorMessage)
        error.code = event.errorCode
        return this._emitOpen(name, { error, uid, remotePublicKey })
      }
      case 'firewall-block':
        return this._emitOpen(name, { remotePublicKey, payload: handshakePayload(event.payload), address: event.address })
    }
  }

  // No event reaches listeners once close() has resolved.
  _emitOpen (name, payload) {
    if (this.closed) return false
    return this.emit(name, payload)
  }

  registerLogger (logger) {
    const normalize = binding.normalizeKey
    this.on('firewall-block', ({ remotePublicKey, address }) => {
      logger.info(`Firewall blocked unauthorised connection attempt from ${address} (public key: ${normalize(remotePublicKey)})`)
    })
    this.aliasClient.on('alias-attempt', ({ targetKey, hostname, service }) => {
      logger.info(`Prom client attempting to register ${this.alias}->${normalize(targetKey)} for service ${service} at host ${hostname}}`)
    })
    this.on('register-alias-success', ({ updated }) => {
      logger.info(`Prom client successfully registered alias ${this.alias} (updated: ${updated})`)
    })
    this.on('register-alias-error', (error) => {
      logger.info(`Prom client failed to register alias ${error.stack}`)
    })
    this.on('connection-open', ({ uid, remotePublicKey }) => {
      logger.info(`Prom client opened connection to ${normalize(remotePublicKey)} (uid: ${uid})`)
    })
    this.on('connection-close', ({ uid, remotePublicKey }) => {
      logger.info(`Prom client closed connection to ${normalize(remotePublicKey)} (uid: ${uid})`)
    })
    this.on('connection-error', ({ error, uid, remotePublicKey }) => {
      logger.info(`Prom client error on connection to ${normalize(remotePublicKey)}: ${error.stack} (uid: ${uid})`)
    })
    // As the reference: debug lines only when the logger is at debug level right now.
    if (logger.level === 'debug') {
      this.on('metrics-request', ({ uid, remotePublicKey }) => {
        logger.debug(`Prom client received metrics request from ${normalize(remotePublicKey)} (uid: ${uid})`)
      })
      this.on('metrics-success', ({ uid }) => {
        logger.debug(`Prom client successfully processed metrics request (uid: ${uid})`)
      })
    }
    this.on('metrics-error', ({ uid, error }) => {
      logger.info(`Prom client failed to process metrics request: ${error} (uid: ${uid})`)
    })
  }
}

// The payload as hyperdht decodes it for its firewall: every field present, in the same
// order, with null (or [] for the address lists) where the peer sent nothing.
function handshakePayload (p) {
  return {
    version: p.version,
    error: p.error,
    firewall: p.firewall,
    holepunch: p.holepunch ?? null,
    addresses4: p.addresses4 ?? [],
    addresses6: p.addresses6 ?? [],
    udx: p.udx ?? null,
    secretStream: p.secretStream ?? null,
    relayThrough: p.relayThrough ?? null,
    relayAddresses: p.relayAddresses ?? null
  }
}

// Own metrics after the scrape's text, on a line of their own (opts.includeOwnMetrics).
function withOwnMetrics (metrics, own) {
  if (own === '') return metrics
  const separator = metrics === '' || metrics.endsWith('\n') ? '' : '\n'
  return metrics + separator + own
}

function resolveGetMetrics (getMetrics) {
  if (getMetrics === null || getMetrics === undefined) {
    throw new TypeError('getMetrics must be a function or a prom-client instance, got ' + describe(getMetrics))
  }
  // Duck-typed as the reference: a prom-client module (or anything with .register.metrics).
  if (getMetrics.register?.metrics != null) {
    const register = getMetrics.register
    // The reference fails here too (it binds register.metrics at construction).
    if (typeof register.metrics !== 'function') {
      throw new TypeError('getMetrics.register.metrics must be a function, got ' + describe(register.metrics))
    }
    return { promClient: getMetrics, getMetrics: () => register.metrics() }
  }
  if (typeof getMetrics === 'function') return { promClient: null, getMetrics }
  // A prom-client Registry itself, which the reference mistakes for a function.
  if (typeof getMetrics.metrics === 'function') {
    return { promClient: null, getMetrics: () => getMetrics.metrics() }
  }
  throw new TypeError('getMetrics must be a function or a prom-client instance, got ' + describe(getMetrics))
}

function checkDht (dht) {
  if (dht === null || typeof dht !== 'object') {
    throw new TypeError('dht must be a HyperDHT instance or { bootstrap, host } options, got ' + describe(dht))
  }
  // A plain options object in place of a HyperDHT instance: check it now, not at ready().
  if (typeof dht.createServer !== 'function') {
    if (dht.bootstrap !== undefined && dht.bootstrap !== null) {
      if (!Array.isArray(dht.bootstrap)) {
        throw new TypeError('dht.bootstrap must be an array of "host:port" or { host, port }, got ' + describe(dht.bootstrap))
      }
      dht.bootstrap.forEach(bootstrapEntry)
    }
    if (dht.host !== undefined && typeof dht.host !== 'string') {
      throw new TypeError('dht.host must be a string, got ' + describe(dht.host))
    }
  }
  return dht
}

// The Rust node joins the network the JS dht is on: same bootstrap list, same bind host.
function nodeOptions (dht) {
  const host = dht.io?._host || dht.host || '0.0.0.0'
  return { bootstrap: bootstrapList(dht.bootstrapNodes || dht.bootstrap), host }
}

function toKeyList (value, name) {
  if (Array.isArray(value)) {
    if (value.length === 0) throw new TypeError(`${name} must not be an empty array`)
    return value.map((key, i) => toKey(key, `${name}[${i}]`))
  }
  return [toKey(value, name)]
}

function checkString (value, name) {
  if (typeof value !== 'string') throw new TypeError(`${name} must be a string, got ${describe(value)}`)
  return value
}

function checkInterval (value) {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new TypeError(`opts.registerIntervalMs must be a positive finite number, got ${describe(value)}`)
  }
  return value
}

function checkBoolean (value, name) {
  if (typeof value !== 'boolean') throw new TypeError(`${name} must be a boolean, got ${describe(value)}`)
  return value
}

function checkKeyPair (keyPair) {
  const { publicKey, secretKey } = keyPair || {}
  if (!isBytes(publicKey, 32) || !isBytes(secretKey, 64)) {
    throw new TypeError('opts.keyPair must be { publicKey: 32 bytes, secretKey: 64 bytes }')
  }
  // An ed25519 secret key is seed || public key: the pair must be the one the seed derives.
  const derived = binding.keyPair(Buffer.from(secretKey.buffer, secretKey.byteOffset, 32))
  if (!derived.publicKey.equals(publicKey) || !derived.secretKey.equals(secretKey)) {
    throw new TypeError('opts.keyPair.secretKey does not belong to opts.keyPair.publicKey')
  }
  // Buffers are kept as given, so client.publicKey is the caller's own publicKey (as the reference).
  return { publicKey: asBuffer(publicKey), secretKey: asBuffer(secretKey) }
}

function isBytes (value, length) {
  return value instanceof Uint8Array && value.byteLength === length
}

function asBuffer (bytes) {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes)
}

module.exports = DhtPromClient
module.exports.DhtPromClient = DhtPromClient
module.exports.decodeKey = binding.decodeKey
module.exports.normalizeKey = binding.normalizeKey
module.exports.keyPair = binding.keyPair
