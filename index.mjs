// ES module entry: the CommonJS facade's own objects (one instance for import and require).
import DhtPromClient from './index.js'

export default DhtPromClient
export { DhtPromClient }
export const { decodeKey, normalizeKey, keyPair } = DhtPromClient
