// ES module entry: the CommonJS facade's own objects (one instance for import and require).
// createRequire rather than `import ... from './index.js'`: when the native binary is
// missing, Node 20 reports an error thrown by an imported CommonJS module as uncaught
// even after the importer caught it.
import { createRequire } from 'module'

const DhtPromClient = createRequire(import.meta.url)('./index.js')

export default DhtPromClient
export { DhtPromClient }
export const { decodeKey, normalizeKey, keyPair } = DhtPromClient
