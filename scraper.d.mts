// Types of scraper.mjs: the same class as scraper.js (see scraper.d.ts).
import DhtPromScraper from './scraper.js'

export default DhtPromScraper
export { DhtPromScraper }
