'use strict'
// The native layer under the facades. binding.generated.js is the loader `napi build`
// writes (it finds ./<name>.<platform>.node or the <name>-<platform> package); this
// file only turns its generic failure into one message that names the package to install.
const { existsSync } = require('fs')
const { join } = require('path')
const { name, version, napi } = require('./package.json')
const { SUPPORTED, platformKey } = require('./lib/platform')

try {
  module.exports = require('./binding.generated.js')
} catch (err) {
  throw loadError(err)
}

function loadError (err) {
  if (err && err.code === 'MODULE_NOT_FOUND' && String(err.message).includes('binding.generated.js')) {
    return withCause(new Error(`${name}: binding.generated.js is missing: build the addon first (npm run build:debug)`), err)
  }
  if (process.env.NAPI_RS_NATIVE_LIBRARY_PATH) {
    return withCause(new Error(`${name}: NAPI_RS_NATIVE_LIBRARY_PATH=${process.env.NAPI_RS_NATIVE_LIBRARY_PATH} failed to load: ${innermost(err)}`), err)
  }
  const key = platformKey()
  if (!SUPPORTED.includes(key)) {
    return new Error(`${name}: no prebuilt binary for ${key}; there are binaries for ${SUPPORTED.join(', ')}`)
  }
  const local = `./${napi.binaryName}.${key}.node`
  if (existsSync(join(__dirname, local))) {
    return withCause(new Error(`${name}: ${local} failed to load: ${innermost(err)}`), err)
  }
  const pkg = `${name}-${key}`
  let installed = true
  try {
    require.resolve(`${pkg}/package.json`)
  } catch {
    installed = false
  }
  if (!installed) {
    // npm/cli#4828 is the lockfile case.
    return new Error(`${name}: its native binary for ${key} is not installed: install the package ${pkg} (npm install ${pkg}@${version}); npm installs it as an optional dependency unless optional dependencies are omitted or the lockfile was written on another platform`)
  }
  let detail = innermost(err)
  try {
    require(pkg)
  } catch (e) {
    detail = e && e.message ? e.message.split('\n')[0] : detail
  }
  return withCause(new Error(`${name}: the package ${pkg} is installed but its binary failed to load: ${detail}`), err)
}

// The end of the generated loader's cause chain: its first attempt, the local .node file.
function innermost (err) {
  let e = err
  while (e && e.cause) e = e.cause
  return e && e.message ? String(e.message).split('\n')[0] : String(e)
}

// `new Error(msg, { cause })` is ignored before Node 16.9.
function withCause (error, cause) {
  error.cause = cause
  return error
}
