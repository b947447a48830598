'use strict'
// The package as a user gets it: the root and this platform's tarballs installed with
// `npm install` into empty projects, offline, with cargo and rustc off PATH; then required
// (CJS) and imported (ESM) by name, serving metrics to the real JS scraper on a loopback
// testnet, and the CLI run from node_modules/.bin.
//
// Tarballs: dist/'s (from `npm run pack`, a release build) when they are newer than every
// source that goes into them; otherwise packed here by the same code (scripts/pack.js
// --prebuilt) from the debug build `npm test` has just made.
// PACKAGE_TEST_DIST=1 takes dist/'s tarballs even so (a work tree others keep editing).
// PACKAGE_TEST_NODE=/path/to/node runs the installed package on that Node (engines check).
const fs = require('fs')
const os = require('os')
const path = require('path')
const readline = require('readline')
const { spawn, spawnSync } = require('child_process')
const HyperDHT = require('hyperdht')
const { setup } = require('./helpers')
const { pack, parseTargets, GENERATED } = require('../scripts/pack')
const { SUPPORTED, platformKey } = require('../lib/platform')

const ROOT = path.join(__dirname, '..')
const pkg = require('../package.json')
const KEY = platformKey()
const PLATFORM_PKG = `${pkg.name}-${KEY}`
const NODE = process.env.PACKAGE_TEST_NODE || process.execPath
const TOOLCHAIN = ['cargo', 'rustc', 'rustup']
const WIN = process.platform === 'win32'
const EXE = WIN ? ['.exe', '.cmd', ''] : ['']
const PATH_KEY = Object.keys(process.env).find((k) => k.toUpperCase() === 'PATH') || 'PATH'

function onPath (cmd, PATH) {
  return PATH.split(path.delimiter).some((dir) => dir && EXE.some((ext) => fs.existsSync(path.join(dir, cmd + ext))))
}

// The user's machine: no Rust toolchain, no npm_* variables from an enclosing `npm test`,
// and NODE first on PATH (node_modules/.bin scripts start with `#!/usr/bin/env node`).
function userEnv () {
  const dirs = (process.env[PATH_KEY] || '').split(path.delimiter)
    .filter((dir) => dir && !TOOLCHAIN.some((cmd) => onPath(cmd, dir)))
  const env = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(PATH$|npm_|NPM_CONFIG_|INIT_CWD$|CARGO|RUSTUP|RUSTC|NODE_OPTIONS$)/i.test(k)) env[k] = v
  }
  env[PATH_KEY] = [path.dirname(NODE), ...dirs].join(path.delimiter)
  return env
}

// npm runs on the Node running jest (PACKAGE_TEST_NODE may be older than npm supports).
function npmArgv () {
  const bundled = WIN
    ? path.join(path.dirname(process.execPath), 'node_modules', 'npm', 'bin', 'npm-cli.js')
    : path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js')
  if (fs.existsSync(bundled)) return [process.execPath, bundled]
  for (const dir of (process.env[PATH_KEY] || '').split(path.delimiter)) {
    const file = path.join(dir, 'npm')
    if (!dir || !fs.existsSync(file)) continue
    const real = fs.realpathSync(file)
    if (/\.c?js$/.test(real)) return [process.execPath, real]
  }
  const execPath = process.env.npm_execpath
  if (execPath && /npm-cli\.c?js$/.test(execPath)) return [process.execPath, execPath]
  throw new Error('npm-cli.js not found on PATH')
}

// node_modules/.bin/<name>, as the shell would run it.
function binArgv (project) {
  const bin = path.join(project, 'node_modules', '.bin', 'dht-prom-client')
  return [WIN ? `${bin}.cmd` : bin]
}

// .cmd files (Windows .bin shims) only run through the shell; no argument here needs quoting.
const viaShell = (argv) => WIN && argv[0].endsWith('.cmd')

function run (argv, { cwd, env = userEnv(), timeout = 60000 } = {}) {
  const res = spawnSync(argv[0], argv.slice(1), { cwd, env, timeout, encoding: 'utf8', shell: viaShell(argv) })
  if (res.error) throw res.error
  return res
}

// For commands that talk to the testnet, which lives in this process: never block it.
function runAsync (argv, { cwd, timeout = 30000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { cwd, env: userEnv(), stdio: ['ignore', 'pipe', 'pipe'], shell: viaShell(argv) })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => { stdout += d })
    child.stderr.on('data', (d) => { stderr += d })
    const timer = setTimeout(() => child.kill('SIGKILL'), timeout)
    child.on('error', (err) => { clearTimeout(timer); reject(err) })
    child.on('close', (status, signal) => { clearTimeout(timer); resolve({ status, signal, stdout, stderr }) })
  })
}

function npmInstall (dir, specs, extra = []) {
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: path.basename(dir), private: true }))
  const res = run([...npmArgv(), 'install', '--offline', '--no-audit', '--no-fund', ...extra, ...specs], { cwd: dir, timeout: 120000 })
  if (res.status !== 0) throw new Error(`npm install in ${dir} failed (${res.status}):\n${res.stdout}${res.stderr}`)
}

// Relative names: GNU tar (Git for Windows) reads C:\... as host:path.
function tarEntries (file) {
  const res = run(['tar', '-tzf', path.basename(file)], { cwd: path.dirname(file), env: process.env })
  expect(res.status).toBe(0)
  return res.stdout.split('\n').filter(Boolean).map((p) => p.replace(/^package\//, '')).sort()
}

function tarFile (file, entry) {
  const res = run(['tar', '-xzOf', path.basename(file), `package/${entry}`], { cwd: path.dirname(file), env: process.env })
  expect(res.status).toBe(0)
  return res.stdout
}

// dist/'s tarballs, unless a source that goes into them changed after they were packed.
function distTarballs () {
  const root = path.join(ROOT, 'dist', `${pkg.name}-${pkg.version}.tgz`)
  const platform = path.join(ROOT, 'dist', `${PLATFORM_PKG}-${pkg.version}.tgz`)
  if (!fs.existsSync(root) || !fs.existsSync(platform)) return { stale: 'no tarballs in dist/' }
  const packedAt = Math.min(fs.statSync(root).mtimeMs, fs.statSync(platform).mtimeMs)
  const sources = [
    'package.json', 'Cargo.toml', 'Cargo.lock', 'src', 'crates', 'npm', 'LICENSE', 'README.md',
    `${pkg.napi.binaryName}.${KEY}.node`, ...GENERATED,
    ...pkg.files.map((f) => f.split('/')[0])
  ]
  const newer = (p) => {
    if (!fs.existsSync(p)) return null
    const st = fs.statSync(p)
    if (!st.isDirectory()) return st.mtimeMs > packedAt ? p : null
    for (const e of fs.readdirSync(p)) {
      const hit = e !== 'node_modules' && e !== 'target' && newer(path.join(p, e))
      if (hit) return hit
    }
    return null
  }
  for (const s of process.env.PACKAGE_TEST_DIST ? [] : sources) {
    const hit = newer(path.join(ROOT, s))
    if (hit) return { stale: `${path.relative(ROOT, hit)} changed after dist/ was packed` }
  }
  return { root, platform }
}

// A child process that prints JSON lines; every wait on it is bounded.
function startChild (argv, { cwd }) {
  const child = spawn(argv[0], argv.slice(1), { cwd, env: userEnv(), stdio: ['pipe', 'pipe', 'pipe'] })
  const lines = []
  const waiters = []
  let stderr = ''
  let exit = null
  child.stderr.on('data', (d) => { stderr += d })
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(JSON.parse(line))
    for (const w of waiters.slice()) w()
  })
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    exit = { code, signal }
    for (const w of waiters.slice()) w()
    resolve(exit)
  }))
  return {
    child,
    exited,
    stderr: () => stderr,
    next (pred, timeout = 30000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => done(new Error(`no matching line within ${timeout} ms; stderr:\n${stderr}`)), timeout)
        const check = () => {
          const hit = lines.find(pred)
          if (hit) return done(null, hit)
          if (exit) done(new Error(`exited (${JSON.stringify(exit)}) before a matching line; stderr:\n${stderr}`))
        }
        function done (err, value) {
          clearTimeout(timer)
          waiters.splice(waiters.indexOf(check), 1)
          err ? reject(err) : resolve(value)
        }
        waiters.push(check)
        check()
      })
    },
    async close (timeout = 15000) {
      child.stdin.end('close\n')
      let timer
      const res = await Promise.race([exited, new Promise((resolve) => { timer = setTimeout(resolve, timeout, null) })])
      clearTimeout(timer)
      return res
    }
  }
}

// The user's program: a metrics server from the installed package, also scraped by the
// package's own native scraper; reports what it imported, then waits for "close".
const SERVE_BODY = `
async function main ({ DhtPromClient, DhtPromScraper, mod, scraperMod, resolved }) {
  const config = JSON.parse(process.argv[2])
  const onPath = (cmd) => (process.env.PATH || '').split(path.delimiter)
    .some((d) => d && ['', '.exe', '.cmd'].some((x) => fs.existsSync(path.join(d, cmd + x))))
  const self = mod.keyPair()
  const allowed = config.allowed.map((k) => mod.decodeKey(k)).concat([self.publicKey])
  const client = new DhtPromClient({ bootstrap: config.bootstrap, host: '127.0.0.1' },
    () => config.metrics, allowed, 'pkg-test', config.secret, 'pkg-test')
  await client.ready()
  const scraper = new DhtPromScraper({ bootstrap: config.bootstrap, host: '127.0.0.1', keyPair: self },
    mod.normalizeKey(client.publicKey))
  const selfScrape = await scraper.requestMetrics({ timeout: 10000 })
  await scraper.close()
  out({
    ready: true,
    node: process.version,
    resolved,
    publicKey: client.publicKey.toString('hex'),
    z32: mod.normalizeKey(client.publicKey),
    exports: Object.keys(mod).sort(),
    scraperExports: Object.keys(scraperMod).sort(),
    sameClass: mod.DhtPromClient === DhtPromClient && scraperMod.DhtPromScraper === DhtPromScraper,
    selfScrape,
    toolchainOnPath: ['cargo', 'rustc'].filter(onPath)
  })
  await new Promise((resolve) => readline.createInterface({ input: process.stdin })
    .on('line', (l) => { if (l === 'close') resolve() }))
  await client.close()
  out({ closed: true })
}
function out (obj) { process.stdout.write(JSON.stringify(obj) + '\\n') }
`

const SERVE_CJS = `'use strict'
const fs = require('fs')
const path = require('path')
const readline = require('readline')
const DhtPromClient = require('${pkg.name}')
const DhtPromScraper = require('${pkg.name}/scraper')
${SERVE_BODY}
main({ DhtPromClient, DhtPromScraper, mod: DhtPromClient, scraperMod: DhtPromScraper, resolved: require.resolve('${pkg.name}') })
  .catch((err) => { console.error(err); process.exit(1) })
`

const SERVE_ESM = `import fs from 'fs'
import path from 'path'
import readline from 'readline'
import DhtPromClient from '${pkg.name}'
import * as mod from '${pkg.name}'
import DhtPromScraper from '${pkg.name}/scraper'
import * as scraperMod from '${pkg.name}/scraper'
import { decodeKey, normalizeKey, keyPair } from '${pkg.name}'
${SERVE_BODY}
if (mod.default !== DhtPromClient || scraperMod.default !== DhtPromScraper) throw new Error('default exports differ')
if (decodeKey !== DhtPromClient.decodeKey || normalizeKey !== DhtPromClient.normalizeKey || keyPair !== DhtPromClient.keyPair) {
  throw new Error('named exports are not the CommonJS objects')
}
main({ DhtPromClient, DhtPromScraper, mod, scraperMod, resolved: null })
  .catch((err) => { console.error(err); process.exit(1) })
`

// Reports how require, import and the CLI fail.
const FAIL_CJS = `'use strict'
const out = {}
try { require('${pkg.name}'); out.require = null } catch (err) { out.require = err.message }
try { require('${pkg.name}/scraper'); out.scraper = null } catch (err) { out.scraper = err.message }
import('${pkg.name}').then(() => { out.import = null }, (err) => { out.import = err.message })
  .then(() => console.log(JSON.stringify(out)))
`

describe('npm package: install the tarballs, no Rust toolchain', () => {
  let tmp
  let tarballs
  let env
  const children = []

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dht-prom-client-rs-package-test-'))
    tarballs = distTarballs()
    if (tarballs.stale) {
      process.stderr.write(`package.test.js: packing the work tree's build (${tarballs.stale})\n`)
      const res = pack({ prebuilt: true, outDir: path.join(tmp, 'dist') })
      tarballs = { root: res.root.file, platform: res.platform.file }
    } else {
      process.stderr.write('package.test.js: testing the tarballs in dist/\n')
    }
    npmInstall(path.join(tmp, 'app'), [tarballs.root, tarballs.platform])
    npmInstall(path.join(tmp, 'bare'), [tarballs.root], ['--omit=optional'])
    npmInstall(path.join(tmp, 'dropin'), [`dht-prom-client@file:${tarballs.root}`, tarballs.platform])
    env = await setup()
  }, 180000)

  afterAll(async () => {
    for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL')
    if (env) await env.teardown()
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true })
  })

  test('the user environment has no cargo or rustc', () => {
    const PATH = userEnv()[PATH_KEY]
    expect(TOOLCHAIN.filter((cmd) => onPath(cmd, PATH))).toEqual([])
    expect(onPath('node', PATH)).toBe(true)
  })

  test('root tarball: facades, loader, types, CLI, README, LICENSE only; optional deps on every platform package', () => {
    const entries = tarEntries(tarballs.root)
    const allowed = /^(package\.json|README\.md|LICENSE|(index|scraper|binding|binding\.generated)\.(js|mjs|d\.ts|d\.mts)|lib\/[\w-]+\.js|bin\/[\w-]+\.js)$/
    expect(entries.filter((e) => !allowed.test(e))).toEqual([])
    for (const e of ['index.js', 'index.mjs', 'index.d.ts', 'index.d.mts', 'scraper.js', 'scraper.mjs', 'scraper.d.ts',
      'scraper.d.mts', 'binding.js', 'binding.generated.js', 'binding.generated.d.ts', 'bin/dht-prom-client.js',
      'lib/options.js', 'lib/platform.js', 'README.md', 'LICENSE', 'package.json']) {
      expect(entries).toContain(e)
    }
    const manifest = JSON.parse(tarFile(tarballs.root, 'package.json'))
    const expected = {}
    for (const t of parseTargets(pkg.napi.targets)) expected[`${pkg.name}-${t.platformArchABI}`] = pkg.version
    expect(manifest.optionalDependencies).toEqual(expected)
    // No runtime dependencies: nothing for npm to fetch, so offline installs work.
    expect(manifest.dependencies).toBeUndefined()
    const lifecycle = ['preinstall', 'install', 'postinstall', 'prepare']
    expect(Object.keys(manifest.scripts || {}).filter((s) => lifecycle.includes(s))).toEqual([])
    expect(manifest.main).toBe('index.js')
    expect(manifest.bin).toEqual({ 'dht-prom-client': 'bin/dht-prom-client.js' })
  })

  test('platform tarball: the stripped binary for this machine', () => {
    const node = `${pkg.napi.binaryName}.${KEY}.node`
    expect(tarEntries(tarballs.platform)).toEqual(['LICENSE', 'README.md', node, 'package.json'].sort())
    const manifest = JSON.parse(tarFile(tarballs.platform, 'package.json'))
    expect(manifest).toMatchObject({ name: PLATFORM_PKG, version: pkg.version, main: node, os: [process.platform], cpu: [process.arch] })
    if (process.platform === 'linux') {
      // No symbol table or debug info left (the dynamic symbols Node needs stay in .dynsym).
      const dir = path.join(tmp, 'app', 'node_modules', PLATFORM_PKG)
      const res = run(['readelf', '-S', '-W', path.join(dir, node)], { env: process.env })
      expect(res.status).toBe(0)
      expect(res.stdout).not.toMatch(/\s\.(symtab|debug_info)\s/)
      expect(res.stdout).toMatch(/\s\.dynsym\s/)
    }
  })

  test('napi.targets, the npm/ platform packages and the loader shim name the same platforms', () => {
    const targets = parseTargets(pkg.napi.targets)
    const keys = targets.map((t) => t.platformArchABI).sort()
    expect([...SUPPORTED].sort()).toEqual(keys)
    expect(fs.readdirSync(path.join(ROOT, 'npm')).sort()).toEqual(keys)
    for (const t of targets) {
      const manifest = require(path.join(ROOT, 'npm', t.platformArchABI, 'package.json'))
      expect(manifest).toMatchObject({
        name: `${pkg.name}-${t.platformArchABI}`,
        version: pkg.version,
        os: [t.platform],
        cpu: [t.arch],
        main: `${pkg.napi.binaryName}.${t.platformArchABI}.node`,
        files: [`${pkg.napi.binaryName}.${t.platformArchABI}.node`],
        license: pkg.license,
        engines: pkg.engines
      })
      if (t.platform === 'linux') expect(manifest.libc).toEqual([t.abi === 'musl' ? 'musl' : 'glibc'])
    }
  })

  async function serveAndScrape (script, file) {
    const app = path.join(tmp, 'app')
    fs.writeFileSync(path.join(app, file), script)
    const jsScraper = HyperDHT.keyPair()
    const cliScraper = HyperDHT.keyPair()
    const metrics = `# HELP pkg_test a metric from the installed package\npkg_test{entry="${file}",text="é✓"} 1\n`
    const config = {
      bootstrap: env.bootstrap.map((b) => `${b.host}:${b.port}`),
      allowed: [jsScraper.publicKey.toString('hex'), cliScraper.publicKey.toString('hex')],
      secret: Buffer.alloc(32, 7).toString('hex'),
      metrics
    }
    const proc = startChild([NODE, file, JSON.stringify(config)], { cwd: app })
    children.push(proc)
    const ready = await proc.next((l) => l.ready)
    expect(ready.toolchainOnPath).toEqual([])
    expect(ready.node).toBe(run([NODE, '--version'], { env: process.env }).stdout.trim())
    expect(ready.selfScrape).toEqual({ success: true, metrics })
    expect(ready.sameClass).toBe(true)

    const { scraper } = env.createScraper(Buffer.from(ready.publicKey, 'hex'), { keyPair: jsScraper })
    expect(await scraper.requestMetrics()).toEqual({ success: true, metrics })
    return { proc, ready, config, cliScraper, metrics }
  }

  test('CommonJS: require by name, serve metrics to the JS scraper; the CLI from node_modules/.bin', async () => {
    const { proc, ready, config, cliScraper, metrics } = await serveAndScrape(SERVE_CJS, 'serve.cjs')
    expect(ready.resolved.endsWith(path.join('app', 'node_modules', pkg.name, 'index.js'))).toBe(true)
    expect(ready.resolved.startsWith(ROOT)).toBe(false)
    expect(ready.exports).toEqual(['DhtPromClient', 'decodeKey', 'keyPair', 'normalizeKey'])
    expect(ready.scraperExports).toEqual(['DhtPromScraper'])

    const bin = binArgv(path.join(tmp, 'app'))
    const scrape = await runAsync([...bin, 'scrape', ready.z32, ...config.bootstrap.flatMap((b) => ['--bootstrap', b]),
      '--host', '127.0.0.1', '--secret-key', cliScraper.secretKey.toString('hex'), '--timeout', '10000'],
    { cwd: path.join(tmp, 'app'), timeout: 30000 })
    expect(scrape.stderr).toBe('')
    expect(scrape.stdout).toBe(metrics)
    expect(scrape.status).toBe(0)

    const keygen = run([...bin, 'keygen', '--json'], { cwd: path.join(tmp, 'app') })
    expect(keygen.status).toBe(0)
    expect(JSON.parse(keygen.stdout)).toMatchObject({ publicKey: expect.stringMatching(/^[0-9a-f]{64}$/) })

    expect(await proc.close()).toEqual({ code: 0, signal: null })
  }, 60000)

  test('ES module: default import, named exports for the class, the scraper and the key helpers', async () => {
    const { proc, ready } = await serveAndScrape(SERVE_ESM, 'serve.mjs')
    expect(ready.exports).toEqual(['DhtPromClient', 'decodeKey', 'default', 'keyPair', 'normalizeKey'])
    expect(ready.scraperExports).toEqual(['DhtPromScraper', 'default'])
    expect(await proc.close()).toEqual({ code: 0, signal: null })
  }, 60000)

  test('ESM named exports are exactly the CommonJS exports (plus default)', () => {
    const probe = 'const cjs = require("' + pkg.name + '"); const s = require("' + pkg.name + '/scraper");' +
      'Promise.all([import("' + pkg.name + '"), import("' + pkg.name + '/scraper")]).then(([e, es]) => console.log(JSON.stringify({' +
      ' cjs: Object.keys(cjs).concat("default").sort(), esm: Object.keys(e).sort(),' +
      ' scjs: Object.keys(s).concat("default").sort(), sesm: Object.keys(es).sort() })))'
    const res = run([NODE, '-e', probe], { cwd: path.join(tmp, 'app') })
    expect(res.stderr).toBe('')
    const keys = JSON.parse(res.stdout)
    expect(keys.esm).toEqual(keys.cjs)
    expect(keys.sesm).toEqual(keys.scjs)
  })

  test('without the platform package, require, import and the CLI fail with one message naming it', () => {
    const bare = path.join(tmp, 'bare')
    expect(fs.existsSync(path.join(bare, 'node_modules', PLATFORM_PKG))).toBe(false)
    fs.writeFileSync(path.join(bare, 'fail.cjs'), FAIL_CJS)
    const res = run([NODE, 'fail.cjs'], { cwd: bare })
    expect(res.stderr).toBe('')
    const out = JSON.parse(res.stdout)
    const message = `${pkg.name}: its native binary for ${KEY} is not installed: install the package ${PLATFORM_PKG} ` +
      `(npm install ${PLATFORM_PKG}@${pkg.version})`
    for (const m of [out.require, out.scraper, out.import]) {
      expect(m.startsWith(message)).toBe(true)
      expect(m).not.toMatch(/\n/)
    }

    const cli = run([...binArgv(bare), 'keygen'], { cwd: bare })
    expect(cli.status).not.toBe(0)
    expect(cli.stdout).toBe('')
    expect(cli.stderr).toContain(`Error: ${message}`)
  })

  test('a platform package whose binary does not load: one message naming it and the loader error', () => {
    const broken = path.join(tmp, 'broken')
    fs.cpSync(path.join(tmp, 'bare'), broken, { recursive: true })
    const dir = path.join(broken, 'node_modules', PLATFORM_PKG)
    const node = `${pkg.napi.binaryName}.${KEY}.node`
    fs.mkdirSync(dir)
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: PLATFORM_PKG, version: pkg.version, main: node }))
    fs.writeFileSync(path.join(dir, node), 'not a shared library')
    fs.writeFileSync(path.join(broken, 'fail.cjs'), FAIL_CJS)
    const res = run([NODE, 'fail.cjs'], { cwd: broken })
    expect(res.stderr).toBe('')
    const { require: message } = JSON.parse(res.stdout)
    expect(message.startsWith(`${pkg.name}: the package ${PLATFORM_PKG} is installed but its binary failed to load: `)).toBe(true)
    expect(message).toContain(node)
    expect(message).not.toMatch(/\n/)
  })

  test('drop-in install under the name dht-prom-client', () => {
    const dropin = path.join(tmp, 'dropin')
    const probe = 'const D = require("dht-prom-client"); const S = require("dht-prom-client/scraper");' +
      'import("dht-prom-client").then((m) => console.log(JSON.stringify({ name: require("dht-prom-client/package.json").name,' +
      ' d: D.name, s: S.name, esm: m.default === D, key: D.normalizeKey(D.keyPair().publicKey).length })))'
    const res = run([NODE, '-e', probe], { cwd: dropin })
    expect(res.stderr).toBe('')
    expect(JSON.parse(res.stdout)).toEqual({ name: pkg.name, d: 'DhtPromClient', s: 'DhtPromScraper', esm: true, key: 52 })
  })

  test('TypeScript (node16 resolution) finds the types of both entries and both forms', () => {
    const app = path.join(tmp, 'app')
    fs.writeFileSync(path.join(app, 'usage.mts'), `import DhtPromClient, { keyPair, decodeKey, normalizeKey } from '${pkg.name}'
import DhtPromScraper, { DhtPromScraper as Named } from '${pkg.name}/scraper'
const kp = keyPair()
const z32: string = normalizeKey(kp.publicKey)
const key: Buffer = decodeKey(z32)
const client: DhtPromClient = new DhtPromClient({ bootstrap: [], host: '127.0.0.1' }, () => '', key, 'a', key, 's')
const scraper: Named = new DhtPromScraper({ bootstrap: [] }, client.publicKey)
// @ts-expect-error: decodeKey takes a key, not a number
decodeKey(1)
export { scraper }
`)
    fs.writeFileSync(path.join(app, 'usage.cts'), `import DhtPromClient = require('${pkg.name}')
import DhtPromScraper = require('${pkg.name}/scraper')
const kp: DhtPromClient.KeyPair = DhtPromClient.keyPair()
const scraper: DhtPromScraper = new DhtPromScraper({ bootstrap: [] }, kp.publicKey)
// @ts-expect-error: normalizeKey takes a key, not an object
DhtPromClient.normalizeKey({})
export = scraper
`)
    const tsc = require.resolve('typescript/bin/tsc')
    const res = run([process.execPath, tsc, '--noEmit', '--strict', '--module', 'node16', '--moduleResolution', 'node16',
      '--target', 'es2022', '--types', 'node', '--typeRoots', path.join(ROOT, 'node_modules', '@types'),
      'usage.mts', 'usage.cts'], { cwd: app, env: process.env })
    expect(res.stdout + res.stderr).toBe('')
    expect(res.status).toBe(0)
  }, 60000)
})
