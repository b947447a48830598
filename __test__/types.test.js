'use strict'
const path = require('path')
const { spawnSync } = require('child_process')

const root = path.join(__dirname, '..')

describe('index.d.ts', () => {
  test('package.json "types" points at index.d.ts', () => {
    expect(require('../package.json').types).toBe('index.d.ts')
  })

  // usage.ts uses the API as a service would, and holds @ts-expect-error lines for wrong
  // usage: tsc fails if a typing is missing, wrong, or too loose to catch those mistakes.
  test('tsc --noEmit -p __test__/types passes (strict)', () => {
    const tsc = require.resolve('typescript/bin/tsc')
    const res = spawnSync(process.execPath, [tsc, '--noEmit', '-p', path.join(__dirname, 'types')], {
      cwd: root,
      encoding: 'utf8',
      timeout: 60000
    })
    expect(res.error).toBeUndefined()
    expect(res.stdout + res.stderr).toBe('')
    expect(res.status).toBe(0)
  }, 60000)
})
