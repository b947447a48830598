#!/usr/bin/env node
'use strict'
// npm run pack: the two tarballs a user of this machine installs, written to dist/:
//   dht-prom-client-rs-<version>.tgz             the root package (facades, loader, types, CLI)
//   dht-prom-client-rs-<platform>-<version>.tgz  this platform's package (the stripped .node)
//
//   node scripts/pack.js              release build (napi build --platform --release), then pack
//   node scripts/pack.js --prebuilt   no build: pack the .node and loader already in the work
//                                     tree (what `npm run build:debug` left); the install test
//                                     uses this when dist/ has no up-to-date tarballs
//   --out DIR                         write the tarballs to DIR instead of dist/
//
// Everything is staged in a temporary directory: the work tree is written to only in the
// output directory. The root package gets its optionalDependencies here, as
// `napi prepublish` adds them at release time: committed to package.json they would break
// `npm ci` until the platform packages exist on the registry.
const fs = require('fs')
const os = require('os')
const path = require('path')
const { spawnSync } = require('child_process')
const { platformKey } = require('../lib/platform')

const ROOT = path.join(__dirname, '..')
const GENERATED = ['binding.generated.js', 'binding.generated.d.ts']
const BUILD_TIMEOUT_MS = 60 * 60 * 1000
const STEP_TIMEOUT_MS = 5 * 60 * 1000

function run (cmd, args, { cwd = ROOT, timeout = STEP_TIMEOUT_MS, inherit = false } = {}) {
  const res = spawnSync(cmd, args, {
    cwd,
    timeout,
    encoding: 'utf8',
    stdio: inherit ? 'inherit' : 'pipe',
    maxBuffer: 64 * 1024 * 1024,
    shell: process.platform === 'win32' && !cmd.endsWith('.exe') && cmd !== process.execPath
  })
  if (res.error) throw new Error(`${cmd} ${args.join(' ')}: ${res.error.message}`)
  if (res.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited with ${res.status}${res.signal ? ` (${res.signal})` : ''}\n${res.stdout || ''}${res.stderr || ''}`)
  }
  return res.stdout
}

// npm as the one running this script (npm run pack), else the npm on PATH.
function npm (args, opts) {
  const execPath = process.env.npm_execpath
  if (execPath && /npm-cli\.c?js$/.test(execPath)) return run(process.execPath, [execPath, ...args], opts)
  return run(process.platform === 'win32' ? 'npm.cmd' : 'npm', args, opts)
}

function napi (args, opts) {
  const cliPkg = require.resolve('@napi-rs/cli/package.json', { paths: [ROOT] })
  const cli = path.join(path.dirname(cliPkg), require(cliPkg).bin.napi)
  return run(process.execPath, [cli, ...args], opts)
}

// napi's own reading of package.json's napi.targets ({ platformArchABI, platform, arch, abi }
// per triple). In a child process: @napi-rs/cli is ESM inside, which jest cannot require.
function parseTargets (targets) {
  const script = `const { parseTriple } = require('@napi-rs/cli')
process.stdout.write(JSON.stringify(${JSON.stringify(targets)}.map((t) => ({ triple: t, ...parseTriple(t) }))))`
  return JSON.parse(run(process.execPath, ['-e', script]))
}

function strip (file) {
  if (process.platform === 'linux') run('strip', ['--strip-unneeded', file])
  else if (process.platform === 'darwin') run('strip', ['-x', file])
  // Windows: the MSVC linker keeps symbols in a separate .pdb, never in the .node.
}

function packDir (dir, outDir) {
  const [info] = JSON.parse(npm(['pack', '--json', '--ignore-scripts', '--pack-destination', outDir], { cwd: dir }))
  return {
    file: path.join(outDir, info.filename),
    size: info.size,
    unpackedSize: info.unpackedSize,
    entries: info.files.map((f) => f.path)
  }
}

function copy (from, to) {
  fs.mkdirSync(path.dirname(to), { recursive: true })
  fs.copyFileSync(from, to)
}

function pack ({ prebuilt = false, outDir = path.join(ROOT, 'dist'), log = () => {} } = {}) {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
  const { binaryName, targets } = pkg.napi
  const parsed = parseTargets(targets)
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), `${pkg.name}-pack-`))
  try {
    const build = path.join(stage, 'build')
    fs.mkdirSync(build)
    if (prebuilt) {
      const node = `${binaryName}.${platformKey()}.node`
      for (const file of [node, ...GENERATED]) {
        if (!fs.existsSync(path.join(ROOT, file))) {
          throw new Error(`${file} is missing from the work tree: run \`npm run build:debug\` first`)
        }
        copy(path.join(ROOT, file), path.join(build, file))
      }
    } else {
      log('release build (napi build --platform --release): several minutes...')
      // Same cargo flags as `npm run build`, so the two share target/; the output goes to
      // the stage, never over the work tree's debug .node.
      napi(['build', '--platform', '--release', '--output-dir', build, '--js', GENERATED[0], '--dts', GENERATED[1]],
        { timeout: BUILD_TIMEOUT_MS, inherit: true })
    }
    const nodes = fs.readdirSync(build).filter((f) => f.startsWith(`${binaryName}.`) && f.endsWith('.node'))
    if (nodes.length !== 1) throw new Error(`expected one ${binaryName}.<platform>.node in the build output, found ${nodes.join(', ') || 'none'}`)
    const key = nodes[0].slice(binaryName.length + 1, -'.node'.length)
    const before = fs.statSync(path.join(build, nodes[0])).size
    strip(path.join(build, nodes[0]))
    const binary = { file: nodes[0], size: fs.statSync(path.join(build, nodes[0])).size, unstrippedSize: before }
    log(`${nodes[0]}: ${mb(before)} -> ${mb(binary.size)} stripped`)

    // The root package: npm's own file selection (package.json "files") from the work
    // tree, with the loader and types of this build.
    const rootDir = path.join(stage, 'root')
    const listed = JSON.parse(npm(['pack', '--dry-run', '--json', '--ignore-scripts']))[0].files.map((f) => f.path)
    for (const file of listed) {
      if (GENERATED.includes(file) || file === 'package.json') continue
      copy(path.join(ROOT, file), path.join(rootDir, file))
    }
    for (const file of GENERATED) copy(path.join(build, file), path.join(rootDir, file))
    const optionalDependencies = {}
    for (const t of parsed) optionalDependencies[`${pkg.name}-${t.platformArchABI}`] = pkg.version
    fs.writeFileSync(path.join(rootDir, 'package.json'), JSON.stringify({ ...pkg, optionalDependencies }, null, 2) + '\n')

    // The platform package: npm/<platform>/ with its binary, placed by `napi artifacts`
    // (which wants the npm dir inside the package; "files" keeps it out of the root tarball).
    const npmDir = path.join(rootDir, 'npm')
    fs.cpSync(path.join(ROOT, 'npm'), npmDir, { recursive: true, filter: (src) => !src.endsWith('.node') })
    // napi artifacts wants a binary for every configured target: give it this one only.
    const target = parsed.find((t) => t.platformArchABI === key)
    if (!target) throw new Error(`${key} is not one of package.json's napi.targets`)
    const config = path.join(stage, 'napi.json')
    fs.writeFileSync(config, JSON.stringify({ ...pkg.napi, targets: [target.triple] }))
    napi(['artifacts', '--cwd', rootDir, '--config-path', config, '--output-dir', build, '--npm-dir', npmDir])
    const platformDir = path.join(npmDir, key)
    const platformPkg = JSON.parse(fs.readFileSync(path.join(platformDir, 'package.json'), 'utf8'))
    if (platformPkg.version !== pkg.version) {
      throw new Error(`npm/${key}/package.json has version ${platformPkg.version}, the root package ${pkg.version}`)
    }
    if (!fs.existsSync(path.join(platformDir, nodes[0]))) throw new Error(`napi artifacts did not place ${nodes[0]} in npm/${key}/`)
    copy(path.join(ROOT, 'LICENSE'), path.join(platformDir, 'LICENSE'))

    fs.mkdirSync(outDir, { recursive: true })
    for (const old of fs.readdirSync(outDir)) {
      if (old.startsWith(`${pkg.name}-`) && old.endsWith('.tgz')) fs.rmSync(path.join(outDir, old))
    }
    const root = packDir(rootDir, outDir)
    const platform = packDir(platformDir, outDir)
    return { key, version: pkg.version, binary, root, platform, prebuilt }
  } finally {
    fs.rmSync(stage, { recursive: true, force: true })
  }
}

function mb (n) {
  return n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(2)} MiB`
}

if (require.main === module) {
  const args = process.argv.slice(2)
  const outAt = args.indexOf('--out')
  try {
    const res = pack({
      prebuilt: args.includes('--prebuilt'),
      outDir: outAt === -1 ? undefined : path.resolve(args[outAt + 1]),
      log: (line) => console.error(`pack: ${line}`)
    })
    for (const t of [res.root, res.platform]) {
      console.log(`${path.relative(process.cwd(), t.file)}  ${mb(t.size)} (unpacked ${mb(t.unpackedSize)}, ${t.entries.length} files)`)
    }
  } catch (err) {
    console.error(`pack: ${err.message}`)
    process.exitCode = 1
  }
}

module.exports = { pack, parseTargets, GENERATED }
