//! The one work queue that spreads a stack's layers over the cores:
//! reading many small things from many layer files is latency-bound, and
//! indexing many layers is CPU-bound, so both go one thread per core.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// `f(i, item)` of every item, in order, computed on up to one thread per
/// core, items handed out in order. Once one fails, no more are handed out
/// (the whole is refused anyway); the error returned is that of the first
/// item that failed, which is the same however the threads ran, since
/// every item before a failed one was handed out before it.
pub(super) fn try_map_in_parallel<T: Sync, R: Send, E: Send>(
    items: &[T],
    f: impl Fn(usize, &T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(items.len());
    if workers <= 1 {
        return items
            .iter()
            .enumerate()
            .map(|(i, item)| f(i, item))
            .collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<R, E>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(n) else { break };
                let result = f(n, item);
                let failed = result.is_err();
                if let Some(slot) = results.lock().unwrap_or_else(|p| p.into_inner()).get_mut(n) {
                    *slot = Some(result);
                }
                if failed {
                    next.store(items.len(), Ordering::Relaxed);
                }
            });
        }
    });
    // Items never handed out (after a failure) have no result; every one
    // before the first failure has.
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// [`try_map_in_parallel`] of an `f` that cannot fail.
pub(super) fn map_in_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(usize, &T) -> R + Sync,
) -> Vec<R> {
    match try_map_in_parallel(items, |i, item| Ok::<R, Infallible>(f(i, item))) {
        Ok(results) => results,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_item_order() {
        let items: Vec<u64> = (0..200).collect();
        let squares = map_in_parallel(&items, |i, &item| {
            assert_eq!(i as u64, item);
            item * item
        });
        assert_eq!(squares, items.iter().map(|i| i * i).collect::<Vec<_>>());
    }

    #[test]
    fn the_first_failing_item_wins_and_later_ones_are_not_started() {
        let items: Vec<usize> = (0..1000).collect();
        let started = AtomicUsize::new(0);
        let result = try_map_in_parallel(&items, |_, &item| {
            started.fetch_add(1, Ordering::Relaxed);
            match item {
                // A later failure that finishes first must not win.
                700 => Err(item),
                20 => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    Err(item)
                }
                _ => Ok(item),
            }
        });
        assert_eq!(result, Err(20));
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert!(started.load(Ordering::Relaxed) <= 700 + cores);
    }

    #[test]
    fn no_items_no_work() {
        let items: [u8; 0] = [];
        assert_eq!(
            try_map_in_parallel(&items, |_, _| Err::<u8, ()>(())),
            Ok(vec![])
        );
    }
}
