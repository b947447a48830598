#!/usr/bin/env node
// Runs `cargo test` for the host target triple, the same one `napi build --platform` uses,
// so that both share target/<triple>/ and the dependencies are compiled once, not twice.
// --workspace: the transport crates (crates/udx, crates/libudx) have suites of their own.
'use strict'
const { execFileSync, spawnSync } = require('child_process')

const host = execFileSync('rustc', ['-vV'], { encoding: 'utf8' }).match(/^host: (.+)$/m)[1]
const result = spawnSync('cargo', ['test', '--workspace', '--target', host, ...process.argv.slice(2)], { stdio: 'inherit' })
process.exit(result.status === null ? 1 : result.status)
