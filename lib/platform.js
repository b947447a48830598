'use strict'
// Which prebuilt binary this machine needs, named as napi-rs names them (linux-x64-gnu, ...)
// and detected as the generated loader detects it, so a load failure can name the one
// package to install.
const { readFileSync } = require('fs')

// The platform keys of package.json's napi.targets (one npm/<key>/ package each);
// __test__/package.test.js checks that the two lists agree.
const SUPPORTED = [
  'linux-x64-gnu',
  'linux-x64-musl',
  'linux-arm64-gnu',
  'linux-arm64-musl',
  'darwin-x64',
  'darwin-arm64',
  'win32-x64-msvc'
]

function isMusl () {
  try {
    return readFileSync('/usr/bin/ldd', 'utf8').includes('musl')
  } catch {}
  if (!process.report || typeof process.report.getReport !== 'function') return false
  process.report.excludeNetwork = true
  const report = process.report.getReport()
  if (!report || (report.header && report.header.glibcVersionRuntime)) return false
  return Array.isArray(report.sharedObjects) &&
    report.sharedObjects.some((f) => f.includes('libc.musl-') || f.includes('ld-musl-'))
}

function platformKey () {
  const { platform, arch } = process
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

module.exports = { SUPPORTED, platformKey }
