//! An ordered, bounded, parallel map: jobs produced in order, transformed on every core, consumed in
//! the same order.
//!
//! Compression (gzip segments, VMDK grains) is independent per job, so it parallelises trivially; the
//! output must still be byte-identical whatever the thread timing, so results are re-sequenced before
//! the sink sees them. Channels are bounded, so at most `2 × depth + workers` jobs are alive at once:
//! memory stays bounded however large the disk is.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::{anyhow, Result};

/// Number of compression workers: every core the process may use.
pub fn worker_count() -> usize {
    thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Runs `work` over the items of `source` on `worker_count()` threads and feeds the results to
/// `sink` in source order. The first error (from any stage) stops the pipeline and is returned.
pub fn ordered_map<T, R, S, W, K>(source: S, work: W, mut sink: K) -> Result<()>
where
    T: Send,
    R: Send,
    S: Iterator<Item = Result<T>> + Send,
    W: Fn(T) -> Result<R> + Sync,
    K: FnMut(R) -> Result<()>,
{
    let workers = worker_count();
    let depth = 2 * workers;
    let (job_tx, job_rx) = sync_channel::<(u64, T)>(depth);
    let (res_tx, res_rx) = sync_channel::<(u64, Result<R>)>(depth);
    // Owned by the workers only: when the last worker quits, the receiver drops and a blocked
    // producer's `send` fails instead of waiting forever.
    let job_rx = Arc::new(Mutex::new(job_rx));
    let work = &work;

    thread::scope(|scope| -> Result<()> {
        let producer = scope.spawn(move || -> Result<()> {
            for (seq, item) in (0u64..).zip(source) {
                // A closed channel means the consumer stopped on an error; it reports that one.
                if job_tx.send((seq, item?)).is_err() {
                    break;
                }
            }
            Ok(())
        });
        for _ in 0..workers {
            let res_tx = res_tx.clone();
            let job_rx = Arc::clone(&job_rx);
            scope.spawn(move || worker_loop(&job_rx, res_tx, work));
        }
        drop(res_tx);
        drop(job_rx);

        let consumed = consume_in_order(res_rx, &mut sink);
        let produced = producer
            .join()
            .map_err(|_| anyhow!("reader thread panicked"))?;
        consumed.and(produced)
    })
}

/// Takes jobs until the job channel closes; stops early if the results side has gone away.
fn worker_loop<T, R, W>(
    jobs: &Mutex<Receiver<(u64, T)>>,
    results: std::sync::mpsc::SyncSender<(u64, Result<R>)>,
    work: &W,
) where
    W: Fn(T) -> Result<R>,
{
    loop {
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, item)) = next else { return };
        if results.send((seq, work(item))).is_err() {
            return;
        }
    }
}

/// Re-sequences results and hands them to `sink`; returns on the first error, which drops the
/// receiver and so unblocks and stops the workers and the producer.
fn consume_in_order<R, K>(results: Receiver<(u64, Result<R>)>, sink: &mut K) -> Result<()>
where
    K: FnMut(R) -> Result<()>,
{
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    for (seq, result) in results {
        pending.insert(seq, result);
        while let Some(result) = pending.remove(&next) {
            sink(result?)?;
            next += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_arrive_in_source_order() -> Result<()> {
        let mut seen = Vec::new();
        ordered_map(
            (0..1000u64).map(Ok),
            |x| {
                // Uneven work so that completion order differs from source order.
                if x % 7 == 0 {
                    thread::sleep(std::time::Duration::from_micros(200));
                }
                Ok(x * 2)
            },
            |r| {
                seen.push(r);
                Ok(())
            },
        )?;
        assert_eq!(seen, (0..1000u64).map(|x| x * 2).collect::<Vec<_>>());
        Ok(())
    }

    #[test]
    fn an_error_in_a_worker_is_returned() {
        let r = ordered_map(
            (0..100u64).map(Ok),
            |x| {
                if x == 42 {
                    Err(anyhow!("boom at 42"))
                } else {
                    Ok(x)
                }
            },
            |_| Ok(()),
        );
        assert!(format!("{:#}", r.unwrap_err()).contains("boom at 42"));
    }
}
