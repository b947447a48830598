// ES module entry of dht-prom-client-rs/scraper: the CommonJS facade's own class
// (createRequire: see index.mjs).
import { createRequire } from 'module'

const DhtPromScraper = createRequire(import.meta.url)('./scraper.js')

export default DhtPromScraper
export { DhtPromScraper }
