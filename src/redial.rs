//! A dial that outlives the request that started it, as protomux-rpc-client's `connect()`:
//! a request gives up at its own timeout, the dial goes on in the background (failed
//! attempts retried after the client's backoff) until it connects or is stopped, and a
//! later request finds the connection made.
//!
//! That matters behind a randomizing NAT: the punch there is a birthday search that often
//! needs more than the 10 s a registration waits. A dial dropped with the request starts
//! the search over every time and may never finish; the JS client's goes on and connects.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// protomux-rpc-client's default `backoffValues`: the wait after the first, second, third
/// and any later failed dial, each stretched by up to half again at random.
pub const BACKOFF: [Duration; 4] =
    [Duration::from_secs(5), Duration::from_secs(15), Duration::from_secs(60), Duration::from_secs(300)];

/// The wait after `failures` failed dials (1 for the first), jitter included.
pub fn backoff_after(failures: usize) -> Duration {
    let base = BACKOFF[failures.clamp(1, BACKOFF.len()) - 1];
    base + base.mul_f64(rand::random::<f64>() * 0.5)
}

/// One peer's connection, made once and shared, dialled in the background.
pub struct Redial<T> {
    current: Arc<watch::Sender<Option<Arc<T>>>>,
    dialing: Mutex<Option<JoinHandle<()>>>,
    alive: fn(&T) -> bool,
}

impl<T: Send + Sync + 'static> Redial<T> {
    /// `alive` says whether a connection made earlier can still be used.
    pub fn new(alive: fn(&T) -> bool) -> Self {
        Self { current: Arc::new(watch::channel(None).0), dialing: Mutex::new(None), alive }
    }

    fn dialing(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.dialing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live connection, waiting at most `limit` for one. Without one and with no dial
    /// under way, starts dialling with `dial` (`None`: that attempt failed); the dial goes
    /// on when the wait ends. Must be called inside a tokio runtime.
    pub async fn get<D, F>(&self, limit: Duration, mut dial: D) -> Option<Arc<T>>
    where
        D: FnMut() -> F + Send + 'static,
        F: Future<Output = Option<T>> + Send + 'static,
    {
        let alive = self.alive;
        let mut made = self.current.subscribe();
        {
            if let Some(connection) = made.borrow_and_update().as_ref().filter(|c| alive(c)) {
                return Some(connection.clone());
            }
            let mut dialing = self.dialing();
            if dialing.as_ref().is_none_or(|task| task.is_finished()) {
                let current = self.current.clone();
                *dialing = Some(tokio::spawn(async move {
                    let mut failures = 0;
                    loop {
                        if let Some(connection) = dial().await {
                            current.send_replace(Some(Arc::new(connection)));
                            return;
                        }
                        failures += 1;
                        tokio::time::sleep(backoff_after(failures)).await;
                    }
                }));
            }
        }
        let found = tokio::time::timeout(limit, made.wait_for(|c| c.as_ref().is_some_and(|c| alive(c)))).await;
        match found {
            Ok(Ok(connection)) => connection.clone(),
            _ => None,
        }
    }

    /// Stops a dial under way and hands over the connection made, if any.
    pub fn take(&self) -> Option<Arc<T>> {
        if let Some(task) = self.dialing().take() {
            task.abort();
        }
        self.current.send_replace(None)
    }
}

impl<T> Drop for Redial<T> {
    fn drop(&mut self) {
        if let Some(task) = self.dialing.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    struct Conn {
        closed: AtomicBool,
    }

    fn alive(c: &Conn) -> bool {
        !c.closed.load(Ordering::SeqCst)
    }

    /// A dialer whose attempts take `each` and fail until attempt number `succeeds`.
    fn dialer(attempts: Arc<AtomicUsize>, each: Duration, succeeds: usize) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Option<Conn>> + Send>> + Send + 'static {
        move || {
            let attempts = attempts.clone();
            Box::pin(async move {
                tokio::time::sleep(each).await;
                let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                (n >= succeeds).then(|| Conn { closed: AtomicBool::new(false) })
            })
        }
    }

    #[test]
    fn backoff_follows_the_js_client() {
        for (failures, base) in [(1, 5), (2, 15), (3, 60), (4, 300), (9, 300)] {
            let wait = backoff_after(failures);
            let base = Duration::from_secs(base);
            assert!(wait >= base && wait <= base.mul_f64(1.5), "{failures}: {wait:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_dial_outlives_the_request_and_the_next_one_gets_it() {
        let redial = Redial::new(alive);
        let attempts = Arc::new(AtomicUsize::new(0));
        // A punch that needs 25 s against requests that wait 10 s.
        let first = redial.get(Duration::from_secs(10), dialer(attempts.clone(), Duration::from_secs(25), 1)).await;
        assert!(first.is_none(), "the request gives up at its limit");
        tokio::time::sleep(Duration::from_secs(16)).await;
        let started = tokio::time::Instant::now();
        let second = redial.get(Duration::from_secs(10), dialer(attempts.clone(), Duration::from_secs(25), 1)).await;
        assert!(second.is_some(), "the first dial went on and connected");
        assert_eq!(started.elapsed(), Duration::ZERO, "no new dial, no wait");
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "one dial for both requests");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_dials_are_retried_after_the_backoff() {
        let redial = Redial::new(alive);
        let attempts = Arc::new(AtomicUsize::new(0));
        let started = tokio::time::Instant::now();
        // Fails twice (5-7.5 s, then 15-22.5 s of backoff), connects on the third.
        let got = redial.get(Duration::from_secs(60), dialer(attempts.clone(), Duration::from_secs(1), 3)).await;
        assert!(got.is_some());
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(23) && took <= Duration::from_secs(33), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_connection_is_dialled_again_and_take_stops_a_dial() {
        let redial = Redial::new(alive);
        let attempts = Arc::new(AtomicUsize::new(0));
        let first = redial.get(Duration::from_secs(5), dialer(attempts.clone(), Duration::from_secs(1), 1)).await.expect("connected");
        first.closed.store(true, Ordering::SeqCst);
        let second = redial.get(Duration::from_secs(5), dialer(attempts.clone(), Duration::from_secs(1), 1)).await.expect("dialled anew");
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(redial.take().is_some_and(|c| Arc::ptr_eq(&c, &second)), "take hands over the connection");

        // A dial under way when taken never connects.
        assert!(redial.get(Duration::from_secs(1), dialer(attempts.clone(), Duration::from_secs(3), 1)).await.is_none());
        assert!(redial.take().is_none());
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(attempts.load(Ordering::SeqCst), 2, "the taken dial was stopped before it finished");
        assert!(redial.take().is_none());
    }
}
