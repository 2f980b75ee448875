//! The node's machine config: the stored document, the live one, and the
//! apply modes that move between them.
//!
//! - `auto` / `no-reboot`: persist, then make it live. `auto` reboots when a
//!   changed field needs it; `no-reboot` refuses such a change.
//! - `staged`: persist only; it becomes live at the next boot.
//! - `try`: make it live without persisting; roll back after the timeout
//!   unless a later `auto`/`no-reboot` apply confirms.
//! - `dry_run`: validate and diff; change nothing.
//!
//! Every path decodes and validates with `bronze_config::load` first; a
//! rejected document changes nothing. One apply runs at a time.

use crate::state::Writer;
use crate::state::types::MachineConfigSpec;
use crate::statedir::{StateDir, StateDirError};
use bronze_config::MachineConfig;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

/// Id of the one `MachineConfig` resource.
pub const CONFIG_ID: &str = "config";
/// File name of the stored config in the state dir.
pub const CONFIG_FILE: &str = "config.yaml";
/// Rollback delay of `try` when the client gives none.
pub const DEFAULT_TRY_TIMEOUT: Duration = Duration::from_secs(60);

/// A decoded, validated config and the exact text it came from.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub text: Arc<str>,
    pub config: Arc<MachineConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    Auto,
    NoReboot,
    Staged,
    Try(Duration),
}

#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    /// The mode actually used: "no-reboot", "reboot", "staged", "try".
    pub mode: &'static str,
    pub warnings: Vec<String>,
    pub diff: String,
    pub message: String,
    /// The caller must reboot the node after answering.
    pub reboot: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("invalid config: {0}")]
    Invalid(#[from] bronze_config::ConfigError),
    #[error("{0}")]
    NeedsReboot(String),
    /// Decodes and validates, but the node cannot use it (e.g. the API
    /// certificate cannot be built from it).
    #[error("invalid config: {0}")]
    Unusable(String),
    #[error("cannot persist config: {0}")]
    Persist(#[from] StateDirError),
}

struct State {
    /// Bytes of the stored document, as on disk.
    stored: Option<Arc<str>>,
    /// An unconfirmed `try`: what to go back to, and the timer that will.
    try_pending: Option<TryPending>,
}

struct TryPending {
    previous: Option<LiveConfig>,
    timer: JoinHandle<()>,
}

/// A node-side check beyond schema validation, run before anything changes.
pub type Precheck = Box<dyn Fn(&MachineConfig) -> Result<(), String> + Send + Sync>;

/// Called synchronously whenever the live config changes, before the apply
/// that changed it returns (the API's TLS must follow at once: a client
/// that connects right after its apply must meet the new certificate).
pub type OnLive = Box<dyn Fn(Option<&LiveConfig>) + Send + Sync>;

/// Owns the stored and live config and is the only writer of `MachineConfig`.
pub struct ConfigManager {
    dir: Arc<StateDir>,
    precheck: Precheck,
    on_live: OnLive,
    writer: Writer<MachineConfigSpec>,
    state: Mutex<State>,
    live: watch::Sender<Option<LiveConfig>>,
    me: Weak<ConfigManager>,
}

impl std::fmt::Debug for ConfigManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigManager").finish_non_exhaustive()
    }
}

/// Parses a document into a live config, keeping warnings.
pub fn parse(bytes: &[u8]) -> Result<(LiveConfig, Vec<String>), bronze_config::ConfigError> {
    let loaded = bronze_config::load(bytes)?;
    // load() succeeded, so the bytes are UTF-8.
    let text: Arc<str> = String::from_utf8_lossy(bytes).into();
    let warnings = loaded.warnings.iter().map(|w| w.to_string()).collect();
    Ok((LiveConfig { text, config: Arc::new(loaded.config) }, warnings))
}

/// Fields whose change cannot be applied to a running node.
fn reboot_reason(old: Option<&MachineConfig>, new: &MachineConfig) -> Option<&'static str> {
    let old = old?;
    (old.machine.kernel != new.machine.kernel).then_some("machine.kernel changed (modules load only at boot)")
}

impl ConfigManager {
    pub fn new(
        dir: Arc<StateDir>,
        writer: Writer<MachineConfigSpec>,
        precheck: Precheck,
        on_live: OnLive,
    ) -> Arc<Self> {
        let (live, _) = watch::channel(None);
        Arc::new_cyclic(|me| Self {
            dir,
            precheck,
            on_live,
            writer,
            state: Mutex::new(State { stored: None, try_pending: None }),
            live,
            me: me.clone(),
        })
    }

    /// Follows the live config (None = maintenance mode).
    pub fn subscribe(&self) -> watch::Receiver<Option<LiveConfig>> {
        self.live.subscribe()
    }

    /// The state directory (`--state-dir`; `/var/lib/bronze` in PID 1).
    pub fn state_dir(&self) -> &std::path::Path {
        self.dir.root()
    }

    pub fn live(&self) -> Option<LiveConfig> {
        self.live.borrow().clone()
    }

    /// Boot: the stored config becomes live (a staged one takes effect, a
    /// `try` is forgotten). Without one, `initial` (from `--config`) is
    /// validated and persisted. A stored config that no longer loads is
    /// reported and the node starts in maintenance mode rather than dying.
    pub async fn boot(&self, initial: Option<&[u8]>) -> Result<(), ApplyError> {
        let mut state = self.state.lock().await;
        if let Some(pending) = state.try_pending.take() {
            pending.timer.abort();
        }
        let mut stored = self.dir.read(CONFIG_FILE)?;
        if stored.is_none()
            && let Some(bytes) = initial
        {
            self.check(bytes)?;
            self.dir.write_atomic(CONFIG_FILE, bytes)?;
            stored = Some(bytes.to_vec());
        }
        let live = match stored.as_deref().map(|b| self.check(b)) {
            Some(Ok((live, warnings))) => {
                for w in warnings {
                    tracing::warn!(warning = %w, "stored config");
                }
                Some(live)
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, file = %self.dir.path(CONFIG_FILE).display(),
                    "stored config does not load; starting in maintenance mode");
                None
            }
            None => None,
        };
        state.stored = stored.map(|b| String::from_utf8_lossy(&b).into());
        self.publish(&state, live);
        Ok(())
    }

    /// Applies a document in the given mode.
    pub async fn apply(&self, bytes: &[u8], mode: ApplyMode, dry_run: bool) -> Result<ApplyOutcome, ApplyError> {
        let (new, warnings) = self.check(bytes)?;
        let mut state = self.state.lock().await;
        let current = self.live();
        let diff = bronze_config::diff(current.as_ref().map_or("", |c| &c.text), &new.text);
        let reboot_reason = reboot_reason(current.as_ref().map(|c| &*c.config), &new.config);
        let outcome = |mode, message: String, reboot| ApplyOutcome {
            mode,
            warnings: warnings.clone(),
            diff: diff.clone(),
            message,
            reboot,
        };
        if dry_run {
            let would = match (mode, reboot_reason) {
                (ApplyMode::Staged, _) => "stage it for the next boot".to_string(),
                (_, Some(why)) => format!("need a reboot: {why}"),
                _ => "apply it live".to_string(),
            };
            return Ok(outcome(
                "dry-run",
                format!("dry run: nothing changed; the config is valid and would {would}"),
                false,
            ));
        }
        match mode {
            ApplyMode::Staged => {
                self.persist(&mut state, &new)?;
                self.publish(&state, current);
                Ok(outcome("staged", "config staged: it takes effect at the next reboot".into(), false))
            }
            ApplyMode::Try(timeout) => {
                if let Some(why) = reboot_reason {
                    return Err(ApplyError::NeedsReboot(format!("try mode cannot apply this change: {why}")));
                }
                let previous = match state.try_pending.take() {
                    // A try on top of a try still rolls back to the confirmed config.
                    Some(pending) => {
                        pending.timer.abort();
                        pending.previous
                    }
                    None => current,
                };
                let timer = self.spawn_rollback(timeout);
                state.try_pending = Some(TryPending { previous, timer });
                self.publish(&state, Some(new));
                Ok(outcome(
                    "try",
                    format!(
                        "config applied for {}; it rolls back unless confirmed by another apply",
                        humanize(timeout)
                    ),
                    false,
                ))
            }
            ApplyMode::Auto | ApplyMode::NoReboot => {
                if let Some(why) = reboot_reason
                    && mode == ApplyMode::NoReboot
                {
                    return Err(ApplyError::NeedsReboot(format!(
                        "no-reboot mode cannot apply this change: {why}; use --mode auto or staged"
                    )));
                }
                self.persist(&mut state, &new)?;
                if let Some(pending) = state.try_pending.take() {
                    pending.timer.abort();
                }
                if let Some(why) = reboot_reason {
                    self.publish(&state, current);
                    return Ok(outcome("reboot", format!("config persisted; rebooting: {why}"), true));
                }
                self.publish(&state, Some(new));
                Ok(outcome("no-reboot", "config applied".into(), false))
            }
        }
    }

    fn check(&self, bytes: &[u8]) -> Result<(LiveConfig, Vec<String>), ApplyError> {
        let (live, warnings) = parse(bytes)?;
        (self.precheck)(&live.config).map_err(ApplyError::Unusable)?;
        Ok((live, warnings))
    }

    /// Applies `bytes` like an `auto` apply, but only when no config is
    /// stored: `Ok(None)` leaves a stored config alone. Used for a
    /// platform's user data, which never replaces an operator's config.
    pub async fn apply_if_unconfigured(&self, bytes: &[u8]) -> Result<Option<Vec<String>>, ApplyError> {
        let mut state = self.state.lock().await;
        if state.stored.is_some() {
            return Ok(None);
        }
        let (new, warnings) = self.check(bytes)?;
        self.persist(&mut state, &new)?;
        self.publish(&state, Some(new));
        Ok(Some(warnings))
    }

    /// Whether a `try` is waiting for confirmation.
    pub async fn try_pending(&self) -> bool {
        self.state.lock().await.try_pending.is_some()
    }

    fn persist(&self, state: &mut State, new: &LiveConfig) -> Result<(), ApplyError> {
        self.dir.write_atomic(CONFIG_FILE, new.text.as_bytes())?;
        state.stored = Some(new.text.clone());
        Ok(())
    }

    fn spawn_rollback(&self, timeout: Duration) -> JoinHandle<()> {
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(manager) = me.upgrade() {
                manager.roll_back().await;
            }
        })
    }

    async fn roll_back(&self) {
        let mut state = self.state.lock().await;
        let Some(pending) = state.try_pending.take() else { return };
        tracing::warn!("try config was not confirmed in time; rolling back");
        self.publish(&state, pending.previous);
    }

    /// Makes `live` current: the watch channel and the `MachineConfig` resource.
    fn publish(&self, state: &State, live: Option<LiveConfig>) {
        match &live {
            Some(cfg) => {
                let spec = MachineConfigSpec {
                    document: cfg.text.to_string(),
                    try_pending: state.try_pending.is_some(),
                    staged_pending: state.stored.as_deref() != Some(&*cfg.text),
                };
                if let Err(e) = self.writer.put(CONFIG_ID, &spec) {
                    tracing::error!(error = %e, "cannot publish MachineConfig");
                }
            }
            None => {
                self.writer.remove(CONFIG_ID);
            }
        }
        (self.on_live)(live.as_ref());
        self.live.send_replace(live);
    }
}

/// "90s" → "1m30s".
fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}
