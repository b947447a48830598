#!/usr/bin/env node
// Short fuzzing smoke for CI: every cargo-fuzz target in fuzz/ (as `cargo fuzz list` names
// them, so new targets are included without editing this file) runs its checked-in corpus
// plus a bounded number of mutations. Exits non-zero on any crash, panic or over-budget
// allocation; the failing input is kept under fuzz/artifacts/<target>/.
//
// Stable toolchain only: `--sanitizer none`. Installs cargo-fuzz when it is missing.
// Environment: FUZZ_SMOKE_RUNS (default 20000 per target), FUZZ_SMOKE_SEED (default 1, so
// a run is reproducible), FUZZ_SMOKE_TARGETS (comma-separated subset).
'use strict'
const { spawnSync } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')

const FUZZ_DIR = path.join(__dirname, '..', 'fuzz')
const RUNS = process.env.FUZZ_SMOKE_RUNS || '20000'
const SEED = process.env.FUZZ_SMOKE_SEED || '1'

function run (args, opts = {}) {
  const result = spawnSync('cargo', args, { cwd: FUZZ_DIR, stdio: 'inherit', ...opts })
  if (result.error) throw result.error
  return result
}

function ensureCargoFuzz () {
  const probe = spawnSync('cargo', ['fuzz', '--version'], { cwd: FUZZ_DIR, stdio: 'ignore' })
  if (probe.status === 0) return
  console.log('fuzz-smoke: installing cargo-fuzz (cargo install cargo-fuzz --locked)')
  const install = run(['install', 'cargo-fuzz', '--locked'])
  if (install.status !== 0) throw new Error('cargo install cargo-fuzz failed')
}

function main () {
  const started = Date.now()
  ensureCargoFuzz()

  const build = run(['fuzz', 'build', '--sanitizer', 'none'])
  if (build.status !== 0) return fail('cargo fuzz build failed')
  const built = Date.now()

  const listed = spawnSync('cargo', ['fuzz', 'list'], { cwd: FUZZ_DIR, encoding: 'utf8' })
  if (listed.status !== 0) return fail('cargo fuzz list failed')
  let targets = listed.stdout.split('\n').map((s) => s.trim()).filter(Boolean)
  if (process.env.FUZZ_SMOKE_TARGETS) {
    const wanted = process.env.FUZZ_SMOKE_TARGETS.split(',').map((s) => s.trim())
    const unknown = wanted.filter((t) => !targets.includes(t))
    if (unknown.length) return fail(`unknown fuzz targets: ${unknown.join(', ')}`)
    targets = wanted
  }

  const failed = []
  for (const target of targets) {
    // New inputs go to a scratch directory, so the checked-in corpus is only read.
    const scratch = fs.mkdtempSync(path.join(os.tmpdir(), `fuzz-smoke-${target}-`))
    const corpus = path.join(FUZZ_DIR, 'corpus', target)
    const dirs = fs.existsSync(corpus) ? [scratch, corpus] : [scratch]
    const t0 = Date.now()
    const result = run([
      'fuzz', 'run', '--sanitizer', 'none', target, ...dirs, '--',
      `-runs=${RUNS}`, `-seed=${SEED}`, '-timeout=10', '-rss_limit_mb=2048', '-print_final_stats=1'
    ], { stdio: ['ignore', 'inherit', 'inherit'] })
    fs.rmSync(scratch, { recursive: true, force: true })
    const seconds = ((Date.now() - t0) / 1000).toFixed(1)
    if (result.status === 0) {
      console.log(`fuzz-smoke: ${target}: ${RUNS} runs, no crash (${seconds} s)`)
    } else {
      console.error(`fuzz-smoke: ${target}: FAILED (exit ${result.status}); input saved under fuzz/artifacts/${target}/`)
      failed.push(target)
    }
  }

  const total = ((Date.now() - started) / 1000).toFixed(1)
  const buildSeconds = ((built - started) / 1000).toFixed(1)
  console.log(`fuzz-smoke: ${targets.length} targets in ${total} s (build ${buildSeconds} s)`)
  if (failed.length) return fail(`crashed: ${failed.join(', ')}`)
}

function fail (message) {
  console.error(`fuzz-smoke: ${message}`)
  process.exitCode = 1
}

main()
