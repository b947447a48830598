// Types of index.mjs: the same objects as index.js (see index.d.ts).
import DhtPromClient from './index.js'

export default DhtPromClient
export { DhtPromClient }
export declare const decodeKey: typeof DhtPromClient.decodeKey
export declare const normalizeKey: typeof DhtPromClient.normalizeKey
export declare const keyPair: typeof DhtPromClient.keyPair
