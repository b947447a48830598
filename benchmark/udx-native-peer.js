#!/usr/bin/env node
'use strict'
// The UDX benchmark's peer on the C libudx (npm `udx-native`, what JS hyperdht runs): the
// same command-line options and JSON-lines protocol as crates/udx/examples/udx_peer.rs
// (see crates/udx/examples/common/peer.rs), so benchmark/udx.js drives every
// implementation the same way.
//   node benchmark/udx-native-peer.js [--host 127.0.0.1] [--port 0] [--timeout 60]
//        [--mode M --local-id 1 --remote-id 2 [--remote-host H] [--remote-port P] [args]]
const readline = require('readline')
const UDX = require('udx-native')
const { runNativeMode } = require('./udx-lib')

function cpuNs () {
  const u = process.cpuUsage()
  return (u.user + u.system) * 1000
}

function print (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function parseArgs (argv) {
  const o = { host: '127.0.0.1', port: 0, timeout: 60, mode: null, localId: 1, remoteId: 2, remoteHost: '127.0.0.1', remotePort: null, extra: [] }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const val = () => argv[++i]
    if (a === '--host') o.host = val()
    else if (a === '--port') o.port = Number(val())
    else if (a === '--timeout') o.timeout = Number(val())
    else if (a === '--threads') val() // the Rust peers' option; one thread here
    else if (a === '--mode') o.mode = val()
    else if (a === '--local-id') o.localId = Number(val())
    else if (a === '--remote-id') o.remoteId = Number(val())
    else if (a === '--remote-host') o.remoteHost = val()
    else if (a === '--remote-port') o.remotePort = Number(val())
    else o.extra.push(a)
  }
  return o
}

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  const udx = new UDX()
  const socket = udx.createSocket()
  socket.bind(opts.port, opts.host)
  print({ event: 'listening', port: socket.address().port })

  const lines = readline.createInterface({ input: process.stdin })
  const queue = []
  let wake = null
  let eof = false
  lines.on('line', (l) => { queue.push(l); if (wake) wake() })
  lines.on('close', () => { eof = true; if (wake) wake() })
  async function nextLine () {
    while (queue.length === 0 && !eof) await new Promise((resolve) => { wake = resolve })
    wake = null
    return queue.length ? queue.shift() : null
  }

  async function session (mode, localId, remoteId, host, port, args) {
    const cpuStart = cpuNs()
    const stream = udx.createStream(localId)
    try {
      stream.connect(socket, remoteId, port, host)
    } catch (err) {
      print({ event: 'result', mode, id: localId, ok: false, error: err.message })
      return false
    }
    print({ event: 'connected', id: localId })
    const start = process.hrtime.bigint()
    let timer
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => { stream.destroy(new Error(`timed out after ${opts.timeout} s`)); resolve(null) }, opts.timeout * 1000)
    })
    const out = await Promise.race([runNativeMode(stream, mode, args), timeout])
    clearTimeout(timer)
    const res = out || { ok: false, close: 'Error', error: `timed out after ${opts.timeout} s` }
    delete res.data
    print({
      event: 'result',
      ...res,
      mode,
      id: localId,
      totalUs: Number(process.hrtime.bigint() - start) / 1000,
      cpuNs: cpuNs() - cpuStart,
      cpuTotalNs: cpuNs(),
      mtu: stream.mtu,
      srttUs: stream.rtt * 1000,
      stats: { packetsSent: stream.packetsTransmitted, retransmits: stream.retransmits, rtoCount: stream.rtoCount, fastRecoveries: stream.fastRecoveries }
    })
    return res.ok
  }

  let failures = 0
  if (opts.mode) {
    let port = opts.remotePort
    if (!port) port = Number(await nextLine())
    const ok = await session(opts.mode, opts.localId, opts.remoteId, opts.remoteHost, port, opts.extra)
    failures += ok ? 0 : 1
  } else {
    for (;;) {
      const line = await nextLine()
      if (line === null || line.trim() === 'exit') break
      if (line.trim() === '') continue
      if (line.trim() === 'cpu') { print({ event: 'cpu', cpuNs: cpuNs() }); continue }
      const w = line.trim().split(/\s+/)
      if (w.length < 5) { print({ event: 'error', error: `bad command ${line}` }); failures++; continue }
      const ok = await session(w[0], Number(w[1]), Number(w[2]), w[3], Number(w[4]), w.slice(5))
      failures += ok ? 0 : 1
    }
  }
  lines.close()
  await socket.close()
  process.exit(failures ? 1 : 0)
}

main().catch((err) => {
  console.error(err)
  process.exit(2)
})
