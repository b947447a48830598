//! What every fuzz target shares: a counting global allocator and [`within_budget`], which
//! turns "no allocation sized by an unchecked length" into a check that fails the run.
//!
//! libFuzzer's own `-malloc_limit_mb` needs a sanitizer's malloc hooks, which
//! `--sanitizer none` (the only build these machines can make) does not have; counting in
//! the Rust allocator works on stable and catches the allocation before it happens.
//!
//! A target wraps everything it does with one input in `within_budget(data.len(), BUDGET, ..)`.
//! Inside, an allocation above the budget is refused: the process aborts with
//! "memory allocation of N bytes failed", which libFuzzer saves as a crash, before a
//! gigabyte-sized request can touch the machine. After the closure, the peak of live bytes
//! is checked against the same budget (a panic naming the figures).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};

/// Bytes a target may have allocated at once while handling an input of `len` bytes:
/// `base + per_input_byte * len`. A decoder that sizes an allocation by a length or count
/// read from the input, instead of by what the input holds, exceeds any such budget.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub base: usize,
    pub per_input_byte: usize,
}

impl Budget {
    pub const fn new(base: usize, per_input_byte: usize) -> Self {
        Budget {
            base,
            per_input_byte,
        }
    }

    pub fn for_input(&self, len: usize) -> usize {
        self.base
            .saturating_add(self.per_input_byte.saturating_mul(len))
    }
}

/// Counts while a target's closure runs; passes everything to the system allocator.
pub struct CountingAlloc;

static TRACKING: AtomicBool = AtomicBool::new(false);
/// Bytes allocated minus bytes freed since tracking began (frees of older blocks can make
/// it negative, which only makes the peak lower than the true growth, never higher).
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
/// Largest single request, and the limit above which requests are refused.
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

fn grow(by: usize) {
    let by = isize::try_from(by).unwrap_or(isize::MAX);
    let live = LIVE.fetch_add(by, Relaxed).saturating_add(by);
    PEAK.fetch_max(live, Relaxed);
}

fn shrink(by: usize) {
    LIVE.fetch_sub(isize::try_from(by).unwrap_or(isize::MAX), Relaxed);
}

/// Records a request of `size` bytes; false if it is over the limit and must be refused.
fn admit(size: usize) -> bool {
    LARGEST.fetch_max(size, Relaxed);
    size <= LIMIT.load(Relaxed)
}

// SAFETY: every call is forwarded unchanged to `System`, or refused with a null pointer,
// which the GlobalAlloc contract allows; the counters are plain atomics.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if TRACKING.load(Relaxed) {
            if !admit(layout.size()) {
                return std::ptr::null_mut();
            }
            grow(layout.size());
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if TRACKING.load(Relaxed) {
            if !admit(layout.size()) {
                return std::ptr::null_mut();
            }
            grow(layout.size());
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if TRACKING.load(Relaxed) {
            shrink(layout.size());
        }
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if TRACKING.load(Relaxed) {
            if !admit(new_size) {
                return std::ptr::null_mut();
            }
            // Counted as the old block freed and the new one allocated at once.
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                shrink(layout.size() - new_size);
            }
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Stops counting even when the closure panics, so the panic report itself is not refused.
struct Tracking;

impl Tracking {
    fn start(limit: usize) -> Self {
        LIVE.store(0, Relaxed);
        PEAK.store(0, Relaxed);
        LARGEST.store(0, Relaxed);
        LIMIT.store(limit, Relaxed);
        TRACKING.store(true, Relaxed);
        Tracking
    }
}

impl Drop for Tracking {
    fn drop(&mut self) {
        TRACKING.store(false, Relaxed);
        LIMIT.store(usize::MAX, Relaxed);
    }
}

/// What one tracked run allocated.
#[derive(Debug, Clone, Copy)]
pub struct Allocated {
    /// Most bytes live at once.
    pub peak: usize,
    /// Largest single allocation (or reallocation) requested.
    pub largest: usize,
}

/// Runs `f` with allocations counted and limited to `budget.for_input(input_len)`;
/// panics (a crash libFuzzer keeps, with its input) when `f` needed more.
pub fn within_budget<R>(input_len: usize, budget: Budget, f: impl FnOnce() -> R) -> R {
    let limit = budget.for_input(input_len);
    let (result, allocated) = measure(limit, f);
    assert!(
        allocated.largest <= limit && allocated.peak <= limit,
        "allocation budget exceeded for an input of {input_len} bytes: largest request \
         {} bytes, peak {} bytes live, budget {limit} bytes ({budget:?})",
        allocated.largest,
        allocated.peak,
    );
    result
}

/// Runs `f` with allocations counted; requests above `limit` are refused.
pub fn measure<R>(limit: usize, f: impl FnOnce() -> R) -> (R, Allocated) {
    let tracking = Tracking::start(limit);
    let result = f();
    drop(tracking);
    let peak = usize::try_from(PEAK.load(Relaxed)).unwrap_or(0);
    (
        result,
        Allocated {
            peak,
            largest: LARGEST.load(Relaxed),
        },
    )
}

/// A digest of `value`'s Debug text, computed without allocating the text (which can be
/// several times the input: Debug escapes control characters), so targets can compare
/// what two values would print, e.g. that redacted fields do not change a log line.
pub fn debug_digest<T: std::fmt::Debug + ?Sized>(value: &T) -> u64 {
    use std::fmt::Write;
    use std::hash::Hasher;

    struct Digest(std::collections::hash_map::DefaultHasher);
    impl Write for Digest {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let mut digest = Digest(std::collections::hash_map::DefaultHasher::new());
    // Writing to the digest cannot fail; a Debug impl that errors digests what it wrote.
    let _ = write!(digest, "{value:?}");
    digest.0.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the counters are process-wide, and tests run on several threads.
    #[test]
    fn counts_refuses_and_reports() {
        let ((), allocated) = measure(usize::MAX, || {
            let v: Vec<u8> = Vec::with_capacity(1000);
            drop(v);
            let w: Vec<u8> = Vec::with_capacity(600);
            std::hint::black_box(&w);
        });
        assert!(allocated.largest >= 1000 && allocated.peak >= 1000 && allocated.peak < 1600);

        // A request over the limit is refused before the allocator sees it.
        let (refused, allocated) = measure(4096, || {
            Vec::<u8>::new().try_reserve_exact(1 << 40).is_err()
        });
        assert!(refused);
        assert_eq!(allocated.largest, 1 << 40);

        // Each block fits the budget, both at once do not: the check after the run fails.
        let two_blocks = || {
            let a = std::hint::black_box(vec![0u8; 80]);
            let b = std::hint::black_box(vec![0u8; 80]);
            a.len() + b.len()
        };
        let over = std::panic::catch_unwind(|| within_budget(10, Budget::new(100, 1), two_blocks));
        assert!(
            over.is_err(),
            "160 bytes live for a 10-byte input over a 110-byte budget"
        );
        assert_eq!(within_budget(10, Budget::new(300, 1), two_blocks), 160);
    }
}
