//! The UDX benchmark's peer on libudx 1.7.3: the same modes and JSON-lines protocol as
//! crates/udx/examples/udx_peer.rs (the application half is the same file), so
//! benchmark/udx.js compares transports, not peers.

#[path = "../../crates/udx/examples/common/peer.rs"]
mod peer;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use libudx::{UdxAsyncStream, UdxRuntime, UdxSocket};

struct Libudx {
    runtime: UdxRuntime,
    socket: UdxSocket,
    port: u16,
}

impl peer::Transport for Libudx {
    type Stream = UdxAsyncStream;

    fn port(&self) -> u16 {
        self.port
    }

    async fn open(&self, local_id: u32, remote_id: u32, remote: SocketAddr) -> io::Result<UdxAsyncStream> {
        let stream = self.runtime.create_stream(local_id).await.map_err(|e| io::Error::other(e.to_string()))?;
        stream.connect(&self.socket, remote_id, remote).await.map_err(|e| io::Error::other(e.to_string()))?;
        Ok(stream.into_async_stream())
    }

    async fn finish(&self, stream: UdxAsyncStream, _limit: Duration) -> (String, String) {
        // libudx 1.7.3 has no close reason: the modes' shutdown (its END acknowledged)
        // and read to EOF (the peer's END) succeeded, which is its clean close.
        drop(stream);
        ("Done".to_string(), String::new())
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let opts = match peer::parse_options(&argv) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("libudx-peer: {e}");
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
            eprintln!("libudx-peer: runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = rt.block_on(async {
        let addr: SocketAddr = match format!("{}:{}", opts.host, opts.port).parse() {
            Ok(a) => a,
            Err(_) => return 2,
        };
        let runtime = match UdxRuntime::new() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("libudx-peer: {e}");
                return 2;
            }
        };
        let socket = match runtime.create_socket().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("libudx-peer: {e}");
                return 2;
            }
        };
        if let Err(e) = socket.bind(addr).await {
            eprintln!("libudx-peer: bind {addr}: {e}");
            return 2;
        }
        let port = match socket.local_addr().await {
            Ok(a) => a.port(),
            Err(e) => {
                eprintln!("libudx-peer: {e}");
                return 2;
            }
        };
        peer::run(Libudx { runtime, socket, port }, opts).await
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    std::process::exit(code);
}
