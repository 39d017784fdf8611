//! A fork-join pool whose workers spin between jobs, and whose caller takes part in each job.
//!
//! A decode step of a small model is a few hundred parallel regions (norms, fused matmuls,
//! attention) of a few microseconds to a few tens of microseconds each. A pool whose idle
//! workers sleep pays a wake-up per region, about as long as the region: in the browser's
//! threaded build (Web Workers on shared memory) rayon's pool made decode no faster on two
//! threads. Here workers spin for a while after each job, so the regions of one step reach
//! them without a wake-up; they sleep only when the engine has been idle that long (between
//! requests, or while the page handles a token), and the caller never sleeps.

use std::hint::spin_loop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Bits of the job state's item count and next-item fields.
const ITEM_BITS: u32 = 20;
const ITEM_MASK: u64 = (1 << ITEM_BITS) - 1;
/// Bits of the job state's epoch field (above the two item fields).
const EPOCH_MASK: u64 = (1 << (64 - 2 * ITEM_BITS)) - 1;
/// Most items one job takes; `for_each` runs more as several jobs.
const MAX_ITEMS: usize = ITEM_MASK as usize;
/// Times an idle worker looks for the next job before it sleeps (on the order of 100 µs).
const SPINS: u32 = 1 << 17;

thread_local! {
    /// Whether this thread is running an item of a job (a nested `for_each` then runs in place).
    static IN_JOB: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A job's closure, as the caller lends it to the workers for the job's duration.
type Job<'a> = &'a (dyn Fn(usize) + Sync);

/// What the caller and the workers share.
struct Shared {
    /// `epoch | items | next`: which job runs, how many items it has, the next one to claim.
    /// Claiming an item is one compare-and-swap of the whole word, so a worker that read an
    /// older job can never claim an item of a newer one.
    state: AtomicU64,
    /// The current job's closure (a `Job` on the caller's stack).
    job: AtomicPtr<()>,
    /// Items of the current job finished.
    done: AtomicUsize,
    /// Whether an item of the current job panicked.
    panicked: AtomicBool,
    /// Workers asleep (or about to sleep) on `wake`.
    sleepers: AtomicU32,
    /// With `wake`: where idle workers sleep.
    lock: Mutex<()>,
    wake: Condvar,
    /// Set when the pool is dropped: the workers return.
    shutdown: AtomicBool,
    /// One job at a time.
    caller: Mutex<()>,
}

fn pack(epoch: u64, items: u64, next: u64) -> u64 {
    (epoch << (2 * ITEM_BITS)) | (items << ITEM_BITS) | next
}

fn unpack(state: u64) -> (u64, u64, u64) {
    (
        state >> (2 * ITEM_BITS),
        (state >> ITEM_BITS) & ITEM_MASK,
        state & ITEM_MASK,
    )
}

impl Shared {
    /// Claims and runs items of job `epoch` until none is left.
    fn run_items(&self, epoch: u64) {
        loop {
            let state = self.state.load(Ordering::Acquire);
            let (e, items, next) = unpack(state);
            if e != epoch || next >= items {
                return;
            }
            // Read before the claim: if the claim succeeds, job `epoch` was still running, so
            // this is its closure (a newer one is written only after every item is claimed).
            let job = self.job.load(Ordering::Acquire) as *const Job<'_>;
            if self
                .state
                .compare_exchange_weak(state, state + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // SAFETY: the claim above succeeded under `epoch` with items left, so the caller is
            // inside `for_each` for this job (it returns only once every claimed item is done)
            // and `job` points at its closure.
            let f = unsafe { *job };
            IN_JOB.with(|flag| flag.set(true));
            if catch_unwind(AssertUnwindSafe(|| f(next as usize))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            IN_JOB.with(|flag| flag.set(false));
            self.done.fetch_add(1, Ordering::Release);
        }
    }

    /// A worker's life: wait for a job (spinning, then asleep), help with it, again.
    fn work(&self) {
        // Workers start before the first job (epoch 1), however late their thread runs.
        let mut seen = 0;
        loop {
            let mut spins = 0u32;
            let epoch = loop {
                if self.shutdown.load(Ordering::Acquire) {
                    return;
                }
                let epoch = unpack(self.state.load(Ordering::Acquire)).0;
                if epoch != seen {
                    break epoch;
                }
                spins += 1;
                if spins < SPINS {
                    spin_loop();
                    continue;
                }
                spins = 0;
                let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
                self.sleepers.fetch_add(1, Ordering::SeqCst);
                while unpack(self.state.load(Ordering::SeqCst)).0 == seen
                    && !self.shutdown.load(Ordering::SeqCst)
                {
                    guard = self
                        .wake
                        .wait(guard)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
            };
            seen = epoch;
            self.run_items(epoch);
        }
    }

    /// Wakes the sleeping workers (after a new job or the shutdown was published).
    fn wake_sleepers(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.wake.notify_all();
        }
    }
}

/// A fork-join pool of `workers` threads plus the calling thread.
pub struct SpinPool {
    shared: Arc<Shared>,
    workers: usize,
}

impl SpinPool {
    /// A pool whose `workers` threads `spawn` starts, each running the closure it is given until
    /// the pool is dropped. `spawn` decides what a thread is (an OS thread, a Web Worker).
    pub fn new(
        workers: usize,
        mut spawn: impl FnMut(Box<dyn FnOnce() + Send>) -> std::io::Result<()>,
    ) -> std::io::Result<SpinPool> {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleepers: AtomicU32::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            caller: Mutex::new(()),
        });
        let pool = SpinPool {
            shared: Arc::clone(&shared),
            workers,
        };
        for _ in 0..workers {
            let shared = Arc::clone(&shared);
            // On failure `pool` is dropped, which stops the workers already started.
            spawn(Box::new(move || shared.work()))?;
        }
        Ok(pool)
    }

    /// Threads that run a job: the workers and the caller.
    pub fn threads(&self) -> usize {
        self.workers + 1
    }

    /// Calls `f(i)` for every `i` in `0..n`, on the workers and the calling thread; returns when
    /// all calls have returned. Panics (after all have returned) if one of them panicked.
    pub fn for_each(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        if IN_JOB.with(|flag| flag.get()) {
            // Called from an item: the pool is busy with the outer job.
            (0..n).for_each(f);
            return;
        }
        if n > MAX_ITEMS {
            for base in (0..n).step_by(MAX_ITEMS) {
                let len = MAX_ITEMS.min(n - base);
                self.for_each(len, &|i| f(base + i));
            }
            return;
        }
        if n == 0 {
            return;
        }
        let _one_job = self
            .shared
            .caller
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let s = &*self.shared;
        let job: Job<'_> = f;
        s.job
            .store(&job as *const Job<'_> as *mut (), Ordering::Release);
        s.done.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        let epoch = (unpack(s.state.load(Ordering::Relaxed)).0 + 1) & EPOCH_MASK;
        s.state.store(pack(epoch, n as u64, 0), Ordering::SeqCst);
        s.wake_sleepers();
        s.run_items(epoch);
        while s.done.load(Ordering::Acquire) < n {
            spin_loop();
        }
        if s.panicked.load(Ordering::Relaxed) {
            panic!("a parallel task panicked");
        }
    }
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.wake_sleepers();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::SpinPool;

    fn pool(workers: usize) -> SpinPool {
        SpinPool::new(workers, |work| {
            std::thread::spawn(work);
            Ok(())
        })
        .unwrap()
    }

    /// Every item of every job runs exactly once, over many jobs in a row of varied sizes (the
    /// shape of a decode step), including after the workers fell asleep.
    #[test]
    fn every_item_of_every_job_runs_once() {
        let pool = pool(3);
        assert_eq!(pool.threads(), 4);
        let mut seed = 0x9e37_79b9_u32;
        for round in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let n = (seed % 97) as usize;
            let visits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.for_each(n, &|i| {
                visits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(visits.iter().all(|v| v.load(Ordering::Relaxed) == 1));
            if round % 1000 == 999 {
                // Long enough for the workers to go to sleep.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The workers take part (not only the caller), and a job with more items than one state
    /// word holds runs them all.
    #[test]
    fn workers_take_part_and_large_jobs_run_whole() {
        let pool = pool(2);
        let caller = std::thread::current().id();
        let elsewhere = AtomicUsize::new(0);
        pool.for_each(64, &|_| {
            std::thread::sleep(Duration::from_millis(1));
            if std::thread::current().id() != caller {
                elsewhere.fetch_add(1, Ordering::Relaxed);
            }
        });
        assert!(elsewhere.load(Ordering::Relaxed) > 0);
        let n = super::MAX_ITEMS + 5;
        let count = AtomicUsize::new(0);
        let sum = AtomicUsize::new(0);
        pool.for_each(n, &|i| {
            count.fetch_add(1, Ordering::Relaxed);
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), n);
        assert_eq!(sum.load(Ordering::Relaxed), n * (n - 1) / 2);
    }

    /// A `for_each` inside an item runs in place instead of waiting for the busy pool.
    #[test]
    fn a_nested_loop_runs_in_place() {
        let pool = pool(2);
        let count = AtomicUsize::new(0);
        pool.for_each(8, &|_| {
            pool.for_each(8, &|_| {
                count.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(count.load(Ordering::Relaxed), 64);
    }

    /// A panicking item reaches the caller, after the job's other items, and the pool goes on.
    #[test]
    fn a_panicking_item_panics_the_caller_and_the_pool_goes_on() {
        let pool = pool(2);
        let done = AtomicUsize::new(0);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.for_each(16, &|i| {
                assert_ne!(i, 7, "item 7 fails");
                done.fetch_add(1, Ordering::Relaxed);
            })
        }));
        assert!(caught.is_err());
        assert_eq!(done.load(Ordering::Relaxed), 15);
        let again = AtomicUsize::new(0);
        pool.for_each(16, &|_| {
            again.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(again.load(Ordering::Relaxed), 16);
    }
}
