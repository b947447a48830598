'use strict'
// The lab's DHT: persistent, unfirewalled HyperDHT nodes on the public segment, one per
// address, as hyperdht/testnet makes them (there on one loopback address).
const HyperDHT = require('hyperdht')
const { args, send, serve } = require('./child-io')

async function main () {
  const [first, ...rest] = args.bootstrap
  const nodes = [HyperDHT.bootstrapper(first.port, first.host, { host: first.host })]
  await nodes[0].fullyBootstrapped()
  for (const { host, port } of rest) {
    const node = new HyperDHT({ ephemeral: false, firewalled: false, anyPort: false, bootstrap: [first], host, port })
    nodes.push(node)
    await node.fullyBootstrapped()
  }
  serve(() => {}, async () => {
    for (const node of nodes.reverse()) await node.destroy()
  })
  send({ type: 'ready', nodes: nodes.map((n) => `${n.host}:${n.port}`) })
}

main().catch((err) => {
  send({ type: 'error', message: String(err.stack || err) })
  process.exit(1)
})
