// hyperdht ships no types: the little of it that usage.ts touches.
declare module 'hyperdht' {
  interface KeyPair { publicKey: Buffer, secretKey: Buffer }

  class HyperDHT {
    constructor (opts?: { bootstrap?: Array<string | { host: string, port: number }>, host?: string, keyPair?: KeyPair })
    static keyPair (seed?: Buffer): KeyPair
    readonly destroyed: boolean
    readonly bootstrapNodes: Array<{ host: string, port: number }>
    createServer (opts?: object, onconnection?: (socket: unknown) => void): unknown
    destroy (opts?: { force?: boolean }): Promise<void>
  }

  export = HyperDHT
}
