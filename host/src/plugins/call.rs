//! One plugin call of any world: a fresh `Store` from the instance's cached
//! pre-instance, run in its own task under a deadline, memory limits and
//! lowered hostcall fuel, the result size-checked and checked by its world,
//! and classified into an [`Outcome`]. The store is always dropped.

use super::context::{InstanceContext, PluginState};
use super::engine::PluginEngine;
use super::outcome::{DeadlineExceeded, Outcome, OutcomeKind, classify};
use super::worlds::{MAX_RESULT_BYTES, Prepared, Step, World};
use std::sync::Arc;
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
    let task = tokio::spawn(async move {
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
        drop(store);
        (result, limit_hit)
    });
    let abort = task.abort_handle();
    let joined = tokio::time::timeout_at(deadline, task).await;
    let duration = clock.elapsed();
    let finish = |kind, message: String| Outcome::new(kind, message, started.clone(), duration);
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
