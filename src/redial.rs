//! A dial that outlives the request that started it, as protomux-rpc-client's `connect()`:
//! a request gives up at its own timeout, the dial goes on in the background until it
//! connects, fails or is stopped, and a later request finds the connection made.
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

/// What happens after a failed dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Dial again after [`backoff_after`]; waiters wait out their limit (protomux-rpc-client).
    Backoff,
    /// Stop and hand the error to the waiters at once; the next request dials again
    /// (a command-line scrape tells "unreachable" from "no reply" by it).
    Report,
}

/// Where the dial stands. `attempt` numbers dials, so a waiter only takes a failure of the
/// dial it joined or a later one, never an old one.
enum Dial<T, E> {
    Idle,
    Connected(Arc<T>),
    Failed { attempt: u64, error: E },
}

/// Why [`Redial::get`] returned no connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missed<E> {
    /// The limit passed first; the dial goes on.
    TimedOut,
    /// The dial failed (only with [`OnFailure::Report`]).
    Failed(E),
}

/// One peer's connection, made once and shared, dialled in the background.
pub struct Redial<T, E = ()> {
    current: Arc<watch::Sender<Dial<T, E>>>,
    dialing: Mutex<Dialing>,
    alive: fn(&T) -> bool,
    on_failure: OnFailure,
}

#[derive(Default)]
struct Dialing {
    task: Option<JoinHandle<()>>,
    attempts: u64,
}

impl<T: Send + Sync + 'static, E: Clone + Send + Sync + 'static> Redial<T, E> {
    /// `alive` says whether a connection made earlier can still be used.
    pub fn new(alive: fn(&T) -> bool, on_failure: OnFailure) -> Self {
        Self { current: Arc::new(watch::channel(Dial::Idle).0), dialing: Mutex::default(), alive, on_failure }
    }

    fn dialing(&self) -> MutexGuard<'_, Dialing> {
        self.dialing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live connection, waiting at most `limit` for one. Without one and with no dial
    /// under way, starts dialling with `dial`; the dial goes on when the wait ends. Must be
    /// called inside a tokio runtime.
    pub async fn get<D, F>(&self, limit: Duration, mut dial: D) -> Result<Arc<T>, Missed<E>>
    where
        D: FnMut() -> F + Send + 'static,
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let (alive, on_failure) = (self.alive, self.on_failure);
        let mut made = self.current.subscribe();
        let joined = {
            if let Dial::Connected(connection) = &*made.borrow_and_update() {
                if alive(connection) {
                    return Ok(connection.clone());
                }
            }
            let mut dialing = self.dialing();
            if dialing.task.as_ref().is_none_or(|task| task.is_finished()) {
                dialing.attempts += 1;
                let first = dialing.attempts;
                let current = self.current.clone();
                dialing.task = Some(tokio::spawn(async move {
                    let mut failures = 0;
                    loop {
                        match dial().await {
                            Ok(connection) => {
                                current.send_replace(Dial::Connected(Arc::new(connection)));
                                return;
                            }
                            Err(error) if on_failure == OnFailure::Report => {
                                current.send_replace(Dial::Failed { attempt: first, error });
                                return;
                            }
                            Err(_) => {}
                        }
                        failures += 1;
                        tokio::time::sleep(backoff_after(failures)).await;
                    }
                }));
            }
            dialing.attempts
        };
        let settled = made.wait_for(|state| match state {
            Dial::Connected(connection) => alive(connection),
            Dial::Failed { attempt, .. } => *attempt >= joined,
            Dial::Idle => false,
        });
        let outcome = match tokio::time::timeout(limit, settled).await {
            Ok(Ok(state)) => match &*state {
                Dial::Connected(connection) => Ok(connection.clone()),
                Dial::Failed { error, .. } => Err(Missed::Failed(error.clone())),
                Dial::Idle => Err(Missed::TimedOut),
            },
            // The sender lives in `self`: it cannot have gone while we wait on it.
            Ok(Err(_)) | Err(_) => Err(Missed::TimedOut),
        };
        outcome
    }

    /// Stops a dial under way and hands over the connection made, if any.
    pub fn take(&self) -> Option<Arc<T>> {
        if let Some(task) = self.dialing().task.take() {
            task.abort();
        }
        match self.current.send_replace(Dial::Idle) {
            Dial::Connected(connection) => Some(connection),
            _ => None,
        }
    }
}

impl<T, E> Drop for Redial<T, E> {
    fn drop(&mut self) {
        if let Some(task) = self.dialing.get_mut().unwrap_or_else(|e| e.into_inner()).task.take() {
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

    /// A dialer whose attempts take `each` and fail (with their number) until attempt
    /// number `succeeds`.
    fn dialer(attempts: Arc<AtomicUsize>, each: Duration, succeeds: usize) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<Conn, usize>> + Send>> + Send + 'static {
        move || {
            let attempts = attempts.clone();
            Box::pin(async move {
                tokio::time::sleep(each).await;
                let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                if n >= succeeds { Ok(Conn { closed: AtomicBool::new(false) }) } else { Err(n) }
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
        let redial = Redial::new(alive, OnFailure::Backoff);
        let attempts = Arc::new(AtomicUsize::new(0));
        // A punch that needs 25 s against requests that wait 10 s.
        let first = redial.get(Duration::from_secs(10), dialer(attempts.clone(), Duration::from_secs(25), 1)).await;
        assert!(first.is_err(), "the request gives up at its limit");
        tokio::time::sleep(Duration::from_secs(16)).await;
        let started = tokio::time::Instant::now();
        let second = redial.get(Duration::from_secs(10), dialer(attempts.clone(), Duration::from_secs(25), 1)).await;
        assert!(second.is_ok(), "the first dial went on and connected");
        assert_eq!(started.elapsed(), Duration::ZERO, "no new dial, no wait");
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "one dial for both requests");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_dials_are_retried_after_the_backoff() {
        let redial = Redial::new(alive, OnFailure::Backoff);
        let attempts = Arc::new(AtomicUsize::new(0));
        let started = tokio::time::Instant::now();
        // Fails twice (5-7.5 s, then 15-22.5 s of backoff), connects on the third.
        let got = redial.get(Duration::from_secs(60), dialer(attempts.clone(), Duration::from_secs(1), 3)).await;
        assert!(got.is_ok());
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(23) && took <= Duration::from_secs(33), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_connection_is_dialled_again_and_take_stops_a_dial() {
        let redial = Redial::new(alive, OnFailure::Backoff);
        let attempts = Arc::new(AtomicUsize::new(0));
        let first = redial.get(Duration::from_secs(5), dialer(attempts.clone(), Duration::from_secs(1), 1)).await.expect("connected");
        first.closed.store(true, Ordering::SeqCst);
        let second = redial.get(Duration::from_secs(5), dialer(attempts.clone(), Duration::from_secs(1), 1)).await.expect("dialled anew");
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(redial.take().is_some_and(|c| Arc::ptr_eq(&c, &second)), "take hands over the connection");

        // A dial under way when taken never connects.
        assert!(redial.get(Duration::from_secs(1), dialer(attempts.clone(), Duration::from_secs(3), 1)).await.is_err());
        assert!(redial.take().is_none());
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(attempts.load(Ordering::SeqCst), 2, "the taken dial was stopped before it finished");
        assert!(redial.take().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reported_failure_ends_the_wait_and_the_next_request_dials_again() {
        let redial = Redial::new(alive, OnFailure::Report);
        let attempts = Arc::new(AtomicUsize::new(0));
        let started = tokio::time::Instant::now();
        let first = redial.get(Duration::from_secs(10), dialer(attempts.clone(), Duration::from_secs(1), 2)).await;
        assert_eq!(first.err(), Some(Missed::Failed(1)), "the failure, not the limit");
        assert_eq!(started.elapsed(), Duration::from_secs(1), "at once, no backoff");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "no dial in the background after a failure");
        assert!(redial.get(Duration::from_secs(10), dialer(attempts.clone(), Duration::from_secs(1), 2)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reported_dial_still_outlives_the_request_and_an_old_failure_is_not_taken() {
        let redial = Redial::new(alive, OnFailure::Report);
        let attempts = Arc::new(AtomicUsize::new(0));
        // Attempt 1 fails; attempt 2 is a 25 s punch against requests that wait 10 s.
        assert!(redial.get(Duration::from_secs(10), dialer(attempts.clone(), Duration::from_secs(1), 2)).await.is_err());
        let slow = || dialer(attempts.clone(), Duration::from_secs(25), 2);
        assert_eq!(redial.get(Duration::from_secs(10), slow()).await.err(), Some(Missed::TimedOut), "attempt 1's failure is old news");
        let started = tokio::time::Instant::now();
        assert!(redial.get(Duration::from_secs(20), slow()).await.is_ok(), "joined the dial under way");
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }
}
