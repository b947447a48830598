'use strict'
// The NAT lab's network: network namespaces joined by veth pairs and a bridge, with nftables
// NAT routers, and nothing else. Every namespace is ours (prefix dpclab-); none is linked to
// the host's, and nothing is added to the host's network namespace: veth pairs are created
// from inside a lab namespace with both ends placed in lab namespaces, and sysctls and
// nftables rules are set through `ip netns exec` in the routers only.
//
//   node scripts/nat-lab/lab.js setup | teardown | status
//
// Address plan. The public segment must not be a bogon range: hyperdht skips bogon addresses
// (the `bogon` package: private ranges, and reserved ones, TEST-NET-1/2/3 and 198.18.0.0/15
// among them) in a server's advertised addresses, falling back to the address the relay saw.
// On TEST-NET, a scraper would never dial an advertised `host:0` (the crash of issue 11) nor
// any other advertised address, so the lab would not test what a user meets. 11.0.0.0/24 is
// not a bogon; no packet can reach the real owner of it, since no lab namespace has a path to
// the host's. The LANs behind the NATs are private (10.0.x.0/24), as at home.
const fs = require('fs')
const os = require('os')
const path = require('path')
const { execFileSync } = require('child_process')

const PREFIX = 'dpclab-'
const PUB = PREFIX + 'pub' // holds the bridge of the public segment, and nothing else
const PUBLIC_PREFIX = '11.0.0.'
const DHT_NODES = 6
const CMD_TIMEOUT_MS = 10000 // a single ip/nft/conntrack command

// Hosts on the public segment.
const PUBLIC_HOSTS = {
  dht: { ns: PREFIX + 'dht', ips: Array.from({ length: DHT_NODES }, (_, i) => PUBLIC_PREFIX + (11 + i)) },
  pub1: { ns: PREFIX + 'h-pub1', ips: [PUBLIC_PREFIX + '21'] },
  pub2: { ns: PREFIX + 'h-pub2', ips: [PUBLIC_PREFIX + '22'] }
}

// NAT routers, each with one host on its LAN. kind: how it maps and filters (see ruleset()).
const ROUTERS = {
  pp1: { kind: 'port-preserving', ns: PREFIX + 'r-pp1', wan: PUBLIC_PREFIX + '31', lan: '10.0.1' },
  pp2: { kind: 'port-preserving', ns: PREFIX + 'r-pp2', wan: PUBLIC_PREFIX + '32', lan: '10.0.2' },
  rnd: { kind: 'randomizing', ns: PREFIX + 'r-rnd', wan: PUBLIC_PREFIX + '33', lan: '10.0.3' },
  fc: { kind: 'full-cone', ns: PREFIX + 'r-fc', wan: PUBLIC_PREFIX + '34', lan: '10.0.4' }
}

// Every place a lab process can run: its namespace, its own address, and the address the
// rest of the lab sees it from (its router's WAN address when behind a NAT).
function hosts () {
  const out = {}
  for (const [name, h] of Object.entries(PUBLIC_HOSTS)) {
    out[name] = { name, ns: h.ns, ip: h.ips[0], ips: h.ips, publicIp: h.ips[0], router: null, nat: 'none' }
  }
  for (const [name, r] of Object.entries(ROUTERS)) {
    const ip = r.lan + '.2'
    out[name] = { name, ns: PREFIX + 'h-' + name, ip, ips: [ip], publicIp: r.wan, router: name, nat: r.kind }
  }
  return out
}

function bootstrap () {
  return PUBLIC_HOSTS.dht.ips.map((host) => ({ host, port: 49737 }))
}

function sh (cmd, args, { input, allowFail = false } = {}) {
  try {
    return execFileSync(cmd, args, { input, timeout: CMD_TIMEOUT_MS, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] })
  } catch (err) {
    if (allowFail) return null
    const stderr = err.stderr ? String(err.stderr).trim() : ''
    throw new Error(`${cmd} ${args.join(' ')} failed: ${stderr || err.message}`)
  }
}

const ip = (...args) => sh('ip', args)
const inNs = (ns, cmd, args, opts) => sh('ip', ['netns', 'exec', ns, cmd, ...args], opts)

function labNamespaces () {
  const out = sh('ip', ['netns', 'list'], { allowFail: true }) || ''
  return out.split('\n').map((line) => line.split(' ')[0]).filter((name) => name.startsWith(PREFIX))
}

// The routers' nftables rules. All three drop unsolicited inbound traffic: a packet from the
// WAN is forwarded only when conntrack knows its flow (or, full-cone, when its port is
// mapped), and the router itself accepts nothing from anyone.
function ruleset (router) {
  const lanHost = router.lan + '.2'
  const masquerade = {
    // Linux keeps the source port when it is free: the same mapping to every destination.
    'port-preserving': 'masquerade',
    // A new random port for every new flow: a different mapping per destination (symmetric).
    randomizing: 'masquerade fully-random',
    'full-cone': 'masquerade'
  }[router.kind]
  const fullCone = router.kind === 'full-cone'
  return `
table ip dpclab {
${fullCone
    ? `  # External ports the LAN host has sent from (the masquerade keeps them), refreshed by
  # each outgoing packet: any remote may send to them, as through a full-cone NAT.
  set mapped { type inet_service; flags timeout; timeout 120s; size 65535; }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "wan" udp dport @mapped dnat to ${lanHost}
  }
  chain remember {
    type filter hook postrouting priority 200; policy accept;
    oifname "wan" ip saddr ${router.wan} meta l4proto udp update @mapped { udp sport }
  }
`
    : ''}  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" ${masquerade}
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan" oifname "wan" accept
${fullCone ? '    iifname "wan" oifname "lan" ct status dnat accept\n' : ''}  }
  chain input {
    type filter hook input priority filter; policy drop;
    iifname "lo" accept
  }
}
`
}

// What the host's network namespace looks like; setup and teardown must leave it unchanged.
function hostSnapshot () {
  return JSON.stringify({
    links: sh('ip', ['-o', 'link', 'show']).replace(/\s+/g, ' '),
    addrs: sh('ip', ['-o', 'addr', 'show']).replace(/\s+/g, ' '),
    routes: sh('ip', ['route', 'show', 'table', 'all']),
    nft: sh('nft', ['list', 'ruleset'], { allowFail: true }),
    forward: sh('sysctl', ['-n', 'net.ipv4.ip_forward'], { allowFail: true })
  })
}

function namespaceList () {
  const list = [PUB]
  for (const h of Object.values(PUBLIC_HOSTS)) list.push(h.ns)
  for (const [name, r] of Object.entries(ROUTERS)) list.push(r.ns, PREFIX + 'h-' + name)
  return list
}

function addNamespace (ns) {
  ip('netns', 'add', ns)
  ip('-n', ns, 'link', 'set', 'lo', 'up')
  // No IPv6 in the lab: nothing but the IPv4 lab traffic on its links.
  inNs(ns, 'sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'], { allowFail: true })
}

// A veth pair created inside namespace `a`, its peer created directly in namespace `b`.
function veth (a, nameA, b, nameB) {
  ip('-n', a, 'link', 'add', nameA, 'type', 'veth', 'peer', 'name', nameB, 'netns', b)
}

function setup () {
  teardown()
  for (const ns of namespaceList()) addNamespace(ns)

  ip('-n', PUB, 'link', 'add', 'br0', 'type', 'bridge')
  ip('-n', PUB, 'link', 'set', 'br0', 'up')
  let port = 0
  const attach = (ns, ifname, addrs) => {
    const bridgePort = 'p' + port++
    veth(PUB, bridgePort, ns, ifname)
    ip('-n', PUB, 'link', 'set', bridgePort, 'master', 'br0')
    ip('-n', PUB, 'link', 'set', bridgePort, 'up')
    for (const addr of addrs) ip('-n', ns, 'addr', 'add', addr + '/24', 'dev', ifname)
    ip('-n', ns, 'link', 'set', ifname, 'up')
  }

  for (const h of Object.values(PUBLIC_HOSTS)) attach(h.ns, 'eth0', h.ips)
  for (const [name, r] of Object.entries(ROUTERS)) {
    const hostNs = PREFIX + 'h-' + name
    attach(r.ns, 'wan', [r.wan])
    veth(r.ns, 'lan', hostNs, 'eth0')
    ip('-n', r.ns, 'addr', 'add', r.lan + '.1/24', 'dev', 'lan')
    ip('-n', r.ns, 'link', 'set', 'lan', 'up')
    ip('-n', hostNs, 'addr', 'add', r.lan + '.2/24', 'dev', 'eth0')
    ip('-n', hostNs, 'link', 'set', 'eth0', 'up')
    ip('-n', hostNs, 'route', 'add', 'default', 'via', r.lan + '.1')
    inNs(r.ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1'])
    inNs(r.ns, 'nft', ['-f', '-'], { input: ruleset(r) })
  }
}

// Removes every namespace with the lab's prefix, ours or left over by an earlier run, after
// ending the processes still running in them (only lab processes can be in there).
function teardown () {
  const namespaces = labNamespaces()
  for (const ns of namespaces) {
    const pids = (sh('ip', ['netns', 'pids', ns], { allowFail: true }) || '').split('\n').filter(Boolean)
    for (const pid of pids) {
      try { process.kill(Number(pid), 'SIGKILL') } catch {}
    }
  }
  for (const ns of namespaces) sh('ip', ['netns', 'del', ns], { allowFail: true })
  const left = labNamespaces()
  if (left.length > 0) throw new Error(`could not remove lab namespaces: ${left.join(', ')}`)
}

// Forgets every NAT mapping: a fresh state between two runs.
function flushAll () {
  for (const r of Object.values(ROUTERS)) {
    inNs(r.ns, 'conntrack', ['-F'], { allowFail: true })
    if (r.kind === 'full-cone') inNs(r.ns, 'nft', ['flush', 'set', 'ip', 'dpclab', 'mapped'])
  }
}

// Linux's defaults: an unanswered UDP flow is forgotten after 30 s, an answered one after 120 s.
const UDP_TIMEOUTS = { unreplied: 30, stream: 120 }

// How long the router keeps an idle UDP mapping (seconds; the namespace's own conntrack
// sysctls). Home routers often keep one 30-60 s or less; null restores Linux's defaults.
function setUdpTimeouts (routerName, timeouts) {
  const { unreplied, stream } = timeouts || UDP_TIMEOUTS
  inNs(ROUTERS[routerName].ns, 'sysctl', ['-qw', `net.netfilter.nf_conntrack_udp_timeout=${unreplied}`, `net.netfilter.nf_conntrack_udp_timeout_stream=${stream}`])
}

// Deletes the router's conntrack entries of flows to or from `peer` (an address on the public
// segment): the NAT state a connection with that peer left. Returns how many were deleted.
function forget (routerName, peer) {
  const ns = ROUTERS[routerName].ns
  let deleted = 0
  for (const dir of ['--orig-dst', '--orig-src']) {
    const out = inNs(ns, 'conntrack', ['-D', dir, peer], { allowFail: true })
    if (out !== null) deleted += out.split('\n').filter(Boolean).length
  }
  return deleted
}

// How many conntrack entries the router holds for flows to or from `peer`.
function countFlows (routerName, peer) {
  const ns = ROUTERS[routerName].ns
  let n = 0
  for (const dir of ['--orig-dst', '--orig-src']) {
    const out = inNs(ns, 'conntrack', ['-L', dir, peer], { allowFail: true }) || ''
    n += out.split('\n').filter(Boolean).length
  }
  return n
}

// One lab at a time on a machine: setup() removes every dpclab- namespace, so a second run
// would tear down the first. The lock names the pid of the run holding it; a dead holder's
// lock is taken over.
const LOCK = path.join(os.tmpdir(), 'dpclab-nat-lab.lock')

function lockHolder () {
  let pid
  try { pid = Number(fs.readFileSync(LOCK, 'utf8')) } catch { return null }
  if (!Number.isInteger(pid) || pid <= 0) return null
  try {
    process.kill(pid, 0)
    return pid
  } catch (err) {
    return err.code === 'EPERM' ? pid : null
  }
}

function tryLock () {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(LOCK, String(process.pid), { flag: 'wx' })
      return true
    } catch (err) {
      if (err.code !== 'EEXIST') throw err
      if (lockHolder() !== null) return false
      fs.rmSync(LOCK, { force: true }) // its holder is gone
    }
  }
  return false
}

function unlock () {
  try {
    if (Number(fs.readFileSync(LOCK, 'utf8')) === process.pid) fs.rmSync(LOCK, { force: true })
  } catch {}
}

function status () {
  const out = []
  for (const ns of labNamespaces()) {
    out.push(`${ns}: ${sh('ip', ['-n', ns, '-br', 'addr'], { allowFail: true }).trim().replace(/\n/g, ' | ')}`)
  }
  return out.join('\n')
}

module.exports = {
  LOCK, tryLock, unlock, lockHolder,
  PREFIX, ROUTERS, hosts, bootstrap, setup, teardown, flushAll, forget, countFlows, setUdpTimeouts, hostSnapshot, labNamespaces, status
}

if (require.main === module) {
  const cmd = process.argv[2]
  if ((cmd === 'setup' || cmd === 'teardown') && !tryLock()) {
    console.error(`a NAT lab run (pid ${lockHolder()}) is using the lab; not touching it`)
    process.exit(1)
  }
  if (cmd === 'setup') setup()
  else if (cmd === 'teardown') teardown()
  else if (cmd === 'status') console.log(status())
  else {
    console.error('usage: node scripts/nat-lab/lab.js setup | teardown | status')
    process.exit(2)
  }
}
