//! The runtime `keyward` runs on: tokio's multi-threaded one, one request thread (worker) per
//! CPU it may use (or `TOKIO_WORKER_THREADS`). With `KEYWARD_PIN_WORKERS=on`, each worker is
//! pinned to a CPU of its own when there is exactly one worker per CPU of the process's
//! affinity mask.
//!
//! What pinning changes: left to place them, Linux lets two busy workers take turns on one CPU
//! for a tick or two (4 ms) while the other CPU runs something else; every request held by the
//! waiting worker waits as long, and that wait is the p99. Pinned, each worker has its CPU, and
//! whatever else is busy on the machine shares a CPU with a worker instead. Measured on 2 cores
//! shared with wrk (`docs/benchmarks.md`, stop 48): WhoAmI's p99 fell from 4.5–4.8 ms to
//! 2.0–3.1 ms, but `/healthz`'s throughput fell from 0.83–0.89× of a bare hyper server to
//! 0.58–0.73×, because wrk no longer had a CPU to itself. A trade of throughput for tail on a
//! shared machine, so it is the operator's choice, off by default.
//!
//! Only when the workers and the CPUs match one to one: with fewer workers than CPUs (a
//! container's CPU quota, `TOKIO_WORKER_THREADS` set lower) the process does not own the CPUs,
//! and pinning would tie a worker to one that something else keeps busy.
//!
//! A thread inherits the CPUs of the thread that starts it. tokio's blocking threads are given
//! the process's whole mask back as they start; SQLite's connection threads are opened with
//! the store, on the main thread, and kept (`keyward_server::store`), so that none is opened
//! from a pinned worker.

use anyhow::{bail, Context};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use tokio::runtime::Runtime;

/// The variable that turns pinning off.
pub const PIN_WORKERS: &str = "KEYWARD_PIN_WORKERS";

/// Builds the runtime, pinning its workers where [`workers_to_pin`] says so.
pub fn build() -> anyhow::Result<Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    let setting = std::env::var(PIN_WORKERS).ok();
    let pinning = match setting.as_deref().map(str::trim) {
        Some("on") => affinity::plan(workers()),
        None | Some("" | "off") => None,
        Some(other) => bail!("{PIN_WORKERS} must be on or off, not {other:?}"),
    };
    if let Some(plan) = pinning {
        let _ = PINNED_CPUS.set(plan.cpus.clone());
        let plan = Arc::new(plan);
        let next = Arc::new(AtomicUsize::new(0));
        // Only workers park (`on_thread_park`); each takes the next CPU the first time.
        let pinned = plan.clone();
        builder.on_thread_park(move || affinity::pin_once(&pinned, &next));
        // Every thread the runtime starts (workers and blocking threads) begins with the
        // whole mask, whichever pinned worker started it.
        builder.on_thread_start(move || affinity::unpin(&plan));
    }
    builder.build().context("could not start the runtime")
}

/// How many workers tokio starts: `TOKIO_WORKER_THREADS`, or the CPUs the process may use.
fn workers() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .filter(|&n: &usize| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
}

/// The CPUs to pin `workers` workers to, one each, given the process's allowed `cpus`: all of
/// them when there is one worker per CPU (and more than one CPU), none otherwise.
pub fn workers_to_pin(workers: usize, cpus: &[usize]) -> Option<Vec<usize>> {
    (cpus.len() > 1 && workers == cpus.len()).then(|| cpus.to_vec())
}

#[cfg(target_os = "linux")]
mod affinity {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// What pinning needs: the process's allowed CPUs as found at start.
    pub struct Plan {
        pub cpus: Vec<usize>,
        mask: CpuSet,
    }

    pub fn plan(workers: usize) -> Option<Plan> {
        let mask = sched_getaffinity(Pid::from_raw(0)).ok()?;
        let allowed: Vec<usize> = (0..CpuSet::count())
            .filter(|&cpu| mask.is_set(cpu).unwrap_or(false))
            .collect();
        let cpus = super::workers_to_pin(workers, &allowed)?;
        Some(Plan { cpus, mask })
    }

    thread_local! {
        static PINNED: Cell<bool> = const { Cell::new(false) };
    }

    pub fn pin_once(plan: &Plan, next: &AtomicUsize) {
        if PINNED.with(Cell::get) {
            return;
        }
        PINNED.with(|p| p.set(true));
        let Some(&cpu) = plan.cpus.get(next.fetch_add(1, Ordering::Relaxed)) else {
            return;
        };
        let mut one = CpuSet::new();
        if one.set(cpu).is_ok() {
            // A failure leaves the worker where the kernel puts it, as without pinning.
            let _ = sched_setaffinity(Pid::from_raw(0), &one);
        }
    }

    pub fn unpin(plan: &Plan) {
        let _ = sched_setaffinity(Pid::from_raw(0), &plan.mask);
    }
}

#[cfg(not(target_os = "linux"))]
mod affinity {
    use std::sync::atomic::AtomicUsize;

    pub struct Plan {
        pub cpus: Vec<usize>,
    }

    pub fn plan(_workers: usize) -> Option<Plan> {
        None
    }

    pub fn pin_once(_plan: &Plan, _next: &AtomicUsize) {}

    pub fn unpin(_plan: &Plan) {}
}

/// The CPUs the workers were pinned to (in the order they took them), for the start-up log;
/// empty when they were not.
pub fn pinned_cpus() -> &'static [usize] {
    PINNED_CPUS.get().map_or(&[], Vec::as_slice)
}

static PINNED_CPUS: OnceLock<Vec<usize>> = OnceLock::new();

#[cfg(test)]
mod tests {
    use super::workers_to_pin;

    #[test]
    fn workers_are_pinned_only_one_to_one_with_the_cpus() {
        assert_eq!(workers_to_pin(2, &[0, 1]), Some(vec![0, 1]));
        assert_eq!(workers_to_pin(3, &[2, 5, 7]), Some(vec![2, 5, 7]));
        // Fewer workers than CPUs (a CPU quota, TOKIO_WORKER_THREADS): the CPUs are not ours.
        assert_eq!(workers_to_pin(1, &[0, 1]), None);
        assert_eq!(workers_to_pin(4, &[0, 1]), None);
        // One CPU: nothing to choose.
        assert_eq!(workers_to_pin(1, &[0]), None);
    }
}
