// ES module entry of dht-prom-client-rs/scraper: the CommonJS facade's own class.
import DhtPromScraper from './scraper.js'

export default DhtPromScraper
export { DhtPromScraper }
