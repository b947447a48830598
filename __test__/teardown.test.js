'use strict'
// A client's JS environment going away without close(), with a scraper connected and a
// scrape in flight: a worker thread terminated, a worker thread calling process.exit(),
// the process exiting. Each runs in a child process (__test__/fixtures/teardown.js), so
// that a crash at teardown would show as a signal or a non-zero exit, not take jest down.
const path = require('path')
const { spawn } = require('child_process')

function runChild (mode) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'teardown.js'), mode], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => { stdout += d })
    child.stderr.on('data', (d) => { stderr += d })
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`${mode}: no exit within 60 s (a hang at teardown): ${stdout} ${stderr}`))
    }, 60000)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

describe('teardown without close()', () => {
  test.each(['worker-terminate', 'worker-exit'])('%s with a connection open: the server goes with its environment, the process serves on', async (mode) => {
    const { code, signal, stdout, stderr } = await runChild(mode)
    // No panic, no abort, no warning: nothing on stderr at all.
    expect({ code, signal, stderr }).toEqual({ code: 0, signal: null, stderr: '' })
    const result = JSON.parse(stdout.trim())
    expect(result.first).toEqual({ success: true, metrics: 'up 1\n' })
    expect(result.exitCode).toBe(mode === 'worker-terminate' ? 1 : 0)
    // The scrape in flight ends at once: its getMetrics call went with the environment.
    expect(result.second.res).toMatchObject({ success: false })
    expect(result.secondMs).toBeLessThan(5000)
    // Nothing serves on that key any more (before: the server ran on, answering failures).
    expect(result.afterExit.res).toBeUndefined()
    expect(['REQUEST_TIMEOUT', 'CHANNEL_CLOSED', 'PEER_NOT_FOUND', 'PEER_CONNECTION_FAILED']).toContain(result.afterExit.code)
    // The worker's native scraper closed its connection to the main thread's client, and
    // both of the worker's DHT nodes their sockets (before: they ran on, sockets open).
    expect(result.scraped).toEqual({ success: true, metrics: 'up 1\n' })
    expect(result.mainConnections).toEqual({ opened: 2, closed: 1 })
    expect(result.fdsAfter).toBeLessThanOrEqual(result.fdsBefore)
    // The main thread's own client, and a new one, are served as before.
    expect(result.mainAfter).toEqual({ success: true, metrics: 'up 1\n' })
    expect(result.third).toEqual({ success: true, metrics: 'up 1\n' })
  }, 70000)

  test('process.exit() with a connection open and a scrape in flight exits cleanly', async () => {
    const { code, signal, stderr } = await runChild('process-exit')
    expect({ code, signal, stderr }).toEqual({ code: 0, signal: null, stderr: '' })
  }, 70000)
})
