//! Plugin work in the node's process (loading an AOT artifact, hashing a
//! stored component) on its own thread at a lower scheduling priority. The
//! node's own work (the API, the network, the supervisor) comes first: at
//! boot, loading the image's plugins must not slow the API's start. The
//! compile worker ([`super::compiler`]) runs at the same nice value, and the
//! threads wasmtime's parallel compilation starts there inherit it.

/// The nice value of plugin work: below the node's own (0), above idle.
pub const PLUGIN_WORK_NICE: i32 = 10;

/// Runs `job` on a new thread niced to [`PLUGIN_WORK_NICE`] and waits for
/// it without blocking the runtime. A panic in `job` comes back as an
/// error naming `what`.
pub async fn run_niced<T, F>(what: &str, job: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("plugin-work".into()).spawn(move || {
        lower_this_thread(PLUGIN_WORK_NICE);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        let _ = tx.send(outcome);
    });
    if let Err(e) = spawned {
        return Err(format!("{what}: cannot start a thread: {e}"));
    }
    match rx.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => Err(format!("{what} panicked: {}", crate::controllers::payload_message(panic.as_ref()))),
        Err(_) => Err(format!("{what}: the worker thread ended without an answer")),
    }
}

/// Sets the calling thread's nice value to `nice` unless it is already
/// higher (Linux applies `setpriority(PRIO_PROCESS, 0)` to the calling
/// thread only). Failing to lower priority is harmless and only logged.
#[allow(unsafe_code)]
fn lower_this_thread(nice: i32) {
    if this_thread_nice() >= nice {
        return;
    }
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS as _, 0, nice) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the plugin thread's priority");
    }
}

/// The calling thread's nice value.
#[allow(unsafe_code)]
fn this_thread_nice() -> i32 {
    // SAFETY: getpriority takes plain integers and touches no memory of
    // ours. (It may return -1 as a valid nice value; we never need errno.)
    unsafe { libc::getpriority(libc::PRIO_PROCESS as _, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_job_runs_niced_and_the_caller_is_not() {
        let before = this_thread_nice();
        let inside = run_niced("probe", this_thread_nice).await.unwrap();
        assert!(inside >= PLUGIN_WORK_NICE, "job ran at nice {inside}");
        assert_eq!(this_thread_nice(), before, "the caller's priority changed");
    }

    #[tokio::test]
    async fn threads_the_job_starts_inherit_its_priority() {
        let child = run_niced("probe", || std::thread::spawn(this_thread_nice).join().unwrap()).await.unwrap();
        assert!(child >= PLUGIN_WORK_NICE, "child thread ran at nice {child}");
    }

    #[tokio::test]
    async fn a_panic_becomes_an_error_naming_the_work() {
        let err = run_niced("compiling demo", || -> u32 { panic!("boom") }).await.unwrap_err();
        assert_eq!(err, "compiling demo panicked: boom");
    }
}
