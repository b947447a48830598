'use strict'
// Hand-written facade over the generated loader (binding.js), so that `napi build`
// never overwrites the public API.
const binding = require('./binding.js')

module.exports = {
  decodeKey: binding.decodeKey,
  normalizeKey: binding.normalizeKey,
  keyPair: binding.keyPair
}
