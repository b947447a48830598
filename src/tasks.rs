//! Ending groups of tasks within a bound, so that no close() can hang on a peer.

use std::time::Duration;

use tokio::task::JoinSet;

/// Waits up to `limit` for every task to finish, then aborts the rest and reaps them.
pub async fn join_all_within<T: 'static>(tasks: &mut JoinSet<T>, limit: Duration) {
    let finished = tokio::time::timeout(limit, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stragglers_are_aborted_at_the_limit() {
        let mut tasks = JoinSet::new();
        tasks.spawn(async {});
        tasks.spawn(std::future::pending::<()>());
        let started = tokio::time::Instant::now();
        join_all_within(&mut tasks, Duration::from_secs(1)).await;
        assert!(tasks.is_empty());
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }
}
