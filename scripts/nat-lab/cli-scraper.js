'use strict'
// The scraper side played by this package (issue 11 item 4): each scrape runs this
// package's command line, `dht-prom-client scrape`, as a user would (a new process, a new
// DHT node, the scraper's secret key), and reports its outcome as scraper.js reports the
// JS scraper's. There is no alias server on this side.
const path = require('path')
const { spawn } = require('child_process')
const HyperDHT = require('hyperdht')
const { args, send, serve } = require('./child-io')

const CLI = path.join(__dirname, '..', '..', 'bin', 'dht-prom-client.js')

// Runs the CLI once, bounded by its own timeout plus a margin for its start and close.
function runCli (cliArgs, limitMs) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...cliArgs], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => { stdout += chunk })
    child.stderr.on('data', (chunk) => { stderr = (stderr + chunk).slice(-4000) })
    const timer = setTimeout(() => child.kill('SIGKILL'), limitMs)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

async function main () {
  const keyPair = HyperDHT.keyPair()
  const bootstrap = args.bootstrap.flatMap(({ host, port }) => ['--bootstrap', `${host}:${port}`])
  serve(async (msg) => {
    if (msg.cmd === 'drop-alias') {
      send({ type: 'dropped', connections: 0, closed: true })
    } else if (msg.cmd === 'scrape') {
      const cliArgs = ['scrape', msg.key, ...bootstrap, '--host', args.host, '--secret-key', keyPair.secretKey.toString('hex'), '--timeout', String(msg.timeoutMs), '--json']
      const started = process.hrtime.bigint()
      const run = await runCli(cliArgs, msg.timeoutMs + 15000)
      const ms = Number(process.hrtime.bigint() - started) / 1e6
      let result
      try {
        const res = JSON.parse(run.stdout)
        result = { ok: res.success === true && res.metrics === msg.metrics, reply: res.success ? 'metrics' : String(res.errorMessage) }
      } catch {
        const why = run.stderr.trim().split('\n').pop() || `exit ${run.code ?? run.signal}`
        result = { ok: false, error: `CLI exit ${run.code ?? run.signal}: ${why}` }
      }
      send({ type: 'scrape-result', n: msg.n, ms, ...result })
    } else if (msg.cmd === 'reset') {
      // Every scrape is a new process and connection already.
      send({ type: 'reset', n: msg.n })
    } else if (msg.cmd === 'report') {
      send({ type: 'report', threw: [] })
    }
  }, async () => {})
  send({ type: 'ready', publicKey: keyPair.publicKey.toString('hex') })
}

main().catch((err) => {
  send({ type: 'error', message: String(err.stack || err) })
  process.exit(1)
})
