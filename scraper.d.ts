import DhtPromClient = require('./index')

type KeyInput = DhtPromClient.Key
type BootstrapNode = DhtPromClient.BootstrapNode

interface MetricsSuccess { success: true; metrics: string }
interface MetricsFailure { success: false; errorMessage: string }
type MetricsResult = MetricsSuccess | MetricsFailure

interface RequestMetricsOptions {
  /** Request timeout in ms. */
  timeout?: number
  /** Protocol versions to announce (tests and future peers); default 1 and 1. */
  major?: number
  minor?: number
}

/** A protomux-rpc-client instance (the drop-in form). */
interface ProtomuxRpcClientLike {
  makeRequest (key: Buffer, method: string, value: unknown, opts: object): Promise<any>
}

/** The native form's network: the DHT to join and the scraper's identity. */
interface NativeScraperNetwork {
  bootstrap?: BootstrapNode[]
  host?: string
  /** The scraper's key pair; the client's firewall admits only its scraper's key. */
  keyPair?: { publicKey: Uint8Array; secretKey: Uint8Array }
}

interface NativeScraperOptions {
  /** Default request timeout in ms (default 5000). */
  requestTimeoutMs?: number
  /** Largest reply accepted, in bytes (default 16 MiB). */
  maxBytes?: number
}

declare namespace DhtPromScraper {
  export { MetricsSuccess, MetricsFailure, MetricsResult, RequestMetricsOptions, ProtomuxRpcClientLike, NativeScraperNetwork, NativeScraperOptions }
}

declare class DhtPromScraper {
  /** Drop-in form: the JS protomux-rpc-client does the networking, as dht-prom-client/scraper. */
  constructor (protomuxRpcClient: ProtomuxRpcClientLike, clientPublicKey: KeyInput)
  /** Native form: connection, protomux-rpc and decoding run in Rust. */
  constructor (network: NativeScraperNetwork, clientPublicKey: KeyInput, opts?: NativeScraperOptions)
  readonly targetKey: Buffer
  /** Resolves the client's reply; rejects (with `code`) on connection, timeout or protocol errors. */
  requestMetrics (opts?: RequestMetricsOptions): Promise<MetricsResult>
  /** Native form: closes the connection and the DHT node. Drop-in form: does nothing. */
  close (): Promise<void>
}

export = DhtPromScraper
