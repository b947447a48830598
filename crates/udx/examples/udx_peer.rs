//! A UDX peer on this crate, for the interop tests with the C libudx
//! (`__test__/udx-interop.test.js`) and the UDX benchmark (`benchmark/udx.js`).
//!
//! ```text
//! udx_peer [--host 127.0.0.1] [--port 0] [--timeout 60] [--threads 1]
//!          [--mode sink|source N|echo|rtt SIZE COUNT|serve|client OPS
//!           --local-id 1 --remote-id 2 [--remote-host 127.0.0.1] [--remote-port P]]
//! udx_peer decode <hex datagram>...
//! ```
//!
//! Without `--mode`, sessions come as command lines on stdin; with `--mode` and no
//! `--remote-port`, the first stdin line is the remote port. See `common/peer.rs` for the
//! protocol. `decode` parses datagrams with this crate's packet parser and prints their
//! fields, so a test can check what another implementation put on the wire.

#[path = "common/peer.rs"]
mod peer;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use udx::packet::{Packet, FLAG_SACK};
use udx::{Socket, Stream};

struct Udx {
    socket: Socket,
}

impl peer::Transport for Udx {
    type Stream = Stream;

    fn port(&self) -> u16 {
        self.socket.local_addr().port()
    }

    async fn open(&self, local_id: u32, remote_id: u32, remote: SocketAddr) -> io::Result<Stream> {
        Stream::connect(&self.socket, local_id, remote_id, remote).map_err(|e| io::Error::other(e.to_string()))
    }

    async fn finish(&self, stream: Stream, limit: Duration) -> (String, String) {
        // The modes ended the stream and read the peer's end: wait for our END's ACK and
        // the close, each within what is left of the session's time.
        let reason = match tokio::time::timeout(limit, async {
            let _ = stream.flushed().await;
            stream.closed().await
        })
        .await
        {
            Ok(r) => format!("{r:?}"),
            Err(_) => "NotClosed".to_string(),
        };
        let mut extra = format!(
            "\"mtu\":{},\"srttUs\":{},\"unknownStreamPackets\":{}",
            stream.mtu(),
            stream.srtt().map_or(0, |d| d.as_micros()),
            self.socket.unknown_stream_packets()
        );
        if let Some(s) = stream.stats() {
            extra.push_str(&format!(
                ",\"stats\":{{\"packetsSent\":{},\"retransmits\":{},\"rtoCount\":{},\"tlpCount\":{},\"fastRecoveries\":{},\"droppedSacks\":{},\"droppedPackets\":{}}}",
                s.packets_sent, s.retransmits, s.rto_count, s.tlp_count, s.fast_recoveries, s.dropped_sacks, s.dropped_packets
            ));
        }
        (reason, extra)
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Prints what this crate's parser makes of each datagram (one JSON line each).
fn decode(args: &[String]) -> i32 {
    let mut code = 0;
    for a in args {
        let Some(bytes) = hex_decode(a) else {
            peer::print("{\"error\":\"not hex\"}");
            code = 1;
            continue;
        };
        match Packet::parse(&bytes) {
            None => peer::print("{\"udx\":false}"),
            Some(p) => {
                let h = p.header;
                let sacks: Vec<String> = if h.flags & FLAG_SACK != 0 {
                    p.sack_blocks().map(|(s, e)| format!("[{s},{e}]")).collect()
                } else {
                    Vec::new()
                };
                let payload = p.payload.map_or("null".to_string(), |b| format!("\"{}\"", b.iter().map(|x| format!("{x:02x}")).collect::<String>()));
                peer::print(&format!(
                    "{{\"udx\":true,\"flags\":{},\"dataOffset\":{},\"streamId\":{},\"recvWindow\":{},\"seq\":{},\"ack\":{},\"sacks\":[{}],\"payload\":{}}}",
                    h.flags, h.data_offset, h.stream_id, h.recv_window, h.seq, h.ack, sacks.join(","), payload
                ));
            }
        }
    }
    code
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("decode") {
        std::process::exit(decode(&argv[1..]));
    }
    let opts = match peer::parse_options(&argv) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("udx_peer: {e}");
            std::process::exit(2);
        }
    };
    let rt = if opts.threads > 1 {
        tokio::runtime::Builder::new_multi_thread().worker_threads(opts.threads).enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("udx_peer: runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = rt.block_on(async {
        let addr: SocketAddr = match format!("{}:{}", opts.host, opts.port).parse() {
            Ok(a) => a,
            Err(_) => {
                eprintln!("udx_peer: bad --host/--port");
                return 2;
            }
        };
        let socket = match Socket::bind(addr) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("udx_peer: bind {addr}: {e}");
                return 2;
            }
        };
        let code = peer::run(Udx { socket: socket.clone() }, opts).await;
        // UDX_PEER_LINGER_MS: stay up while closed streams keep their time-wait (as a
        // service would), so a peer's retransmitted END still gets its ACK.
        let linger = std::env::var("UDX_PEER_LINGER_MS").ok().and_then(|v| v.parse::<u64>().ok());
        if let Some(ms) = linger {
            let until = tokio::time::Instant::now() + Duration::from_millis(ms);
            while socket.stream_count() > 0 && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        socket.close();
        code
    });
    // Do not wait for the blocking stdin reader thread: the work is done.
    rt.shutdown_timeout(Duration::from_millis(100));
    std::process::exit(code);
}
