'use strict'
// Hand-written facade over the generated loader (binding.js): the drop-in DhtPromClient
// class of dht-prom-client 2.1.0, with the networking in Rust. `napi build` never
// overwrites this file.
const { EventEmitter } = require('events')
const crypto = require('crypto')
const os = require('os')
const binding = require('./binding.js')
const {
  ARG_WARNING_CODE, TIMEOUT_MAX, toKey, keyBuffer, bootstrapEntry, bootstrapList, timerDelay, isTimerDelay, warnArgument, describe
} = require('./lib/options')
const { rpcClientError, rpcError, hidden } = require('./lib/errors')

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
    // The reference destructures opts in its parameter list: null throws, any other value
    // (a number, a string) just gives the defaults.
    if (opts === null) throw new TypeError('opts must be an object (or left out), got null')
    const {
      keyPair,
      registerIntervalMs = DEFAULT_REGISTER_INTERVAL_MS,
      hostname = os.hostname(),
      protomuxRpcClient = null,
      includeOwnMetrics = false
    } = opts

    // Thrown here because the reference throws here too, in the same order: keys that do
    // not decode, no getMetrics at all, no usable dht.
    this.scraperPublicKeys = toKeyList(scraperPublicKey, 'scraperPublicKey')
    const secret = toKey(scraperSecret, 'scraperSecret')
    const metrics = resolveGetMetrics(getMetrics)
    this.dht = checkDht(dht)

    // Stored as given, as the reference stores them (keys decoded as hypercore-id-encoding).
    this.protomuxRpcClient = protomuxRpcClient || null
    this.promClient = metrics.promClient
    this.getMetrics = metrics.getMetrics
    this.scraperPublicKey = this.scraperPublicKeys[0]
    this.scraperSecret = secret
    this.alias = alias
    this.service = service
    this.hostname = hostname
    this.serverKeyPair = keyPair || binding.keyPair()
    this.registerIntervalMs = registerIntervalMs
    this.includeOwnMetrics = includeOwnMetrics === true
    // Where 'alias-attempt' is emitted, with the fields of the reference's AliasRpcClient.
    this.aliasClient = new EventEmitter()
    this.aliasClient.serverPubKey = this.scraperPublicKey
    this.aliasClient.secret = secret
    this.aliasClient.rpcClient = this.protomuxRpcClient

    // Arguments the reference takes here and fails on later: one warning now naming the
    // argument, and the failure later at the same point, with a clearer message. None of
    // them ever reaches the Rust side.
    this._registerProblem = null // every alias registration fails with this
    this._openProblem = null // ready() rejects with this
    this._intervalMs = DEFAULT_REGISTER_INTERVAL_MS
    this._checkLaterArguments(metrics, keyPair, includeOwnMetrics)

    // As ready-resource, which the reference extends.
    this.opening = null
    this.closing = null
    this.opened = false
    this.closed = false

    this._native = null
    this._scrapersByHex = new Map(this.scraperPublicKeys.map((key) => [hexOf(key), key]))
    this._held = [] // events that arrive before ready() resolves, in order
    this._firstAttempts = new Set() // first attempts already announced by _open, by scraper
    this._inFlight = new Set() // scrapers with a registration attempt under way
    this._aliasStopped = false
    this._registerInterval = null
    this._keepAlive = null
    this._onNativeClosed = null
    this._rpcClientErrors = new Map() // the last error protomux-rpc-client gave, by scraper
    this._rpcCalls = new Set() // its requests under way
  }

  _checkLaterArguments (metrics, keyPair, includeOwnMetrics) {
    if (metrics.unusable) {
      warnArgument(`getMetrics is ${describe(this.getMetrics)}, not a function or a prom-client: every scrape will fail with metrics-error`)
    }
    const registerProblems = []
    for (const [value, name] of [[this.alias, 'alias'], [this.service, 'service'], [this.hostname, 'opts.hostname']]) {
      if (typeof value !== 'string') registerProblems.push(`${name} must be a string, got ${describe(value)}`)
    }
    const rpc = this.protomuxRpcClient
    if (rpc !== null && typeof rpc.makeRequest !== 'function') {
      registerProblems.push(`opts.protomuxRpcClient must be a protomux-rpc-client, got ${describe(rpc)} without makeRequest()`)
    } else if (rpc !== null && typeof rpc.close !== 'function') {
      warnArgument(`opts.protomuxRpcClient has no close(): close() will fail`)
    }
    for (const problem of registerProblems) warnArgument(`${problem}: the alias registration will fail`)
    if (registerProblems.length > 0) this._registerProblem = registerProblems.join('; ')

    const delay = timerDelay(this.registerIntervalMs, 'opts.registerIntervalMs')
    if (delay.error) {
      warnArgument(`${delay.error.message}: ready() will fail`)
      this._openProblem = delay.error
    } else {
      if (!isTimerDelay(this.registerIntervalMs)) {
        warnArgument(`opts.registerIntervalMs is ${describe(this.registerIntervalMs)}: registering every ${delay.ms} ms, as setInterval does with it`)
      }
      this._intervalMs = delay.ms
    }

    const keyPairError = keyPair ? keyPairProblem(keyPair) : null
    if (keyPairError !== null) {
      warnArgument(`${keyPairError}: ready() will fail`)
      this._openProblem = this._openProblem || new TypeError(`${keyPairError}: the server cannot listen on it`)
    }
    if (typeof includeOwnMetrics !== 'boolean') {
      warnArgument(`opts.includeOwnMetrics is ${describe(includeOwnMetrics)}, not a boolean: ignored`)
    }
  }

  get publicKey () {
    return this.serverKeyPair.publicKey
  }

  ready () {
    if (this.opening !== null) return this.opening
    this.opening = this._openResource()
    return this.opening
  }

  close () {
    if (this.closing !== null) return this.closing
    this.closing = this._closeResource()
    return this.closing
  }

  // ready-resource's order: nothing opens once close() was called; a failed open closes
  // in the background and rejects; 'ready' is emitted before ready() resolves.
  async _openResource () {
    if (this.closing !== null) return
    try {
      await this._open()
    } catch (err) {
      this._held = null
      this.close()
      throw err
    }
    this.opened = true
    this.emit('ready')
    // Events that came in while opening follow ready(), as in the reference, whose
    // server only sees connections after it listens.
    setImmediate(() => this._releaseHeld())
  }

  async _closeResource () {
    try {
      if (this.opened === false && this.opening !== null) await this.opening
    } catch {}
    if (this.opened === true || this.opening === null) await this._close()
    this.closed = true
    this.emit('close')
  }

  async _open () {
    if (this._openProblem !== null) throw this._openProblem
    const { bootstrap, host } = nodeOptions(this.dht)
    const registerInRust = this._registerProblem === null
    const native = await binding.startServer(
      {
        bootstrap,
        host,
        publicKey: keyBuffer(this.serverKeyPair.publicKey),
        secretKey: keyBuffer(this.serverKeyPair.secretKey),
        allowedKeys: this.scraperPublicKeys.map(keyBuffer),
        alias: registerInRust
          ? {
              secret: keyBuffer(this.scraperSecret),
              alias: this.alias,
              hostname: this.hostname,
              service: this.service,
              registerIntervalMs: this._intervalMs
            }
          : undefined
      },
      // getMetrics calls and events in one queue, so in the order Rust made them.
      this._fromNative.bind(this),
      // With a JS protomux-rpc-client the registrations go through it; else all in Rust.
      registerInRust && this.protomuxRpcClient ? this._registerThroughRpcClient.bind(this) : undefined
    )
    this._native = native
    // An open client keeps the process alive, as the reference's timer and sockets do.
    this._keepAlive = setInterval(noop, TIMEOUT_MAX)
    if (registerInRust) {
      // The reference announces its first attempt before ready() resolves; the Rust side
      // starts that attempt now and its own announcement of it is skipped.
      for (const key of this.scraperPublicKeys) {
        this._firstAttempts.add(hexOf(key))
        this._announceAttempt(key)
      }
    } else {
      this._startFailingRegistrations()
    }
  }

  // The reference's order: stop the schedule, close the protomux-rpc-client (which ends
  // registrations under way with its own error), then the server and the dht.
  async _close () {
    await null // as the reference, whose closing goes through a promise first
    this._releaseHeld()
    clearInterval(this._registerInterval)
    this._aliasStopped = true
    let cannotClose = null
    if (this.protomuxRpcClient !== null) {
      if (typeof this.protomuxRpcClient.close === 'function') {
        await this.protomuxRpcClient.close()
        // Its requests under way end as it closes; their errors are emitted as they settle.
        await settledWithin([...this._rpcCalls], 1000)
      } else {
        cannotClose = new TypeError(`opts.protomuxRpcClient has no close(): cannot close it (got ${describe(this.protomuxRpcClient)})`)
      }
    }
    // Attempts under way in Rust: what the reference's own client gives as it closes.
    for (const hex of this._inFlight) {
      this._emit(this, 'register-alias-error', hidden(rpcClientError('CLIENT_CLOSING'), 'scraperPublicKey', this._scrapersByHex.get(hex)))
    }
    this._inFlight.clear()
    if (this._native !== null) {
      // Rust sends one last 'closed' event after every other: all of them are emitted
      // (connection-close for each scraper included) before close() resolves.
      const allDelivered = new Promise((resolve) => {
        this._onNativeClosed = resolve
        setTimeout(resolve, 1000).unref() // never hang on it
      })
      await this._native.close()
      await allDelivered
    }
    clearInterval(this._keepAlive)
    // The reference fails there, before its dht; ours has stopped all the same, so that
    // nothing of it outlives the failed close().
    if (cannotClose !== null) throw cannotClose
    // A HyperDHT instance is destroyed, as the reference does; plain { bootstrap, host } is data.
    if (typeof this.dht.createServer === 'function' && typeof this.dht.destroy === 'function') {
      await this.dht.destroy()
    }
  }

  ownMetrics () {
    return this._native === null ? '' : this._native.ownMetrics()
  }

  // Called from Rust for each scrape. Never throws and never rejects: it returns the
  // metrics text, or null once metrics-error has been emitted, or a Promise of either.
  _serveMetrics ({ uid, remotePublicKey }) {
    this._inOrder(() => this._emit(this, 'metrics-request', { uid, remotePublicKey }))
    let metrics
    try {
      if (typeof this.getMetrics !== 'function') {
        throw new TypeError(`getMetrics is ${describe(this.getMetrics)}, not a function: pass a function returning the metrics text, or a prom-client`)
      }
      metrics = this.getMetrics()
    } catch (error) {
      this._inOrder(() => this._emit(this, 'metrics-error', { error, remotePublicKey, uid }))
      return null
    }
    // A synchronous getMetrics: the text goes back at once, with no promise round trip
    // through napi (half the event-loop time per scrape; benchmark/README.md), and
    // metrics-success still comes a microtask later, as after the reference's await. Text
    // of at most MAX/3 UTF-16 units cannot exceed MAX UTF-8 bytes: no byte count needed.
    if (typeof metrics === 'string' && metrics.length * 3 <= binding.MAX_METRICS_BYTES) {
      queueMicrotask(() => this._inOrder(() => this._emit(this, 'metrics-success', { uid, remotePublicKey })))
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
      this._inOrder(() => this._emit(this, 'metrics-success', { uid, remotePublicKey }))
      return this.includeOwnMetrics ? withOwnMetrics(metrics, this.ownMetrics()) : metrics
    } catch (error) {
      this._inOrder(() => this._emit(this, 'metrics-error', { error, remotePublicKey, uid }))
      return null
    }
  }

  // Called from Rust for each registration when opts.protomuxRpcClient is given. Settles
  // with the encoded AliasResponse, or with the error protomux-rpc-client gave (kept, so
  // that register-alias-error carries that very error, as in the reference).
  _registerThroughRpcClient (call) {
    const settled = this._requestThroughRpcClient(call)
    this._rpcCalls.add(settled)
    settled.finally(() => this._rpcCalls.delete(settled))
    return settled
  }

  async _requestThroughRpcClient ({ scraperPublicKey, body }) {
    try {
      // No timeout of our own: the client's requestTimeout applies, as in the reference
      // (Rust gives up on the whole attempt a second after timeoutMs all the same).
      const response = await this.protomuxRpcClient.makeRequest(scraperPublicKey, 'alias', body, {
        requestEncoding: RAW,
        responseEncoding: RAW,
        timeout: undefined,
        protocol: 'register-alias',
        id: Buffer.alloc(0)
      })
      return { response }
    } catch (thrown) {
      const err = thrown instanceof Object ? thrown : new Error(String(thrown))
      const hex = hexOf(scraperPublicKey)
      if (this._aliasStopped) {
        // close() is closing the client: the reference emits this very error, now.
        if (this._inFlight.delete(hex)) {
          this._emit(this, 'register-alias-error', hidden(err, 'scraperPublicKey', this._scrapersByHex.get(hex)))
        }
        return { errorCode: 'CLIENT_CLOSING', errorMessage: 'closing' }
      }
      this._rpcClientErrors.set(hex, err)
      return { errorCode: err.code ? String(err.code) : undefined, errorMessage: String(err.message) }
    }
  }

  // A scrape's getMetrics call (no name) or an event, from Rust's one queue.
  _fromNative (call) {
    if (call.name === undefined) return this._serveMetrics(call)
    this._onNativeEvent(call)
  }

  _onNativeEvent (event) {
    if (event.name === 'closed') {
      if (this._onNativeClosed !== null) this._onNativeClosed()
      return
    }
    this._inOrder(() => this._dispatch(event))
  }

  // Runs fn now, or after ready() has resolved if the client is still opening.
  _inOrder (fn) {
    if (this._held !== null) this._held.push(fn)
    else fn()
  }

  _releaseHeld () {
    const held = this._held
    this._held = null
    if (held !== null) for (const fn of held) fn()
  }

  _dispatch (event) {
    const { name, uid, remotePublicKey } = event
    switch (name) {
      case 'alias-attempt': {
        const hex = hexOf(event.scraperPublicKey)
        if (this._aliasStopped || this._firstAttempts.delete(hex)) return
        return this._announceAttempt(this._scrapersByHex.get(hex))
      }
      case 'register-alias-success': {
        const scraper = this._aliasOutcome(event.scraperPublicKey)
        if (scraper === null) return
        return this._emit(this, name, hidden({ updated: event.updated }, 'scraperPublicKey', scraper))
      }
      case 'register-alias-error': {
        const scraper = this._aliasOutcome(event.scraperPublicKey)
        if (scraper === null) return
        return this._emit(this, name, hidden(this._aliasError(event), 'scraperPublicKey', scraper))
      }
      case 'connection-open':
        return this._emit(this, name, { uid, remoteAddress: event.remoteAddress, remotePublicKey })
      case 'connection-close':
        return this._emit(this, name, { uid, remotePublicKey })
      case 'connection-error': {
        const error = new Error(event.errorMessage)
        error.code = event.errorCode
        return this._emit(this, name, { error, uid, remotePublicKey })
      }
      case 'firewall-block':
        return this._emit(this, name, { remotePublicKey, payload: handshakePayload(event.payload), address: event.address })
    }
  }

  // The scraper a registration outcome is about, or null once close() has begun.
  _aliasOutcome (scraperPublicKey) {
    if (this._aliasStopped) return null
    const hex = hexOf(scraperPublicKey)
    this._inFlight.delete(hex)
    return this._scrapersByHex.get(hex)
  }

  // The error the reference would give: its own plain Error for a refusal, the very error
  // of a protomux-rpc-client given in opts, protomux-rpc-client's REQUEST_TIMEOUT and
  // protomux-rpc's TIMEOUT_EXCEEDED and CHANNEL_CLOSED as those give them; ours else.
  _aliasError ({ scraperPublicKey, errorCode, errorMessage }) {
    const hex = hexOf(scraperPublicKey)
    const fromRpcClient = this._rpcClientErrors.get(hex)
    if (fromRpcClient) {
      this._rpcClientErrors.delete(hex)
      if (fromRpcClient.message === errorMessage) return fromRpcClient
    }
    if (errorCode === 'REQUEST_TIMEOUT') return rpcClientError('REQUEST_TIMEOUT')
    if (errorCode === 'TIMEOUT_EXCEEDED' || errorCode === 'CHANNEL_CLOSED') return rpcError(errorCode, errorMessage)
    const error = new Error(errorMessage)
    if (errorCode) error.code = errorCode
    return error
  }

  // 'alias-attempt' on aliasClient, with the payload of the reference's AliasRpcClient.
  _announceAttempt (scraper) {
    this._inFlight.add(hexOf(scraper))
    const attempt = { alias: this.alias, targetKey: this.publicKey, hostname: this.hostname, service: this.service, uid: crypto.randomUUID() }
    this._emit(this.aliasClient, 'alias-attempt', hidden(attempt, 'scraperPublicKey', scraper))
  }

  // Registration arguments that cannot be encoded (the reference throws while encoding,
  // after it connected): every attempt is announced, then fails with register-alias-error.
  _startFailingRegistrations () {
    const attempt = () => {
      for (const scraper of this.scraperPublicKeys) {
        this._announceAttempt(scraper)
        setImmediate(() => {
          if (!this._inFlight.delete(hexOf(scraper)) || this._aliasStopped) return
          const error = new TypeError(`cannot register the alias: ${this._registerProblem}`)
          error.code = ARG_WARNING_CODE
          this._emit(this, 'register-alias-error', hidden(error, 'scraperPublicKey', scraper))
        })
      }
    }
    this._registerInterval = setInterval(attempt, this._intervalMs)
    attempt()
  }

  // No event reaches listeners once close() has resolved.
  _emit (target, name, payload) {
    if (this.closed) return false
    return target.emit(name, payload)
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
// order, with null (or [] for the address lists) where the peer sent nothing. Rebuilt as
// plain JS objects all the way down, as hyperdht's are (napi's come from the main realm,
// which deep-equality checks under jest's vm tell apart).
function handshakePayload (p) {
  return {
    version: p.version,
    error: p.error,
    firewall: p.firewall,
    holepunch: p.holepunch ? { id: p.holepunch.id, relays: Array.from(p.holepunch.relays, relayInfo) } : null,
    addresses4: peers(p.addresses4) ?? [],
    addresses6: peers(p.addresses6) ?? [],
    udx: p.udx ? { version: p.udx.version, reusableSocket: p.udx.reusableSocket, id: p.udx.id, seq: p.udx.seq } : null,
    secretStream: p.secretStream ? { version: p.secretStream.version } : null,
    relayThrough: p.relayThrough
      ? { version: p.relayThrough.version, publicKey: p.relayThrough.publicKey, token: p.relayThrough.token }
      : null,
    relayAddresses: peers(p.relayAddresses) ?? null
  }
}

function peers (list) {
  // Array.from, not map: map would make the copy in the realm of napi's array.
  return list ? Array.from(list, ({ host, port }) => ({ host, port })) : list
}

function relayInfo ({ relayAddress, peerAddress }) {
  return { relayAddress: { host: relayAddress.host, port: relayAddress.port }, peerAddress: { host: peerAddress.host, port: peerAddress.port } }
}

// Own metrics after the scrape's text, on a line of their own (opts.includeOwnMetrics).
function withOwnMetrics (metrics, own) {
  if (own === '') return metrics
  const separator = metrics === '' || metrics.endsWith('\n') ? '' : '\n'
  return metrics + separator + own
}

function resolveGetMetrics (getMetrics) {
  // The reference reads getMetrics.register here, so null and undefined throw here.
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
  // Kept as the reference keeps it: each scrape then fails with metrics-error.
  return { promClient: null, getMetrics, unusable: true }
}

function checkDht (dht) {
  if (dht === null || typeof dht !== 'object') {
    throw new TypeError('dht must be a HyperDHT instance or { bootstrap, host } options, got ' + describe(dht))
  }
  // A plain options object in place of a HyperDHT instance (which the reference cannot
  // take at all): check it now, not at ready().
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
  const host = [dht.io?._host, dht.host].find((h) => typeof h === 'string' && h !== '') || '0.0.0.0'
  return { bootstrap: bootstrapList(dht.bootstrapNodes || dht.bootstrap), host }
}

function toKeyList (value, name) {
  if (Array.isArray(value)) {
    if (value.length === 0) throw new TypeError(`${name} must not be an empty array`)
    return value.map((key, i) => toKey(key, `${name}[${i}]`))
  }
  return [toKey(value, name)]
}

// What is wrong with opts.keyPair as an ed25519 key pair, or null.
function keyPairProblem (keyPair) {
  const { publicKey, secretKey } = Object(keyPair)
  if (!isBytes(publicKey, 32) || !isBytes(secretKey, 64)) {
    return `opts.keyPair must be { publicKey: 32 bytes, secretKey: 64 bytes }, got ${describe(keyPair)}`
  }
  // An ed25519 secret key is seed || public key: the pair must be the one the seed derives.
  const derived = binding.keyPair(Buffer.from(secretKey.buffer, secretKey.byteOffset, 32))
  if (!derived.publicKey.equals(keyBuffer(publicKey)) || !derived.secretKey.equals(keyBuffer(secretKey))) {
    return 'opts.keyPair.secretKey does not belong to opts.keyPair.publicKey'
  }
  return null
}

function isBytes (value, length) {
  return value instanceof Uint8Array && value.byteLength === length
}

function hexOf (key) {
  return keyBuffer(key).toString('hex')
}

function noop () {}

// Waits for the promises to settle, for at most `ms`.
function settledWithin (promises, ms) {
  if (promises.length === 0) return
  let timer
  const limit = new Promise((resolve) => { timer = setTimeout(resolve, ms) })
  return Promise.race([Promise.allSettled(promises), limit]).finally(() => clearTimeout(timer))
}

module.exports = DhtPromClient
module.exports.DhtPromClient = DhtPromClient
module.exports.decodeKey = binding.decodeKey
module.exports.normalizeKey = binding.normalizeKey
module.exports.keyPair = binding.keyPair
