//! One plugin call of any world: a fresh `Store` from the instance's cached
//! pre-instance, run in its own task under a deadline, memory limits and
//! lowered hostcall fuel, the result size-checked and checked by its world,
//! and classified into an [`Outcome`]. The store is always dropped.

use super::context::{InstanceContext, PluginState};
use super::engine::PluginEngine;
use super::outcome::{DeadlineExceeded, Outcome, OutcomeKind, classify};
use super::worlds::{MAX_RESULT_BYTES, Prepared, Step, World};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::{Engine, Store, UpdateDeadline};

/// Most bytes a guest may hand the host in one import call (an HTTP body of
/// up to 1 MiB plus headers).
const HOSTCALL_FUEL: usize = 2 << 20;
/// Most component handles (resources) live at once.
const MAX_HANDLES: usize = 1024;

/// What a call gets to work with.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub memory: usize,
    pub timeout: Duration,
}

/// Runs one call of world `W` to completion or its deadline. Never panics,
/// never outlives `limits.timeout` by more than the task's cancellation.
pub async fn call<W: World>(
    engine: &PluginEngine,
    prepared: Arc<Prepared>,
    cx: Arc<InstanceContext>,
    limits: CallLimits,
    input: W::Input,
) -> (Outcome, Option<W::Output>) {
    let started = crate::state::now_rfc3339();
    let clock = Instant::now();
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let engine_handle = engine.engine().clone();
    // Guest code runs only inside this task: the epoch ticks while it lives
    // (an aborted task drops the guard too).
    let busy = engine.busy();
    // Written by the task as it runs, so a call dropped at its deadline
    // still reports what it used.
    let cpu_ns = Arc::new(AtomicU64::new(0));
    let memory = Arc::new(AtomicU64::new(0));
    let (task_cpu, task_memory) = (cpu_ns.clone(), memory.clone());
    let task = tokio::spawn(CpuTimed::new(task_cpu, async move {
        let _busy = busy;
        let mut store = new_store(&engine_handle, cx, limits, deadline);
        let result = match W::pre(&prepared) {
            Some(pre) => W::invoke(pre, &mut store, input).await,
            None => Err(Step::Instantiate(wasmtime::format_err!(
                "the instance runs world {}, not {}",
                prepared.world().as_str(),
                W::WORLD.as_str()
            ))),
        };
        let limit_hit = store.data_mut().limiter.hit.take();
        task_memory.store(store.data().limiter.grown as u64, Ordering::Relaxed);
        drop(store);
        (result, limit_hit)
    }));
    let abort = task.abort_handle();
    let joined = tokio::time::timeout_at(deadline, task).await;
    let duration = clock.elapsed();
    let finish = |kind, message: String| {
        let mut o = Outcome::new(kind, message, started.clone(), duration);
        o.cpu = Duration::from_nanos(cpu_ns.load(Ordering::Relaxed));
        o.memory_bytes = memory.load(Ordering::Relaxed);
        o
    };
    match joined {
        Err(_) => {
            // A host import (network) outlived the deadline; epochs cannot
            // interrupt it, so drop the whole call.
            abort.abort();
            let message = format!("no result within the {} ms deadline", limits.timeout.as_millis());
            (finish(OutcomeKind::Timeout, message), None)
        }
        Ok(Err(join)) => (finish(OutcomeKind::HostError, format!("the call's task failed: {join}")), None),
        Ok(Ok((Err(Step::Instantiate(e)), hit))) => {
            let (kind, message) = match hit {
                Some(hit) => (OutcomeKind::Limit, hit),
                None => match classify(&e, None, limits.timeout) {
                    (OutcomeKind::Timeout, m) => (OutcomeKind::Timeout, m),
                    _ => (OutcomeKind::HostError, format!("cannot instantiate: {e:#}")),
                },
            };
            (finish(kind, message), None)
        }
        Ok(Ok((Err(Step::Call(e)), hit))) => {
            let (kind, message) = classify(&e, hit, limits.timeout);
            (finish(kind, message), None)
        }
        Ok(Ok((Ok(raw), _))) => {
            let size = W::raw_size(&raw);
            if size > MAX_RESULT_BYTES {
                let message = format!("result too large: {size} bytes; the limit is {MAX_RESULT_BYTES} bytes");
                return (finish(OutcomeKind::Limit, message), None);
            }
            match W::check(raw) {
                Ok(output) => (finish(OutcomeKind::Ok, String::new()), Some(output)),
                Err(message) => (finish(OutcomeKind::Limit, message), None),
            }
        }
    }
}

/// A fresh store for one call: memory limits, lowered hostcall fuel, and
/// an epoch check every tick that traps past `deadline` and otherwise
/// yields, so a busy guest never holds a tokio worker for long.
pub fn new_store(
    engine: &Engine,
    cx: Arc<InstanceContext>,
    limits: CallLimits,
    deadline: tokio::time::Instant,
) -> Store<PluginState> {
    let mut store = Store::new(engine, PluginState::new(cx, limits.memory, deadline));
    store.limiter(|state| &mut state.limiter);
    store.set_hostcall_fuel(HOSTCALL_FUEL);
    store.set_max_component_handles(MAX_HANDLES);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|cx| {
        if tokio::time::Instant::now() >= cx.data().deadline {
            Err(DeadlineExceeded.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store
}

/// A future whose polls are timed with the polling thread's CPU clock
/// (`CLOCK_THREAD_CPUTIME_ID`), the sum kept in `cpu_ns`: the CPU a plugin
/// call used, though it runs interleaved with other tasks on tokio's
/// workers (it yields at every epoch tick).
pub struct CpuTimed<F> {
    cpu_ns: Arc<AtomicU64>,
    inner: Pin<Box<F>>,
}

impl<F> CpuTimed<F> {
    pub fn new(cpu_ns: Arc<AtomicU64>, inner: F) -> Self {
        CpuTimed { cpu_ns, inner: Box::pin(inner) }
    }
}

/// The calling thread's CPU time, nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec() as u64))
        .unwrap_or(0)
}

impl<F: Future> Future for CpuTimed<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let before = thread_cpu_ns();
        let out = self.inner.as_mut().poll(cx);
        let used = thread_cpu_ns().saturating_sub(before);
        self.cpu_ns.fetch_add(used, Ordering::Relaxed);
        out
    }
}

#[cfg(test)]
mod cpu_tests {
    use super::*;

    #[tokio::test]
    async fn a_busy_future_is_charged_its_cpu_and_a_sleeping_one_little() {
        let busy = Arc::new(AtomicU64::new(0));
        CpuTimed::new(busy.clone(), async {
            let started = Instant::now();
            let mut x = 0u64;
            while started.elapsed() < Duration::from_millis(60) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        })
        .await;
        let idle = Arc::new(AtomicU64::new(0));
        CpuTimed::new(idle.clone(), tokio::time::sleep(Duration::from_millis(60))).await;
        let (busy, idle) = (busy.load(Ordering::Relaxed), idle.load(Ordering::Relaxed));
        assert!(busy >= 30_000_000, "a 60 ms spin is charged most of it: {busy} ns");
        assert!(idle < 10_000_000, "a 60 ms sleep is charged almost nothing: {idle} ns");
    }
}
