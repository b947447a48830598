'use strict'
// A bare UDP endpoint for the lab's self-test of its NATs: binds ports on the host's own
// address, sends datagrams on command, and reports every datagram it receives.
const dgram = require('dgram')
const { args, send, serve } = require('./child-io')

const sockets = new Map()

serve(async (msg) => {
  if (msg.cmd === 'bind') {
    const socket = dgram.createSocket('udp4')
    socket.on('message', (data, rinfo) => {
      send({ type: 'recv', port: msg.port, from: { host: rinfo.address, port: rinfo.port }, data: data.toString() })
    })
    socket.on('error', (err) => send({ type: 'error', message: String(err.message) }))
    await new Promise((resolve) => socket.bind(msg.port, args.host, resolve))
    sockets.set(msg.port, socket)
    send({ type: 'bound', port: msg.port })
  } else if (msg.cmd === 'send') {
    const socket = sockets.get(msg.from)
    await new Promise((resolve, reject) => socket.send(msg.data, msg.to.port, msg.to.host, (err) => err ? reject(err) : resolve()))
    send({ type: 'sent', id: msg.data })
  }
}, () => {
  for (const s of sockets.values()) s.close()
})
send({ type: 'ready' })
