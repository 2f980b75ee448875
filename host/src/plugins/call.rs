//! One plugin call: a fresh `Store` from the instance's cached pre-instance,
//! run in its own task under a deadline, memory limits and lowered hostcall
//! fuel, and classified into an [`Outcome`]. The store is always dropped.

use super::bindings::{health, metadata, network};
use super::context::{InstanceContext, PluginState};
use super::engine::PluginEngine;
use super::outcome::{DeadlineExceeded, Outcome, OutcomeKind, classify};
use super::results::{CallResult, RawResult, check_result};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Engine, Store, UpdateDeadline};

/// Most bytes a guest may hand the host in one import call (an HTTP body of
/// up to 1 MiB plus headers).
const HOSTCALL_FUEL: usize = 2 << 20;
/// Most component handles (resources) live at once.
const MAX_HANDLES: usize = 1024;

/// A component linked against one instance's grants, ready to instantiate.
pub enum Prepared {
    Health(health::HealthCheckPre<PluginState>),
    Metadata(metadata::MetadataProviderPre<PluginState>),
    Network(network::NetworkConfiguratorPre<PluginState>),
}

/// What a call gets to work with.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub memory: usize,
    pub timeout: Duration,
}

/// Input for worlds whose export takes arguments.
#[derive(Debug, Clone, Default)]
pub struct CallInput {
    /// For `network-configurator`: the metadata to plan from.
    pub metadata: Option<metadata::bronze::plugin::metadata::InstanceMetadata>,
}

/// Runs one call to completion or its deadline. Never panics, never
/// outlives `limits.timeout` by more than the task's cancellation.
pub async fn call(
    engine: &PluginEngine,
    prepared: Arc<Prepared>,
    cx: Arc<InstanceContext>,
    limits: CallLimits,
    input: CallInput,
) -> (Outcome, Option<CallResult>) {
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
        let result = invoke(&prepared, &mut store, input).await;
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
        Ok(Ok((Err(failure), _))) => match failure {
            Failure::Instantiate(e, hit) => {
                let (kind, message) = match hit {
                    Some(hit) => (OutcomeKind::Limit, hit),
                    None => match classify(&e, None, limits.timeout) {
                        (OutcomeKind::Timeout, m) => (OutcomeKind::Timeout, m),
                        _ => (OutcomeKind::HostError, format!("cannot instantiate: {e:#}")),
                    },
                };
                (finish(kind, message), None)
            }
            Failure::Call(e, hit) => {
                let (kind, message) = classify(&e, hit, limits.timeout);
                (finish(kind, message), None)
            }
        },
        Ok(Ok((Ok(result), _))) => match check_result(result) {
            Ok(result) => (finish(OutcomeKind::Ok, String::new()), Some(result)),
            Err(message) => (finish(OutcomeKind::Limit, message), None),
        },
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

enum Failure {
    Instantiate(wasmtime::Error, Option<String>),
    Call(wasmtime::Error, Option<String>),
}

async fn invoke(prepared: &Prepared, store: &mut Store<PluginState>, input: CallInput) -> Result<RawResult, Failure> {
    fn instantiate_failed(store: &mut Store<PluginState>, e: wasmtime::Error) -> Failure {
        Failure::Instantiate(e, store.data_mut().limiter.hit.take())
    }
    fn call_failed(store: &mut Store<PluginState>, e: wasmtime::Error) -> Failure {
        Failure::Call(e, store.data_mut().limiter.hit.take())
    }
    match prepared {
        Prepared::Health(pre) => {
            let plugin = pre.instantiate_async(&mut *store).await.map_err(|e| instantiate_failed(store, e))?;
            let report = plugin.call_check(&mut *store).await.map_err(|e| call_failed(store, e))?;
            Ok(RawResult::Health(report))
        }
        Prepared::Metadata(pre) => {
            let plugin = pre.instantiate_async(&mut *store).await.map_err(|e| instantiate_failed(store, e))?;
            store.data_mut().offline = true;
            let detected = plugin.call_detect(&mut *store).await.map_err(|e| call_failed(store, e))?;
            store.data_mut().offline = false;
            let fetched = if detected {
                Some(Box::new(plugin.call_fetch(&mut *store).await.map_err(|e| call_failed(store, e))?))
            } else {
                None
            };
            Ok(RawResult::Metadata { detected, fetched })
        }
        Prepared::Network(pre) => {
            let plugin = pre.instantiate_async(&mut *store).await.map_err(|e| instantiate_failed(store, e))?;
            let links = store.data().links();
            let plan = plugin
                .call_plan(&mut *store, &links, input.metadata.as_ref())
                .await
                .map_err(|e| call_failed(store, e))?;
            Ok(RawResult::Plan(plan))
        }
    }
}
