//! The transport-independent half of the UDX test/benchmark peers: the modes, the
//! command protocol on stdin/stdout, the data pattern, the checksum and CPU time.
//!
//! Shared by `udx_peer` (this crate) and `benchmark/libudx-peer` (libudx 1.7.3), so that
//! the interop tests and the benchmark drive every implementation through the same
//! application code and only the transport differs. `benchmark/udx-native-peer.js` is the
//! same protocol for the C libudx (npm `udx-native`); keep the three in step.
//!
//! Protocol: the peer binds and prints `{"event":"listening","port":N}`. Then it runs
//! sessions, each one stream: with `--mode` in the arguments it runs that one session and
//! exits (0 only if it succeeded and closed cleanly); without, it reads one command per
//! stdin line, `<mode> <local-id> <remote-id> <remote-host> <remote-port> [mode args]`,
//! until `exit` or end of input. Per session it prints `{"event":"connected",...}` once the
//! stream exists and `{"event":"result",...}` when it has closed.
//!
//! Modes: `sink` (read to end; bytes, checksum, pattern check), `source <bytes>` (write the
//! pattern, end), `echo` (echo until the peer ends), `rtt <size> <count>` (ping-pong
//! against `echo`), `serve` (answer requests) and `client <ops>` (send requests), where a
//! request is `[u32 LE request length][u32 LE reply length][request bytes]` and the reply
//! is that many pattern bytes; `<ops>` is a comma list of `<req>:<reply>[x<count>]`.

#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// What a transport must offer the modes.
pub trait Transport {
    type Stream: AsyncRead + AsyncWrite + Unpin;
    fn port(&self) -> u16;
    fn open(&self, local_id: u32, remote_id: u32, remote: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>>;
    /// Waits until the stream (whose modes already ended it and read to EOF) has closed;
    /// returns the close reason as text (`"Done"` when clean) and extra JSON fields.
    fn finish(&self, stream: Self::Stream, limit: Duration) -> impl Future<Output = (String, String)>;
}

/// The byte pattern both ends agree on: xorshift32 words, little-endian, from a fixed
/// seed. Not periodic at any packet size, so a misplaced packet cannot go unnoticed.
pub struct Pattern {
    x: u32,
    spare: [u8; 4],
    spare_len: usize,
}

impl Default for Pattern {
    fn default() -> Self {
        Self { x: 0x9E37_79B9, spare: [0; 4], spare_len: 0 }
    }
}

impl Pattern {
    fn word(&mut self) -> [u8; 4] {
        let mut x = self.x;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.x = x;
        x.to_le_bytes()
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        let mut i = 0;
        while i < out.len() && self.spare_len > 0 {
            out[i] = self.spare[4 - self.spare_len];
            self.spare_len -= 1;
            i += 1;
        }
        let mut chunks = out[i..].chunks_exact_mut(4);
        for c in &mut chunks {
            c.copy_from_slice(&self.word());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let w = self.word();
            let n = rest.len();
            rest.copy_from_slice(&w[..n]);
            self.spare = w;
            self.spare_len = 4 - n;
        }
    }

    pub fn bytes(len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        Pattern::default().fill(&mut v);
        v
    }
}

/// FNV-1a, 64 bit: a checksum the JS side computes the same way.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// CPU time of this process (all threads) in nanoseconds: the scheduler's per-thread
/// runtime (ns resolution), or utime+stime in clock ticks where schedstat is missing.
pub fn cpu_ns() -> u64 {
    let mut total = 0u64;
    let mut found = false;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for entry in dir.flatten() {
            let path = entry.path().join("schedstat");
            if let Ok(s) = std::fs::read_to_string(path) {
                if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()) {
                    total += ns;
                    found = true;
                }
            }
        }
    }
    if found && total > 0 {
        return total;
    }
    // /proc/self/stat: fields after the ")" start at field 3; utime and stime are 14, 15.
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks * 10_000_000) // USER_HZ is 100 on Linux
        })
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
pub struct Command {
    pub mode: String,
    pub local_id: u32,
    pub remote_id: u32,
    pub remote: SocketAddr,
    pub args: Vec<String>,
}

impl Command {
    /// `<mode> <local-id> <remote-id> <remote-host> <remote-port> [args]`
    pub fn parse(line: &str) -> Result<Command, String> {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 5 {
            return Err(format!("expected '<mode> <local-id> <remote-id> <host> <port> [args]', got {line:?}"));
        }
        let num = |s: &str, what: &str| s.parse::<u32>().map_err(|_| format!("bad {what}: {s:?}"));
        let port = w[4].parse::<u16>().map_err(|_| format!("bad port: {:?}", w[4]))?;
        let host: std::net::IpAddr = w[3].parse().map_err(|_| format!("bad host: {:?}", w[3]))?;
        Ok(Command {
            mode: w[0].to_owned(),
            local_id: num(w[1], "local id")?,
            remote_id: num(w[2], "remote id")?,
            remote: SocketAddr::new(host, port),
            args: w[5..].iter().map(|s| s.to_string()).collect(),
        })
    }
}

/// A one-shot command: mode, local stream id, remote stream id, remote host, remote port
/// (or from stdin), the mode's own arguments.
pub type OnceCommand = (String, u32, u32, String, Option<u16>, Vec<String>);

/// The command-line options every peer takes.
pub struct Options {
    pub host: String,
    pub port: u16,
    pub timeout: Duration,
    /// A one-shot command from `--mode` & co (remote port may come from stdin).
    pub once: Option<OnceCommand>,
    pub threads: usize,
    pub extra: Vec<String>,
}

pub fn parse_options(argv: &[String]) -> Result<Options, String> {
    let mut o = Options { host: "127.0.0.1".into(), port: 0, timeout: Duration::from_secs(60), once: None, threads: 1, extra: Vec::new() };
    let mut mode = None;
    let (mut local_id, mut remote_id, mut remote_host, mut remote_port) = (1u32, 2u32, "127.0.0.1".to_string(), None);
    let mut i = 0;
    while i < argv.len() {
        let a = argv[i].as_str();
        let mut val = || -> Result<String, String> {
            i += 1;
            argv.get(i).cloned().ok_or_else(|| format!("{a} needs a value"))
        };
        match a {
            "--host" => o.host = val()?,
            "--port" => o.port = val()?.parse().map_err(|_| "bad --port")?,
            "--timeout" => o.timeout = Duration::from_secs_f64(val()?.parse::<f64>().map_err(|_| "bad --timeout")?),
            "--threads" => o.threads = val()?.parse().map_err(|_| "bad --threads")?,
            "--mode" => mode = Some(val()?),
            "--local-id" => local_id = val()?.parse().map_err(|_| "bad --local-id")?,
            "--remote-id" => remote_id = val()?.parse().map_err(|_| "bad --remote-id")?,
            "--remote-host" => remote_host = val()?,
            "--remote-port" => remote_port = Some(val()?.parse().map_err(|_| "bad --remote-port")?),
            _ => o.extra.push(argv[i].clone()),
        }
        i += 1;
    }
    if let Some(mode) = mode {
        o.once = Some((mode, local_id, remote_id, remote_host, remote_port, std::mem::take(&mut o.extra)));
    }
    Ok(o)
}

pub fn print(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Runs the peer: one-shot (`--mode`) or a command loop on stdin. Returns the exit code.
pub async fn run<T: Transport>(transport: T, opts: Options) -> i32 {
    print(&format!("{{\"event\":\"listening\",\"port\":{}}}", transport.port()));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    if let Some((mode, local_id, remote_id, host, port, args)) = opts.once.clone() {
        let port = match port {
            Some(p) => p,
            // The remote port on the first stdin line: lets the caller start us first.
            None => match lines.next_line().await {
                Ok(Some(l)) => match l.trim().parse() {
                    Ok(p) => p,
                    Err(_) => {
                        print(&format!("{{\"event\":\"error\",\"error\":{}}}", json_str(&format!("bad port line {l:?}"))));
                        return 2;
                    }
                },
                _ => return 2,
            },
        };
        let remote = match format!("{host}:{port}").parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => return 2,
        };
        let cmd = Command { mode, local_id, remote_id, remote, args };
        return if session(&transport, &cmd, opts.timeout).await { 0 } else { 1 };
    }
    let mut failures = 0;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            _ => break,
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "exit" {
            break;
        }
        if line == "cpu" {
            print(&format!("{{\"event\":\"cpu\",\"cpuNs\":{}}}", cpu_ns()));
            continue;
        }
        match Command::parse(line) {
            Ok(cmd) => {
                if !session(&transport, &cmd, opts.timeout).await {
                    failures += 1;
                }
            }
            Err(e) => {
                print(&format!("{{\"event\":\"error\",\"error\":{}}}", json_str(&e)));
                failures += 1;
            }
        }
    }
    if failures > 0 { 1 } else { 0 }
}

/// What a mode reports.
#[derive(Default)]
struct Outcome {
    received: u64,
    sent: u64,
    hash: Option<String>,
    pattern_ok: Option<bool>,
    elapsed_us: Option<u64>,
    times_us: Vec<u64>,
}

/// One stream, start to close. Prints `connected` and `result`; returns success.
async fn session<T: Transport>(transport: &T, cmd: &Command, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let cpu_start = cpu_ns();
    let mut stream = match transport.open(cmd.local_id, cmd.remote_id, cmd.remote).await {
        Ok(s) => s,
        Err(e) => {
            print(&format!("{{\"event\":\"result\",\"mode\":{},\"ok\":false,\"error\":{}}}", json_str(&cmd.mode), json_str(&e.to_string())));
            return false;
        }
    };
    print(&format!("{{\"event\":\"connected\",\"id\":{}}}", cmd.local_id));
    let start = Instant::now();
    let work = run_mode(&mut stream, cmd);
    let outcome = match tokio::time::timeout(limit, work).await {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("timed out after {limit:?}")),
    };
    let total_us = start.elapsed().as_micros() as u64;
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    let (close, extra) = match &outcome {
        Ok(_) => transport.finish(stream, left).await,
        Err(_) => {
            // Leave the stream to its Drop (it resets or ends it): report, do not hang.
            drop(stream);
            ("Error".to_string(), String::new())
        }
    };
    let ok = outcome.is_ok() && close == "Done" && outcome.as_ref().is_ok_and(|o| o.pattern_ok != Some(false));
    let mut line = format!(
        "{{\"event\":\"result\",\"mode\":{},\"id\":{},\"ok\":{},\"close\":{},\"totalUs\":{},\"cpuNs\":{},\"cpuTotalNs\":{}",
        json_str(&cmd.mode),
        cmd.local_id,
        ok,
        json_str(&close),
        total_us,
        cpu_ns().saturating_sub(cpu_start),
        cpu_ns()
    );
    match &outcome {
        Ok(o) => {
            line.push_str(&format!(",\"received\":{},\"sent\":{}", o.received, o.sent));
            if let Some(h) = &o.hash {
                line.push_str(&format!(",\"hash\":{}", json_str(h)));
            }
            if let Some(p) = o.pattern_ok {
                line.push_str(&format!(",\"patternOk\":{p}"));
            }
            if let Some(e) = o.elapsed_us {
                line.push_str(&format!(",\"elapsedUs\":{e}"));
            }
            if !o.times_us.is_empty() {
                let t: Vec<String> = o.times_us.iter().map(|t| t.to_string()).collect();
                line.push_str(&format!(",\"timesUs\":[{}]", t.join(",")));
            }
        }
        Err(e) => line.push_str(&format!(",\"error\":{}", json_str(e))),
    }
    if !extra.is_empty() {
        line.push(',');
        line.push_str(&extra);
    }
    line.push('}');
    print(&line);
    ok
}

const CHUNK: usize = 64 * 1024;

async fn run_mode<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, cmd: &Command) -> io::Result<Outcome> {
    let arg = |i: usize| -> io::Result<u64> {
        cmd.args
            .get(i)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: missing or bad argument {}", cmd.mode, i + 1)))
    };
    match cmd.mode.as_str() {
        "sink" => sink(s).await,
        "source" => source(s, arg(0)?).await,
        "echo" => echo(s).await,
        "rtt" => rtt(s, arg(0)? as usize, arg(1)? as usize).await,
        "serve" => serve(s).await,
        "client" => {
            let ops = cmd.args.first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "client: missing ops"))?;
            client(s, &parse_ops(ops)?).await
        }
        other => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown mode {other:?}"))),
    }
}

/// Reads to EOF: byte count, checksum, and whether the bytes are the pattern.
async fn sink<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<Outcome> {
    let mut buf = vec![0u8; CHUNK];
    let mut expect = vec![0u8; CHUNK];
    let mut pattern = Pattern::default();
    let mut fnv = Fnv::default();
    let mut o = Outcome { pattern_ok: Some(true), ..Default::default() };
    let mut first: Option<Instant> = None;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        fnv.update(&buf[..n]);
        pattern.fill(&mut expect[..n]);
        if buf[..n] != expect[..n] {
            o.pattern_ok = Some(false);
        }
        o.received += n as u64;
    }
    o.elapsed_us = Some(first.map_or(0, |t| t.elapsed().as_micros() as u64));
    o.hash = Some(fnv.hex());
    s.shutdown().await?;
    Ok(o)
}

/// Writes `len` pattern bytes, ends, and reads to the peer's end.
async fn source<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, len: u64) -> io::Result<Outcome> {
    let start = Instant::now();
    let mut pattern = Pattern::default();
    let mut fnv = Fnv::default();
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        pattern.fill(&mut buf[..n]);
        fnv.update(&buf[..n]);
        s.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    s.shutdown().await?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await?;
    Ok(Outcome {
        sent: len,
        received: rest.len() as u64,
        hash: Some(fnv.hex()),
        elapsed_us: Some(start.elapsed().as_micros() as u64),
        ..Default::default()
    })
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<Outcome> {
    let mut buf = vec![0u8; CHUNK];
    let mut fnv = Fnv::default();
    let mut o = Outcome::default();
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        fnv.update(&buf[..n]);
        s.write_all(&buf[..n]).await?;
        o.received += n as u64;
        o.sent += n as u64;
    }
    o.hash = Some(fnv.hex());
    s.shutdown().await?;
    Ok(o)
}

/// `count` round trips of `size` bytes against `echo`; checks every echo.
async fn rtt<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, size: usize, count: usize) -> io::Result<Outcome> {
    let msg = Pattern::bytes(size);
    let mut back = vec![0u8; size];
    let mut o = Outcome { pattern_ok: Some(true), ..Default::default() };
    for _ in 0..count {
        let t = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
        o.times_us.push(t.elapsed().as_micros() as u64);
        if back != msg {
            o.pattern_ok = Some(false);
        }
        o.sent += size as u64;
        o.received += size as u64;
    }
    end_clean(s, &mut o).await?;
    Ok(o)
}

/// Answers `[req len][reply len][req]` with `reply len` pattern bytes until the peer ends.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<Outcome> {
    let mut reply = Vec::new();
    let mut scratch = vec![0u8; CHUNK];
    let mut o = Outcome::default();
    loop {
        let mut head = [0u8; 8];
        // EOF at a request boundary is the normal end.
        let n = s.read(&mut head[..1]).await?;
        if n == 0 {
            break;
        }
        s.read_exact(&mut head[1..]).await?;
        let req = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let reply_len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let mut left = req;
        while left > 0 {
            let n = left.min(scratch.len());
            s.read_exact(&mut scratch[..n]).await?;
            left -= n;
        }
        if reply.len() < reply_len {
            reply = Pattern::bytes(reply_len);
        }
        s.write_all(&reply[..reply_len]).await?;
        o.received += 8 + req as u64;
        o.sent += reply_len as u64;
    }
    s.shutdown().await?;
    Ok(o)
}

#[derive(Debug, Clone, Copy)]
pub struct Op {
    pub req: usize,
    pub reply: usize,
    pub count: usize,
}

pub fn parse_ops(spec: &str) -> io::Result<Vec<Op>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("bad ops {spec:?} (want <req>:<reply>[x<count>],...)"));
    spec.split(',')
        .map(|op| {
            let (rr, count) = match op.split_once('x') {
                Some((rr, c)) => (rr, c.parse().map_err(|_| bad())?),
                None => (op, 1),
            };
            let (req, reply) = rr.split_once(':').ok_or_else(bad)?;
            Ok(Op { req: req.parse().map_err(|_| bad())?, reply: reply.parse().map_err(|_| bad())?, count })
        })
        .collect()
}

/// Sends the requests in order, timing each from its first byte written to its reply's
/// last byte read, and checks every reply against the pattern.
async fn client<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, ops: &[Op]) -> io::Result<Outcome> {
    let max_req = ops.iter().map(|o| o.req).max().unwrap_or(0);
    let max_reply = ops.iter().map(|o| o.reply).max().unwrap_or(0);
    let body = Pattern::bytes(max_req);
    let expect = Pattern::bytes(max_reply);
    let mut reply = vec![0u8; max_reply];
    let mut frame = Vec::with_capacity(8 + max_req);
    let mut o = Outcome { pattern_ok: Some(true), ..Default::default() };
    for op in ops {
        frame.clear();
        frame.extend_from_slice(&(op.req as u32).to_le_bytes());
        frame.extend_from_slice(&(op.reply as u32).to_le_bytes());
        frame.extend_from_slice(&body[..op.req]);
        for _ in 0..op.count {
            let t = Instant::now();
            s.write_all(&frame).await?;
            s.read_exact(&mut reply[..op.reply]).await?;
            o.times_us.push(t.elapsed().as_micros() as u64);
            if reply[..op.reply] != expect[..op.reply] {
                o.pattern_ok = Some(false);
            }
            o.sent += frame.len() as u64;
            o.received += op.reply as u64;
        }
    }
    end_clean(s, &mut o).await?;
    Ok(o)
}

/// Ends our side, then reads the peer's end: anything it still sends is a pattern error.
async fn end_clean<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, o: &mut Outcome) -> io::Result<()> {
    s.shutdown().await?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await?;
    if !rest.is_empty() {
        o.pattern_ok = Some(false);
    }
    Ok(())
}
