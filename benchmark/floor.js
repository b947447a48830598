'use strict'
// The physical floor under a 2 MB scrape, in Node (the JS reference's stack and the JS
// scraper's side of ours): the secret stream's cipher (XChaCha20-Poly1305 secretstream
// through sodium-secretstream, the very module @hyperswarm/secret-stream uses), a memcpy,
// and the UTF-8 conversions at both ends (the metrics string to bytes, the reply's bytes to
// a string). Medians over --runs iterations. `cargo run --release --example floor` is the
// same for ours (peeroxide's secretstream in Rust).
//   node benchmark/floor.js [--bytes 2097152] [--runs 50]
const { parseArgs } = require('util')
const sodium = require('sodium-native')
const { Push, Pull, KEYBYTES, ABYTES } = require('sodium-secretstream')

const { values } = parseArgs({
  options: { bytes: { type: 'string', default: '2097152' }, runs: { type: 'string', default: '50' } }
})
const BYTES = Number(values.bytes)
const RUNS = Number(values.runs)
const CHUNK = 64 * 1024

function median (list) {
  const s = [...list].sort((a, b) => a - b)
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

// Median ms of fn over RUNS runs, after 3 warm-ups.
function time (fn) {
  for (let i = 0; i < 3; i++) fn()
  const ms = []
  for (let i = 0; i < RUNS; i++) {
    const start = process.hrtime.bigint()
    fn()
    ms.push(Number(process.hrtime.bigint() - start) / 1e6)
  }
  return median(ms)
}

// The same text as the benchmark's getMetrics (multi-byte characters in it).
const line = 'bench_metric{label="valeur ✓"} 123456789\n'
const text = line.repeat(Math.max(1, Math.round(BYTES / Buffer.byteLength(line))))
const plain = Buffer.from(text)

const key = Buffer.alloc(KEYBYTES)
sodium.randombytes_buf(key)
const encryptOnly = new Push(key)
// A pull follows its push's state: a pair of its own, used only in pairs.
const push = new Push(key)
const pull = new Pull(key)
pull.init(push.header)

// One message of the whole reply, as @hyperswarm/secret-stream sends it: encrypted in
// place into a buffer allocated per message, decrypted in place on the other side.
const cipher = Buffer.allocUnsafe(plain.byteLength + ABYTES)
const results = {}
results['encrypt 2 MB, one message (push)'] = time(() => encryptOnly.next(plain, cipher))
const opened = Buffer.allocUnsafe(plain.byteLength)
const pushPull = time(() => {
  push.next(plain, cipher)
  pull.next(cipher, opened)
})
results['decrypt 2 MB, one message (pull)'] = pushPull - results['encrypt 2 MB, one message (push)']
results['encrypt + decrypt 2 MB, one message'] = pushPull
const chunkCipher = Buffer.allocUnsafe(CHUNK + ABYTES)
const chunkPlain = Buffer.allocUnsafe(CHUNK)
results['encrypt + decrypt 2 MB in 64 KiB messages'] = time(() => {
  for (let at = 0; at < plain.byteLength; at += CHUNK) {
    const part = plain.subarray(at, at + CHUNK)
    push.next(part, chunkCipher.subarray(0, part.byteLength + ABYTES))
    pull.next(chunkCipher.subarray(0, part.byteLength + ABYTES), chunkPlain.subarray(0, part.byteLength))
  }
})
const copy = Buffer.allocUnsafe(plain.byteLength)
results['memcpy 2 MB (Buffer.copy)'] = time(() => plain.copy(copy))
// What a receiver pays for a fresh 2 MB buffer per message (page faults on first touch).
results['allocate + fill a fresh 2 MB buffer'] = time(() => plain.copy(Buffer.allocUnsafeSlow(plain.byteLength)))
results['UTF-8 encode the 2 MB string (Buffer.from)'] = time(() => Buffer.from(text))
const into = Buffer.allocUnsafe(plain.byteLength)
results['UTF-8 encode into a buffer (buf.write)'] = time(() => into.write(text))
results['UTF-8 decode 2 MB to a string (toString)'] = time(() => plain.toString('utf8'))

console.log(`floor, Node ${process.version}, ${plain.byteLength} bytes, median of ${RUNS}`)
for (const [name, ms] of Object.entries(results)) console.log(`  ${name.padEnd(48)} ${ms.toFixed(3)} ms`)
