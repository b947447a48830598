'use strict'
// The soak's metrics server, in a process of its own so that its RSS is the addon's and
// the facade's alone (the testnet, the scrapers and the attackers run in the runner).
// JSON lines: argv[2] holds { bootstrap, scraperPublicKey, secret, sizes, registerIntervalMs };
// it prints { type: 'ready', publicKey } then answers { type: 'sample' } with a sample
// and { type: 'close' } by closing and exiting. It exits when stdin ends.
const fs = require('fs')
const readline = require('readline')
const DhtPromClient = require('../..')

const args = JSON.parse(process.argv[2])
const send = (msg) => process.stdout.write(JSON.stringify(msg) + '\n')

// One text per size, built once: 'soak_size_bytes <n>' first, then filler lines.
const texts = args.sizes.map((size) => {
  const head = `# soak\nsoak_size_bytes ${size}\n`
  const line = 'soak_filler{label="0123456789abcdef"} 1\n'
  let body = head
  while (body.length + line.length <= size) body += line
  return body + '#'.repeat(size - body.length)
})
let calls = 0

const counts = {}
const count = (name) => { counts[name] = (counts[name] || 0) + 1 }

async function main () {
  const client = new DhtPromClient(
    { bootstrap: args.bootstrap, host: '127.0.0.1' },
    () => texts[calls++ % texts.length],
    args.scraperPublicKey,
    'soak',
    Buffer.from(args.secret, 'hex'),
    'soak-service',
    { registerIntervalMs: args.registerIntervalMs }
  )
  for (const name of ['connection-open', 'connection-close', 'connection-error', 'metrics-request', 'metrics-success',
    'metrics-error', 'firewall-block', 'register-alias-success', 'register-alias-error']) {
    client.on(name, (payload) => {
      count(name)
      if (name === 'connection-error') count(`connection-error:${payload.error.code}`)
    })
  }
  await client.ready()
  send({ type: 'ready', publicKey: client.publicKey.toString('hex') })

  readline.createInterface({ input: process.stdin }).on('line', async (line) => {
    const msg = JSON.parse(line)
    if (msg.type === 'sample') {
      send({
        type: 'sample',
        rss: process.memoryUsage().rss,
        heapUsed: process.memoryUsage().heapUsed,
        fds: fs.readdirSync('/proc/self/fd').length,
        events: { ...counts },
        own: ownMetrics(client.ownMetrics())
      })
    } else if (msg.type === 'close') {
      const started = Date.now()
      await client.close()
      send({ type: 'closed', ms: Date.now() - started })
      process.exit(0)
    }
  }).on('close', () => process.exit(0))
}

function ownMetrics (text) {
  const out = {}
  for (const line of text.split('\n')) {
    const m = /^dht_prom_client_(\w+)(\{[^}]*\})? (\S+)$/.exec(line)
    if (m) out[m[1] + (m[2] || '')] = Number(m[3])
  }
  return out
}

main().catch((err) => {
  send({ type: 'error', message: err.stack })
  process.exit(1)
})
