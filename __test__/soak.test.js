'use strict'
// The soak (npm run soak, scripts/soak/run.js) for 18 s: scrapes of 1 KB to 2 MB and
// hostile peers at once, without a failed scrape, a stranger's connection or runaway
// memory. Its long run's figures are in the README.
const fs = require('fs')
const os = require('os')
const path = require('path')
const { spawn } = require('child_process')

test('the soak smoke: scrapes all succeed under hostile traffic, memory flat-ish', async () => {
  const json = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'soak-smoke-')), 'soak.json')
  const args = [path.join(__dirname, '..', 'scripts', 'soak', 'run.js'), '--minutes', '0.3', '--sample-seconds', '1', '--json', json, '--max-growth-mb', '96']
  const { code, output } = await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (d) => { output += d })
    child.stderr.on('data', (d) => { output += d })
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error('the soak smoke did not end within 90 s: ' + output.slice(-2000)))
    }, 90000)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, output })
    })
  })
  expect({ code, tail: code === 0 ? '' : output.slice(-3000) }).toEqual({ code: 0, tail: '' })
  const { summary } = JSON.parse(fs.readFileSync(json, 'utf8'))
  fs.rmSync(path.dirname(json), { recursive: true, force: true })
  expect(summary.errors).toBe(0)
  expect(summary.scrapes).toBeGreaterThan(20)
  // Every size was scraped, 2 MB included.
  expect(Object.keys(summary.bySize).map(Number).sort((a, b) => a - b)).toEqual([1024, 16384, 262144, 1048576, 2097152])
  // The strangers were blocked, none got a connection; the abusers were thrown out.
  expect(summary.handshakes).toBeGreaterThan(0)
  expect(summary.handshakesOpened).toBe(0)
  expect(summary.firewallBlocks).toBeGreaterThan(0)
  expect(summary.abuses).toBeGreaterThan(0)
  expect(summary.protocolErrors).toBeGreaterThan(0)
  // Generous: a connection that does not read holds its send budget (tens of MB) for a
  // moment; a leak of the scrapes' 2 MB texts would pass 128 MB within the run.
  expect(summary.rssEndMb).toBeLessThan(summary.rssStartMb + 128)
  expect(summary.fdsEnd).toBeLessThanOrEqual(summary.fdsStart + 2)
  expect(summary.metricsPendingEnd).toBe(0)
}, 100000)
