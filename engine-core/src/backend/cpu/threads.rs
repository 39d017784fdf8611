//! The CPU backend's worker pool: a dedicated rayon pool natively, a [`SpinPool`] whose threads
//! the browser's threaded build starts as Web Workers, else the calling thread.

use std::sync::Arc;

use super::spin_pool::SpinPool;

/// A raw pointer that may be shared between workers writing disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub *mut T);

impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    pub fn get(self) -> *mut T {
        self.0
    }
}
// SAFETY: users only write disjoint elements from different workers.
unsafe impl<T> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SharedMut<T> {}

/// Runs data-parallel loops on a fixed number of worker threads.
pub struct Pool {
    threads: usize,
    #[cfg(feature = "std-threads")]
    pool: Option<rayon::ThreadPool>,
    spin: Option<Arc<SpinPool>>,
}

impl Pool {
    /// A pool of `threads` workers (0 = one per available core). Without the `std-threads`
    /// feature the pool runs everything on the calling thread.
    pub fn new(threads: usize) -> Pool {
        #[cfg(feature = "std-threads")]
        {
            let threads = if threads == 0 {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                threads
            };
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("tandem-cpu-{i}"))
                .build()
                .ok();
            let threads = if pool.is_some() { threads } else { 1 };
            Pool {
                threads,
                pool,
                spin: None,
            }
        }
        #[cfg(not(feature = "std-threads"))]
        {
            let _ = threads;
            Pool {
                threads: 1,
                spin: None,
            }
        }
    }

    /// A pool on `spin`'s threads and the calling thread (in the browser's threaded build, Web
    /// Workers sharing the module's memory).
    pub fn from_spin(spin: Arc<SpinPool>) -> Pool {
        Pool {
            threads: spin.threads(),
            #[cfg(feature = "std-threads")]
            pool: None,
            spin: Some(spin),
        }
    }

    /// Number of workers.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` inside the pool, so that the loops it starts are cheap to fork.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        #[cfg(feature = "std-threads")]
        if let Some(pool) = &self.pool {
            return pool.install(f);
        }
        f()
    }

    /// Calls `f(i)` for every `i` in `0..n`, spread over the workers.
    pub fn for_each(&self, n: usize, f: impl Fn(usize) + Sync + Send) {
        if let Some(spin) = self.spin.as_ref().filter(|_| n > 1) {
            spin.for_each(n, &f);
            return;
        }
        #[cfg(feature = "std-threads")]
        if let Some(pool) = self.pool.as_ref().filter(|_| self.threads > 1 && n > 1) {
            use rayon::prelude::*;
            pool.install(|| (0..n).into_par_iter().for_each(f));
            return;
        }
        (0..n).for_each(f)
    }

    /// Splits `0..len` into about `parts_per_thread` ranges per worker (each a multiple of
    /// `align`, at least `min_len` long) and calls `f` on each, in parallel.
    pub fn for_ranges(
        &self,
        len: usize,
        align: usize,
        min_len: usize,
        parts_per_thread: usize,
        f: impl Fn(std::ops::Range<usize>) + Sync + Send,
    ) {
        let align = align.max(1);
        let parts = (self.threads * parts_per_thread).max(1);
        let mut chunk = len.div_ceil(parts).max(min_len.max(1));
        chunk = chunk.div_ceil(align) * align;
        let n = len.div_ceil(chunk.max(1));
        self.for_each(n, |i| {
            let start = i * chunk;
            f(start..(start + chunk).min(len))
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{Pool, SpinPool};

    /// A pool on started threads (as the browser build's Web Workers) reports them with the
    /// caller, and its loops visit every index once.
    #[test]
    fn a_pool_on_started_threads_runs_every_index_once() {
        let spin = SpinPool::new(2, |work| {
            std::thread::spawn(work);
            Ok(())
        })
        .unwrap();
        let pool = Pool::from_spin(Arc::new(spin));
        assert_eq!(pool.threads(), 3);
        let visits: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
        pool.for_ranges(visits.len(), 4, 1, 4, |range| {
            for v in &visits[range] {
                v.fetch_add(1, Ordering::Relaxed);
            }
        });
        assert!(visits.iter().all(|v| v.load(Ordering::Relaxed) == 1));
        assert_eq!(pool.install(|| 7), 7);
    }
}
