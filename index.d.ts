/// <reference types="node" />
// Types of the drop-in DhtPromClient (index.js). Hand-written: `napi build` only generates
// binding.d.ts, the native layer under this facade.
import { EventEmitter } from 'events'

declare namespace DhtPromClient {
  /** A 32-byte key or secret: a Buffer/Uint8Array, a 64-char hex or a 52-char z32 string. */
  export type Key = Buffer | Uint8Array | string

  export interface KeyPair {
    publicKey: Buffer
    secretKey: Buffer
  }

  /** A bootstrap node: `'host:port'` (or `'publicKey@host:port'`) or `{ host, port }`. */
  export type BootstrapNode = string | { host: string, port: number }

  /**
   * In place of a HyperDHT instance: where the native node should join the network.
   * Without `bootstrap`, the public HyperDHT bootstrap nodes (as hyperdht's own default).
   */
  export interface DhtOptions {
    bootstrap?: BootstrapNode[]
    /** The address to bind, e.g. `'127.0.0.1'`. Defaults to `'0.0.0.0'`. */
    host?: string
  }

  /**
   * The part of a hyperdht `HyperDHT` instance the client uses: its bootstrap list and bind
   * host (the native node joins the same network) and `destroy()`, called by `close()`.
   */
  export interface HyperDHT {
    createServer (...args: any[]): unknown
    destroy (opts?: { force?: boolean }): Promise<void>
    readonly destroyed: boolean
    readonly bootstrapNodes?: Array<{ host: string, port: number }>
  }

  /** Returns the metrics in Prometheus text format. */
  export type GetMetrics = () => string | Promise<string>

  /** A prom-client module, or anything with `.register.metrics()` (duck-typed as the reference). */
  export interface PromClientLike {
    register: { metrics (): string | Promise<string> }
  }

  /** A prom-client `Registry` itself (which the reference cannot use; this package can). */
  export interface RegistryLike {
    metrics (): string | Promise<string>
  }

  export type MetricsSource = GetMetrics | PromClientLike | RegistryLike

  /** A protomux-rpc-client instance; its lifecycle is managed by the client (closed by `close()`). */
  export interface ProtomuxRpcClient {
    makeRequest (key: Buffer, method: string, body: unknown, opts?: object): Promise<unknown>
    close (): Promise<void>
  }

  export interface Options {
    /** The key pair of the metrics server (secretKey must match publicKey). Defaults to a fresh one. */
    keyPair?: { publicKey: Uint8Array, secretKey: Uint8Array }
    /** How often to re-register the alias with the scraper, in ms. Defaults to 1 hour. */
    registerIntervalMs?: number
    /** The hostname sent with the alias. Defaults to `os.hostname()`. */
    hostname?: string
    /** Alias registrations go through this client. Closed by `close()`. */
    protomuxRpcClient?: ProtomuxRpcClient | null
    /** Append `ownMetrics()` to every scrape. Default false (scrapes stay byte-exact). */
    includeOwnMetrics?: boolean
  }

  /** hyperdht's remote handshake payload, as its firewall callback receives it. */
  export interface HandshakePayload {
    version: number
    error: number
    firewall: number
    holepunch: { id: number, relays: Array<{ relayAddress: PeerAddress, peerAddress: PeerAddress }> } | null
    addresses4: PeerAddress[]
    addresses6: PeerAddress[]
    udx: { version: number, reusableSocket: boolean, id: number, seq: number } | null
    secretStream: { version: number } | null
    relayThrough: { version: number, publicKey: Buffer, token: Buffer } | null
    relayAddresses: PeerAddress[] | null
  }

  export interface PeerAddress {
    host: string
    port: number
  }

  export interface ConnectionEvent {
    /** Unique to the connection; carried by every event about it. */
    uid: string
    remotePublicKey: Buffer
  }

  export interface ConnectionOpenEvent extends ConnectionEvent {
    /** `ip:port` of the scraper. */
    remoteAddress: string
  }

  export interface ConnectionErrorEvent extends ConnectionEvent {
    error: Error
  }

  export interface MetricsErrorEvent extends ConnectionEvent {
    /** What getMetrics threw or rejected with (a TypeError when it returned a non-string). */
    error: unknown
  }

  export interface FirewallBlockEvent {
    remotePublicKey: Buffer
    payload: HandshakePayload
    /** `ip:port` of the blocked peer. */
    address: string
  }

  export interface RegisterAliasSuccessEvent {
    /** Whether the scraper's entry changed. */
    updated: boolean
    /**
     * Which scraper registered us (beyond the reference: there may be several). Own but
     * non-enumerable, so the payload deep-equals the reference's `{ updated }`.
     */
    readonly scraperPublicKey: Buffer
  }

  /** A failed alias registration. */
  export interface RegisterAliasError extends Error {
    code?: string
    /** Which scraper failed (beyond the reference); non-enumerable. */
    readonly scraperPublicKey: Buffer
  }

  /** Emitted on `client.aliasClient` before each registration attempt. */
  export interface AliasAttemptEvent {
    alias: string
    /** The key being registered: `client.publicKey`. */
    targetKey: Buffer
    hostname: string
    service: string
    /** Unique to the attempt. */
    uid: string
    /** Which scraper is being registered with (beyond the reference); non-enumerable. */
    readonly scraperPublicKey: Buffer
  }

  /** `client.aliasClient`: the fields of the reference's AliasRpcClient, and its event. */
  export interface AliasClient extends EventEmitter {
    /** The (first) scraper's public key. */
    readonly serverPubKey: Buffer
    readonly secret: Buffer
    readonly rpcClient: ProtomuxRpcClient | null
    on (event: 'alias-attempt', listener: (payload: AliasAttemptEvent) => void): this
    on (event: string | symbol, listener: (...args: any[]) => void): this
    once (event: 'alias-attempt', listener: (payload: AliasAttemptEvent) => void): this
    once (event: string | symbol, listener: (...args: any[]) => void): this
  }

  /** Event names and the payload each is emitted with. */
  export interface Events {
    'register-alias-success': RegisterAliasSuccessEvent
    'register-alias-error': RegisterAliasError
    'connection-open': ConnectionOpenEvent
    'connection-close': ConnectionEvent
    'connection-error': ConnectionErrorEvent
    'metrics-request': ConnectionEvent
    'metrics-success': ConnectionEvent
    'metrics-error': MetricsErrorEvent
    'firewall-block': FirewallBlockEvent
    /** After ready() has opened the client, before ready() resolves (as ready-resource). */
    'ready': undefined
    /** When close() is done, before it resolves (as ready-resource). */
    'close': undefined
  }

  /** The logger `registerLogger` writes to (a pino logger fits). */
  export interface Logger {
    level?: string
    info (msg: string): unknown
    debug (msg: string): unknown
  }

  /** Decodes a key or secret to a 32-byte Buffer; throws on anything else. */
  export function decodeKey (input: Key): Buffer
  /** Encodes a 32-byte key as z32 (as hypercore-id-encoding's `normalize`). */
  export function normalizeKey (input: Key): string
  /** A fresh ed25519 key pair, or the one derived from a 32-byte seed (as `HyperDHT.keyPair`). */
  export function keyPair (seed?: Buffer | null): KeyPair

  export { DhtPromClient }
}

declare class DhtPromClient extends EventEmitter {
  /** Runs the metrics server on the network of `dht`, and destroys `dht` in `close()`. */
  constructor (
    dht: DhtPromClient.HyperDHT,
    getMetrics: DhtPromClient.MetricsSource,
    scraperPublicKey: DhtPromClient.Key | DhtPromClient.Key[],
    alias: string,
    scraperSecret: DhtPromClient.Key,
    service: string,
    opts?: DhtPromClient.Options
  )

  /** Joins the network given by `{ bootstrap, host }`: no JS DHT needed. */
  constructor (
    dht: DhtPromClient.DhtOptions,
    getMetrics: DhtPromClient.MetricsSource,
    scraperPublicKey: DhtPromClient.Key | DhtPromClient.Key[],
    alias: string,
    scraperSecret: DhtPromClient.Key,
    service: string,
    opts?: DhtPromClient.Options
  )

  /** The public key the metrics server listens on. */
  readonly publicKey: Buffer
  /** The prom-client-like object passed in (anything with `.register.metrics`), else null. */
  readonly promClient: DhtPromClient.PromClientLike | null
  /** The function each scrape calls (it may be replaced). */
  getMetrics: DhtPromClient.GetMetrics
  readonly dht: DhtPromClient.HyperDHT | DhtPromClient.DhtOptions
  /** The (first) scraper's public key (the very Buffer given, as the reference keeps it). */
  readonly scraperPublicKey: Buffer
  /** Every scraper's public key. */
  readonly scraperPublicKeys: Buffer[]
  readonly alias: string
  readonly service: string
  readonly hostname: string
  /** As given (the alias is re-registered as often as `setInterval` reads it). */
  readonly registerIntervalMs: number
  readonly includeOwnMetrics: boolean
  /** Where `'alias-attempt'` is emitted, as on the reference. */
  readonly aliasClient: DhtPromClient.AliasClient
  /** As ready-resource: null until ready() / close() is first called, then its promise. */
  readonly opening: Promise<void> | null
  readonly closing: Promise<void> | null
  readonly opened: boolean
  readonly closed: boolean

  /**
   * Starts the metrics server and the alias registration; the same promise every call.
   * After close() has been called it resolves without starting anything (as ready-resource).
   */
  ready (): Promise<void>
  /** Stops everything and destroys the dht. Idempotent: the same promise every call. */
  close (): Promise<void>
  /** Logs every event as the reference does; debug lines only if `logger.level === 'debug'` now. */
  registerLogger (logger: DhtPromClient.Logger): void
  /** The client's own metrics (scrapes served, bytes sent, errors, ...) in Prometheus text. */
  ownMetrics (): string

  on<E extends keyof DhtPromClient.Events> (event: E, listener: (payload: DhtPromClient.Events[E]) => void): this
  on (event: string | symbol, listener: (...args: any[]) => void): this
  once<E extends keyof DhtPromClient.Events> (event: E, listener: (payload: DhtPromClient.Events[E]) => void): this
  once (event: string | symbol, listener: (...args: any[]) => void): this
  off<E extends keyof DhtPromClient.Events> (event: E, listener: (payload: DhtPromClient.Events[E]) => void): this
  off (event: string | symbol, listener: (...args: any[]) => void): this
  addListener<E extends keyof DhtPromClient.Events> (event: E, listener: (payload: DhtPromClient.Events[E]) => void): this
  addListener (event: string | symbol, listener: (...args: any[]) => void): this
  removeListener<E extends keyof DhtPromClient.Events> (event: E, listener: (payload: DhtPromClient.Events[E]) => void): this
  removeListener (event: string | symbol, listener: (...args: any[]) => void): this
  emit<E extends keyof DhtPromClient.Events> (event: E, payload: DhtPromClient.Events[E]): boolean
  emit (event: 'ready' | 'close'): boolean
  emit (event: string | symbol, ...args: any[]): boolean
}

export = DhtPromClient
