//! The physical floor under a 2 MB scrape, on our side: the secret stream's cipher as our
//! server runs it (peeroxide-dht's secretstream, XChaCha20-Poly1305 as libsodium's
//! crypto_secretstream), a memcpy, and the copies our reply path makes. `floor.js` is the
//! same for the JS stack. Medians over the runs.
//!   cargo run --release --example floor -- [bytes] [runs]

use std::hint::black_box;
use std::time::Instant;

use peeroxide_dht::secretstream::{Pull, Push};

/// Median milliseconds of `f` over `runs` runs, after 3 warm-ups.
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    if runs % 2 == 1 { ms[runs / 2] } else { (ms[runs / 2 - 1] + ms[runs / 2]) / 2.0 }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bytes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_097_152);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50).max(1);
    let line = "bench_metric{label=\"valeur ✓\"} 123456789\n";
    let text = line.repeat((bytes / line.len()).max(1));
    let plain = text.as_bytes().to_vec();
    let key = [7u8; 32];

    let mut results: Vec<(&str, f64)> = Vec::new();
    let (mut encrypt_only, _) = Push::new(&key);
    results.push(("encrypt 2 MB, one message (Push::next)", time(runs, || {
        black_box(encrypt_only.next(black_box(&plain)));
    })));
    let (mut push, header) = Push::new(&key);
    let mut pull = Pull::new(&key, &header);
    let both = time(runs, || {
        let sealed = push.next(&plain);
        let opened = pull.next(&sealed).expect("own ciphertext opens");
        black_box(opened);
    });
    results.push(("decrypt 2 MB, one message (Pull::next)", both - results[0].1));
    results.push(("encrypt + decrypt 2 MB, one message", both));
    results.push(("encrypt + decrypt 2 MB in 64 KiB messages", time(runs, || {
        for part in plain.chunks(64 * 1024) {
            let sealed = push.next(part);
            black_box(pull.next(&sealed).expect("own ciphertext opens"));
        }
    })));
    let mut copy = vec![0u8; plain.len()];
    results.push(("memcpy 2 MB (copy_from_slice)", time(runs, || {
        copy.copy_from_slice(black_box(&plain));
        black_box(&copy);
    })));
    // What each `to_vec` / `Vec::with_capacity` + copy on the reply path costs.
    results.push(("allocate + copy 2 MB (to_vec)", time(runs, || {
        black_box(black_box(&plain).to_vec());
    })));
    results.push(("UTF-8 check of 2 MB (str::from_utf8)", time(runs, || {
        black_box(std::str::from_utf8(black_box(&plain)).is_ok());
    })));

    println!("floor, Rust (peeroxide-dht secretstream), {} bytes, median of {runs}", plain.len());
    for (name, ms) in results {
        println!("  {name:<48} {ms:.3} ms");
    }
}
