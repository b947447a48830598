#!/usr/bin/env node
'use strict'
// dht-prom-client: scrape a DhtPromClient from the command line, or make a key pair.
const { parseArgs } = require('util')
const binding = require('../binding.js')
const { bootstrapList } = require('../lib/options')

// Exit codes, so scripts can tell failures apart.
const EXIT = { OK: 0, FAILURE_REPLY: 1, USAGE: 2, UNREACHABLE: 3, TIMEOUT: 4, PROTOCOL: 5 }

const USAGE = {
  main: `Usage: dht-prom-client <command> [options]

Commands:
  scrape <client-key>   Fetch the metrics of a DhtPromClient
  keygen                Print a fresh key pair (hex and z32)

Run 'dht-prom-client <command> --help' for a command's options.`,
  scrape: `Usage: dht-prom-client scrape <client-key> [options]

<client-key> is the client's metrics server public key (64-char hex or 52-char z32).

Options:
  --bootstrap host:port   DHT bootstrap node (repeatable; default: the public HyperDHT nodes)
  --host address          Local address to bind (default 0.0.0.0)
  --secret-key hex        The scraper's 64-byte ed25519 secret key (128 hex chars); the
                          client's firewall admits only its scraper's key
  --timeout ms            Request timeout (default 10000)
  --max-bytes n           Largest reply accepted (default 16777216)
  --json                  Print the {success, metrics | errorMessage} object
  -h, --help              Show this help

Exit codes: 0 metrics printed, 1 the client replied success:false, 2 bad arguments,
3 no connection within the timeout (unreachable, or refused by the client's firewall),
4 connected but no reply within the timeout, 5 protocol or decode error, reply too large.`,
  keygen: `Usage: dht-prom-client keygen [--json]

Prints a fresh ed25519 key pair: public key (hex, z32) and secret key (hex).`
}

class UsageError extends Error {}

function parse (args, options) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true })
  } catch (err) {
    throw new UsageError(err.message)
  }
}

async function scrape (args) {
  const { values, positionals } = parse(args, {
    bootstrap: { type: 'string', multiple: true },
    host: { type: 'string' },
    'secret-key': { type: 'string' },
    timeout: { type: 'string' },
    'max-bytes': { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' }
  })
  if (values.help) return print(USAGE.scrape)
  if (positionals.length !== 1) throw new UsageError('scrape takes exactly one <client-key>')
  let clientKey
  try {
    clientKey = binding.decodeKey(positionals[0])
  } catch (err) {
    throw new UsageError(`<client-key> ${err.message}`)
  }
  const secretKey = values['secret-key'] === undefined ? undefined : parseSecretKey(values['secret-key'])
  const timeout = positiveInt(values.timeout, '--timeout', 10000)
  const maxBytes = positiveInt(values['max-bytes'], '--max-bytes', 16 * 1024 * 1024)
  let bootstrap
  try {
    bootstrap = bootstrapList(values.bootstrap)
  } catch (err) {
    throw new UsageError(`--bootstrap ${err.message}`)
  }

  const scraper = await binding.startScraper(
    { bootstrap, host: values.host || '0.0.0.0', secretKey, requestTimeoutMs: timeout, maxBytes },
    clientKey
  )
  try {
    const outcome = await scraper.requestMetrics({ timeoutMs: timeout })
    if (outcome.errorCode) {
      process.stderr.write(`dht-prom-client: ${reason(outcome.errorCode)}: ${outcome.failure}\n`)
      return exitCodeFor(outcome.errorCode)
    }
    const reply = outcome.success
      ? { success: true, metrics: outcome.metrics }
      : { success: false, errorMessage: outcome.errorMessage }
    if (values.json) {
      process.stdout.write(JSON.stringify(reply) + '\n')
    } else if (reply.success) {
      process.stdout.write(reply.metrics)
    } else {
      process.stderr.write(`dht-prom-client: the client failed to produce metrics: ${reply.errorMessage}\n`)
    }
    return reply.success ? EXIT.OK : EXIT.FAILURE_REPLY
  } finally {
    await scraper.close()
  }
}

function parseSecretKey (text) {
  if (!/^[0-9a-fA-F]{128}$/.test(text)) throw new UsageError('--secret-key must be 128 hex characters (a 64-byte secret key)')
  return Buffer.from(text, 'hex')
}

function positiveInt (text, name, fallback) {
  if (text === undefined) return fallback
  if (!/^\d+$/.test(text) || Number(text) <= 0) throw new UsageError(`${name} must be a positive integer, got ${text}`)
  return Number(text)
}

function reason (code) {
  switch (code) {
    // A firewall drops the handshake silently: unreachable and refused look the same.
    case 'PEER_CONNECTION_FAILED':
    case 'REQUEST_TIMEOUT': return 'unreachable or refused by its firewall'
    case 'TIMEOUT_EXCEEDED': return 'timeout'
    case 'RESPONSE_TOO_LARGE': return 'reply too large'
    case 'CHANNEL_CLOSED': return 'connection closed'
    default: return 'protocol error'
  }
}

function exitCodeFor (code) {
  switch (code) {
    case 'PEER_CONNECTION_FAILED':
    case 'REQUEST_TIMEOUT': return EXIT.UNREACHABLE
    case 'TIMEOUT_EXCEEDED': return EXIT.TIMEOUT
    default: return EXIT.PROTOCOL
  }
}

function keygen (args) {
  const { values } = parse(args, { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } })
  if (values.help) return print(USAGE.keygen)
  const { publicKey, secretKey } = binding.keyPair()
  const pair = {
    publicKey: publicKey.toString('hex'),
    publicKeyZ32: binding.normalizeKey(publicKey),
    secretKey: secretKey.toString('hex')
  }
  if (values.json) return print(JSON.stringify(pair))
  return print(`public key (hex): ${pair.publicKey}\npublic key (z32): ${pair.publicKeyZ32}\nsecret key (hex): ${pair.secretKey}`)
}

function print (text) {
  process.stdout.write(text + '\n')
  return EXIT.OK
}

async function main (argv) {
  const [command, ...rest] = argv
  switch (command) {
    case 'scrape': return scrape(rest)
    case 'keygen': return keygen(rest)
    case '-h':
    case '--help':
    case 'help': return print(USAGE.main)
    case undefined: throw new UsageError('a command is required')
    default: throw new UsageError(`unknown command '${command}'`)
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code },
  (err) => {
    if (err instanceof UsageError) {
      process.stderr.write(`dht-prom-client: ${err.message}\n\n${USAGE.main}\n`)
      process.exitCode = EXIT.USAGE
    } else {
      process.stderr.write(`dht-prom-client: ${err.message}\n`)
      process.exitCode = EXIT.PROTOCOL
    }
  }
)
