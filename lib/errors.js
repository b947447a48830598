'use strict'
// Errors shaped as those of the reference's dependencies, where our Rust side stands in for
// them: protomux-rpc-client and protomux-rpc report `name` ProtomuxRpcClientError or
// RPCError, `message` 'CODE: text' and `code`, and services may match on any of the three.

const RPC_CLIENT_MESSAGES = {
  REQUEST_TIMEOUT: 'The request timed out',
  CLIENT_CLOSING: 'The protomux-rpc client is closing'
}

class ProtomuxRpcClientError extends Error {
  get name () { return 'ProtomuxRpcClientError' }
}

function rpcClientError (code) {
  const error = new ProtomuxRpcClientError(`${code}: ${RPC_CLIENT_MESSAGES[code]}`)
  error.code = code
  Error.captureStackTrace(error, rpcClientError)
  return error
}

class RPCError extends Error {
  get name () { return 'RPCError' }
}

// protomux-rpc's error for `code`, from our Rust side's text for it (the same text).
function rpcError (code, message) {
  const error = new RPCError(message.startsWith(`${code}: `) ? message : `${code}: ${message}`)
  error.code = code
  Error.captureStackTrace(error, rpcError)
  return error
}

// Sets a property that deep-equality checks and JSON do not see (own, non-enumerable), so
// a payload stays key for key the reference's while still saying which scraper it is about.
function hidden (target, name, value) {
  Object.defineProperty(target, name, { value, enumerable: false, writable: true, configurable: true })
  return target
}

module.exports = { ProtomuxRpcClientError, RPCError, rpcClientError, rpcError, hidden }
