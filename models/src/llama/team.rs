//! Helper threads for the matrix products of decoding, which come a few microseconds apart.
//!
//! A thread pool that sleeps between jobs (rayon's) pays a wake-up, tens of microseconds in a
//! virtual machine, for every product; a decoding step has hundreds of products of tens of
//! microseconds each. The team's helpers instead spin for a while after each job, as llama.cpp's
//! threads do, and sleep only when no job has come for [`SPIN`].
//!
//! Invariants:
//! - one caller at a time uses the team: a caller that finds it in use does all the work itself
//!   (tests and batched runs may call from many threads);
//! - the caller waits for every helper's part before returning, even when its own part panics,
//!   so a job may borrow from the caller's stack (the one `unsafe` below rests on this); a
//!   helper's panic is resumed on the caller.

use std::any::Any;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a helper spins for its next job before it sleeps.
const SPIN: Duration = Duration::from_micros(500);

const IDLE: u8 = 0;
const POSTED: u8 = 1;
const DONE: u8 = 2;

type Output = Result<Box<dyn Any + Send>, Box<dyn Any + Send>>;
type Job = Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>;
/// A job as its caller lends it to the helpers.
type Lent = &'static (dyn Fn(Range<usize>) -> Box<dyn Any + Send> + Sync);

/// One helper's mailbox.
struct Slot {
    state: AtomicU8,
    job: Mutex<Option<Job>>,
    output: Mutex<Option<Output>>,
    sleeping: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

struct Team {
    slots: Vec<Arc<Slot>>,
    in_use: AtomicBool,
}

/// The team, started on first use with one helper per core beyond the caller's.
fn team() -> &'static Team {
    static TEAM: OnceLock<Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let helpers = std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1);
        let slots: Vec<Arc<Slot>> = (0..helpers)
            .map(|_| {
                Arc::new(Slot {
                    state: AtomicU8::new(IDLE),
                    job: Mutex::new(None),
                    output: Mutex::new(None),
                    sleeping: AtomicBool::new(false),
                    lock: Mutex::new(()),
                    wake: Condvar::new(),
                })
            })
            .collect();
        let mut started = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            let slot = Arc::clone(slot);
            let spawned = std::thread::Builder::new().name(format!("sched-llama-{i}")).spawn(move || serve(&slot));
            if spawned.is_ok() {
                started.push(Arc::clone(&slots[i]));
            }
        }
        Team { slots: started, in_use: AtomicBool::new(false) }
    })
}

/// A helper's life: wait for a job (spinning, then sleeping), run it, post its output.
fn serve(slot: &Slot) {
    loop {
        let idle_since = Instant::now();
        while slot.state.load(Ordering::SeqCst) != POSTED {
            if idle_since.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut guard = slot.lock.lock().unwrap_or_else(|e| e.into_inner());
            slot.sleeping.store(true, Ordering::SeqCst);
            while slot.state.load(Ordering::SeqCst) != POSTED {
                guard = slot.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            slot.sleeping.store(false, Ordering::SeqCst);
        }
        let job = slot.job.lock().unwrap_or_else(|e| e.into_inner()).take();
        let output = match job {
            Some(job) => catch_unwind(AssertUnwindSafe(job)),
            None => Ok(Box::new(()) as Box<dyn Any + Send>),
        };
        *slot.output.lock().unwrap_or_else(|e| e.into_inner()) = Some(output);
        slot.state.store(DONE, Ordering::SeqCst);
    }
}

/// Splits `0..n` into one contiguous part per thread (the caller and the free helpers), no part
/// smaller than `min_part` unless `n` is, runs `job` on every part at once, and returns the
/// parts' outputs in order.
pub(crate) fn split<T: Send + 'static>(n: usize, min_part: usize, job: &(dyn Fn(Range<usize>) -> T + Sync)) -> Vec<T> {
    let team = team();
    let parts = (n / min_part.max(1)).clamp(1, team.slots.len() + 1);
    if parts == 1 || team.in_use.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_err() {
        return vec![job(0..n)];
    }
    let boxed = |range: Range<usize>| Box::new(job(range)) as Box<dyn Any + Send>;
    let lent: &(dyn Fn(Range<usize>) -> Box<dyn Any + Send> + Sync) = &boxed;
    // SAFETY: the helpers call `lent` only between being posted a job below and reporting it
    // DONE, and this function waits for every helper it posts to report DONE before it returns
    // or resumes a panic (its own part runs under `catch_unwind`), so `lent` and everything it
    // borrows outlive every call; the lifetime is erased only to pass it to the helpers.
    let lent: Lent =
        unsafe { std::mem::transmute::<&(dyn Fn(Range<usize>) -> Box<dyn Any + Send> + Sync), Lent>(lent) };
    let bounds = |i: usize| i * n / parts..(i + 1) * n / parts;
    let helpers = &team.slots[..parts - 1];
    for (i, slot) in helpers.iter().enumerate() {
        let range = bounds(i + 1);
        *slot.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(move || lent(range)));
        slot.state.store(POSTED, Ordering::SeqCst);
        if slot.sleeping.load(Ordering::SeqCst) {
            let _guard = slot.lock.lock().unwrap_or_else(|e| e.into_inner());
            slot.wake.notify_one();
        }
    }
    let mine = catch_unwind(AssertUnwindSafe(|| job(bounds(0))));
    let mut outputs = Vec::with_capacity(parts);
    let mut panic = false;
    for slot in helpers {
        while slot.state.load(Ordering::SeqCst) != DONE {
            std::hint::spin_loop();
        }
        let output = slot.output.lock().unwrap_or_else(|e| e.into_inner()).take();
        slot.state.store(IDLE, Ordering::SeqCst);
        match output.map(|o| o.map(|value| value.downcast::<T>())) {
            Some(Ok(Ok(value))) => outputs.push(*value),
            _ => panic = true,
        }
    }
    team.in_use.store(false, Ordering::SeqCst);
    match mine {
        Err(payload) => resume_unwind(payload),
        Ok(_) if panic => panic!("a helper thread of a matrix product panicked"),
        Ok(value) => {
            outputs.insert(0, value);
            outputs
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_cover_the_range_in_order() {
        for n in [0, 1, 5, 1000] {
            let parts = split(n, 10, &|range: Range<usize>| range.collect::<Vec<_>>());
            assert_eq!(parts.concat(), (0..n).collect::<Vec<_>>());
        }
        // Callers on many threads at once each get their whole range back.
        let results: Vec<Vec<usize>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|t| s.spawn(move || split(200 + t, 10, &|r: Range<usize>| r.collect::<Vec<_>>()).concat()))
                .collect();
            handles.into_iter().map(|h| h.join().expect("a caller")).collect()
        });
        for (t, result) in results.iter().enumerate() {
            assert_eq!(*result, (0..200 + t).collect::<Vec<_>>());
        }
    }
}
