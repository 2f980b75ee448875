//! Wiring and lifecycle of a node: open the state dir, build the store,
//! config manager, API security and controllers, serve the API at once,
//! then boot, run, and handle reboot/shutdown requests.
//!
//! The API starts before anything else and never waits on the network or a
//! plugin. In process mode a reboot restarts the subsystems in-process and
//! a shutdown returns from [`run`] (the process exits 0).

use crate::api::audit::{AUDIT_RING, AuditLog};
use crate::api::context::ApiContext;
use crate::api::security::{Gate, Security};
use crate::api::tls;
use crate::config::{ConfigManager, LiveConfig};
use crate::controllers::Runtime;
use crate::controllers::machine_settings::MachineSettingsController;
use crate::controllers::machine_status::MachineStatusController;
use crate::init::EarlyReport;
use crate::network::apply::Applier;
use crate::network::controller::NetworkStatusController;
use crate::network::dhcp::DhcpManager;
use crate::network::netlink::RtNetlink;
use crate::network::observe::{KernelObserver, Publisher};
use crate::network::spec_controller::{NetworkHandle, NetworkSpecController};
use crate::platform::PlatformHandle;
use crate::platform::controller::{PlatformController, RetryPolicy};
use crate::plugins::manager::PluginConfigController;
use crate::services::reaper::Reaper;
use crate::services::{ServicesController, Supervisor};
use crate::state::Store;
use crate::state::ring::Ring;
use crate::state::types::{MachineEventSpec, Stage};
use crate::statedir::StateDir;
use crate::sysinfo::SystemPaths;
use crate::time::controller::{SharedHoldOffs, TimeController};
use anyhow::Context;
use bronze_pki::CertAndKey;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub use crate::lifecycle::{Mode, PowerAction};

#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub mode: Mode,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// Initial config, used when the state dir holds none.
    pub config: Option<PathBuf>,
    /// Time servers to use until a config names some (process mode has no
    /// default: without these and without config servers, sync is disabled).
    pub time_servers: Vec<String>,
    /// Plugin bundles shipped with the image.
    pub image_plugins: Option<PathBuf>,
    /// What early boot did (pid1 mode only): mounts to undo at shutdown,
    /// the state disk, the kernel command line.
    pub early: Option<Arc<EarlyReport>>,
    pub paths: SystemPaths,
    /// `--platform`: `auto`, `none`, or a platform name to pin.
    pub platform: String,
    /// Where `bronze:host/volumes` finds config drives.
    pub volumes: Arc<dyn crate::plugins::volumes::VolumeSource>,
    /// Whether bronzed configures the network it runs in (always as PID 1;
    /// in process mode only inside a namespace of its own).
    pub own_network: bool,
    /// Process mode: a directory standing in for the ESP, and the slot this
    /// process runs as (`--boot-dir`, `--boot-slot`).
    pub boot_dir: Option<(PathBuf, bronze_boot::Slot)>,
}

/// Machine events kept.
const EVENT_RING: u64 = 1000;

/// Files of the maintenance certificate, kept so its fingerprint is stable
/// across restarts.
const MAINTENANCE_CRT: &str = "maintenance.crt";
const MAINTENANCE_KEY: &str = "maintenance.key";

/// The maintenance certificate (kept in the state dir, made on first use),
/// the TLS config serving it, built once, and whether it is new: a new one
/// is saved with [`save_maintenance_cert`] once the API serves (four
/// fsyncs a first boot does not wait for; lost only if the node loses
/// power in the moment after, and then the next boot makes another).
fn maintenance_cert(
    dir: &StateDir,
    listen: SocketAddr,
) -> anyhow::Result<(CertAndKey, Arc<rustls::ServerConfig>, bool)> {
    if let (Some(crt), Some(key)) = (dir.read(MAINTENANCE_CRT)?, dir.read(MAINTENANCE_KEY)?) {
        let cert = CertAndKey {
            cert_pem: String::from_utf8_lossy(&crt).into(),
            key_pem: String::from_utf8_lossy(&key).into(),
        };
        match tls::maintenance_server_config(&cert) {
            Ok(config) => return Ok((cert, config, false)),
            Err(e) => tracing::warn!(error = %e, "stored maintenance certificate is unusable; making a new one"),
        }
    }
    let sans = tls::server_sans(&[], "bronze-maintenance", listen);
    let cert = bronze_pki::self_signed_server(&sans)?;
    let config = tls::maintenance_server_config(&cert)?;
    Ok((cert, config, true))
}

/// Keeps a new maintenance certificate, key first (a certificate without
/// its key is never left behind). A failure is logged: the node serves on,
/// and its next boot makes a new certificate.
fn save_maintenance_cert(dir: &StateDir, cert: &CertAndKey) {
    let saved = dir
        .write_atomic(MAINTENANCE_KEY, cert.key_pem.as_bytes())
        .and_then(|()| dir.write_atomic(MAINTENANCE_CRT, cert.cert_pem.as_bytes()));
    match saved {
        Ok(()) => tracing::debug!("maintenance certificate saved"),
        Err(e) => {
            tracing::error!(error = %e, "cannot keep the maintenance certificate: the next boot makes another, with another fingerprint")
        }
    }
}

/// Puts the API's TLS and gate in step with the live config.
fn switch_security(
    security: &Security,
    live: Option<&LiveConfig>,
    maintenance: &Arc<rustls::ServerConfig>,
    fingerprint: &str,
    listen: SocketAddr,
) {
    match live {
        None => {
            security.switch(maintenance.clone(), Gate::Maintenance);
            tracing::info!(%listen, %fingerprint,
                "maintenance mode: no machine config; the API uses a self-signed certificate with this SPKI sha256 fingerprint; apply a config with `bronzectl --insecure --cert-fingerprint {fingerprint} apply-config`");
        }
        Some(cfg) => match tls::secure_server_config(&cfg.config, listen) {
            Ok(secure) => {
                security.switch(secure.server_config, Gate::Secure(secure.client_verifier));
                tracing::info!(%listen, "API serving mTLS with the machine config's CA");
            }
            // The precheck refuses such configs before they go live; a
            // stored one that fails here leaves the previous TLS in place.
            Err(e) => tracing::error!(error = %e, "cannot build API TLS from the live config"),
        },
    }
}

/// The time controller for the mode: pid1 syncs with the default (or the
/// kernel command line's) server before any config and disciplines the
/// clock when it may; process mode only observes, and only servers given
/// explicitly.
fn time_controller(
    opts: &NodeOptions,
    store: &Store,
    config: &ConfigManager,
    events: Arc<Ring<MachineEventSpec>>,
    holds: SharedHoldOffs,
    network: &NetworkHandle,
) -> anyhow::Result<TimeController> {
    let (boot_servers, discipline) = match opts.mode {
        Mode::Pid1 => {
            let mut servers = crate::time::parse_servers(&opts.time_servers);
            if servers.is_empty() {
                servers = crate::time::pid1_boot_servers(&opts.paths.proc);
            }
            (servers, crate::time::kernel::can_set_time())
        }
        Mode::Process => (crate::time::parse_servers(&opts.time_servers), false),
    };
    Ok(TimeController::new(
        store.writer()?,
        store.writer()?,
        events,
        config.subscribe(),
        boot_servers,
        discipline,
        holds,
    )
    // The network's time servers below the config (DHCP's, then the
    // platform's: a cloud node often has no route to the internet) sit
    // between the config's and the default; process mode never contacts
    // servers it was not given, unless it owns its network.
    .with_platform_servers(opts.own_network.then(|| network.time_servers())))
}

/// The disk this node booted from: the ESP PID 1 mounted and the slot on
/// the kernel command line, and how long a tried slot has to get healthy. A
/// node booted otherwise (qemu's `-kernel`, process mode) has no slots and
/// says why.
fn boot_disk(opts: &NodeOptions) -> (Arc<crate::boot::BootDisk>, Duration) {
    use crate::init::mounts::ESP_MOUNT_POINT;
    let (esp, cmdline) = match &opts.early {
        Some(early) => {
            let esp = match &early.esp {
                Some(device) => {
                    Ok((bronze_boot::Esp::new(ESP_MOUNT_POINT), format!("{} at {ESP_MOUNT_POINT}", device.display())))
                }
                None => Err(format!("no partition named {}: not booted from a Bronze disk", bronze_boot::ESP_LABEL)),
            };
            (esp, early.cmdline.as_str())
        }
        None => {
            if let Some((dir, slot)) = &opts.boot_dir {
                let esp = bronze_boot::Esp::new(dir);
                let about = format!("{} (process mode: a directory standing in for the ESP)", dir.display());
                let disk = crate::boot::BootDisk::new(Ok((esp, about)), Some(*slot));
                return (Arc::new(disk), crate::boot::controller::DEFAULT_HEALTH_TIMEOUT);
            }
            (Err("process mode: no boot slots (--boot-dir gives a directory standing in for them)".to_string()), "")
        }
    };
    let running = bronze_boot::Slot::from_cmdline(cmdline);
    let timeout = crate::boot::controller::health_timeout(cmdline);
    (Arc::new(crate::boot::BootDisk::new(esp, running)), timeout)
}

/// The longest the plugins wait for the first network plan once the API
/// serves (a node whose network cannot be configured still loads them).
const PLUGINS_AFTER_NETWORK: Duration = Duration::from_secs(2);

/// When the plugins start loading: once the API serves and the first
/// network plan is applied (at most [`PLUGINS_AFTER_NETWORK`] after the API).
/// Loading is CPU work, and a VM may have one CPU: the node is reachable
/// first. The first network plan never waits for plugins.
async fn plugins_start(mut serving: watch::Receiver<bool>, mut network_ready: watch::Receiver<bool>) {
    let _ = serving.wait_for(|s| *s).await;
    let _ = tokio::time::timeout(PLUGINS_AFTER_NETWORK, network_ready.wait_for(|r| *r)).await;
}

/// Runs a node until it is shut down.
pub async fn run(opts: NodeOptions) -> anyhow::Result<()> {
    // Where the start spends its time until the API serves, for the console.
    let mut laps = crate::laps::Laps::new();
    let dir = Arc::new(StateDir::open(&opts.state_dir)?);
    laps.lap("state dir");
    let store = Store::new();
    let listen = opts.listen;
    let (maintenance, maintenance_tls, maintenance_is_new) = maintenance_cert(&dir, listen)?;
    let fingerprint = bronze_pki::spki_fingerprint(&bronze_pki::certs_from_pem(&maintenance.cert_pem)?[0])?;
    laps.lap("maintenance certificate");
    let security = Arc::new(Security::new(maintenance_tls.clone(), Gate::Maintenance));

    let precheck = Box::new(move |cfg: &bronze_config::MachineConfig| {
        tls::secure_server_config(cfg, listen).map(|_| ()).map_err(|e| e.to_string())
    });
    let on_live = {
        let security = security.clone();
        Box::new(move |live: Option<&LiveConfig>| {
            switch_security(&security, live, &maintenance_tls, &fingerprint, listen)
        })
    };
    let config = ConfigManager::new(dir.clone(), store.writer()?, precheck, on_live);
    let audit = Arc::new(AuditLog::new(store.writer()?, AUDIT_RING));
    let events = Arc::new(Ring::new(store.writer()?, EVENT_RING));

    // The reaper first: nothing may spawn before it owns exit statuses. As
    // PID 1 we reap orphans anyway; as a process we ask to.
    let reaper = Reaper::start(opts.mode == Mode::Process).context("starting the reaper")?;
    // Process mode has no network to bring up; pid1 sets this after its network.
    let (network_ready_tx, network_ready) = watch::channel(opts.mode == Mode::Process);
    // Set once the API serves: the plugins load after it.
    let (serving_tx, serving) = watch::channel(false);
    let plugins_ready = plugins_start(serving, network_ready.clone());
    let services = Arc::new(Supervisor::new(
        reaper.clone(),
        store.clone(),
        store.writer()?,
        network_ready,
        service_cgroups(opts.mode),
    ));
    laps.lap("services");

    // Loads installed plugins in the background once the config is read;
    // never delays the API.
    let plugins = crate::plugins::PluginManager::open(
        &opts.state_dir.join("plugins"),
        &store,
        &opts.paths,
        opts.volumes.clone(),
        opts.image_plugins.clone(),
        config.subscribe(),
        plugin_compiler(opts.mode, reaper),
    )
    .context("starting the plugin host")?;
    laps.lap("plugin host");

    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    let (power, mut power_rx) = mpsc::unbounded_channel();
    let platform = PlatformHandle::default();
    // One loader of on-demand kernel modules for the node (bonding and
    // 8021q for the network, sock_diag's for netstat), so each is asked
    // for once.
    let modules: Arc<dyn crate::init::OnDemandModules> = match opts.mode {
        Mode::Pid1 => Arc::new(crate::init::OnDemandLoader::kernel()),
        Mode::Process => Arc::new(crate::init::NoModules),
    };
    let (boot_disk, health_timeout) = boot_disk(&opts);
    let node = Arc::new(ApiContext {
        boot: boot_disk,
        state_dir: dir.clone(),
        mode: opts.mode,
        release: crate::release::for_mode(opts.mode),
        store: store.clone(),
        config: config.clone(),
        security: security.clone(),
        audit: audit.clone(),
        events: events.clone(),
        services: services.clone(),
        plugins: plugins.clone(),
        platform: platform.clone(),
        power,
        paths: opts.paths.clone(),
        listen: bound,
        time_holds: SharedHoldOffs::default(),
        network: std::sync::OnceLock::new(),
        modules: modules.clone(),
    });

    let initial = match &opts.config {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("cannot read --config {}", path.display()))?),
        None => None,
    };
    config.boot(initial.as_deref()).await.with_context(|| match &opts.config {
        Some(path) => format!("--config {}", path.display()),
        None => "stored config".into(),
    })?;
    plugins.load_after(plugins_ready);
    laps.lap("config");
    let observe_now = Arc::new(tokio::sync::Notify::new());
    let network_status = Arc::new(NetworkStatusController::new(
        Publisher::new(&store)?,
        Arc::new(KernelObserver::new(&opts.paths.sys)),
        observe_now.clone(),
    ));

    // PID 1 (or a process owning its namespace) configures the network; it
    // starts as soon as the config is known and never blocks the API.
    let network = NetworkHandle::default();
    let (applier, dhcp) = if opts.own_network {
        match RtNetlink::connect() {
            Ok(netlink) => {
                let applier = {
                    // A process writes resolv.conf and hosts under its state
                    // dir, never the host's /etc.
                    let root = match opts.mode {
                        Mode::Pid1 => PathBuf::from("/"),
                        Mode::Process => opts.state_dir.join("root"),
                    };
                    let applier = Applier::new(Arc::new(netlink), root).notify_after_apply(observe_now.clone());
                    // PID 1 loads bonding / 8021q before the first bond / VLAN.
                    match opts.mode {
                        Mode::Pid1 => Arc::new(applier.with_modules(modules.clone())),
                        Mode::Process => Arc::new(applier),
                    }
                };
                let store_leases = Arc::new(crate::network::dhcp::StateDirStore::new(dir.clone()));
                let dhcp = DhcpManager::new(store_leases, Some(store.writer()?));
                (Some(applier), Some(Arc::new(tokio::sync::Mutex::new(dhcp))))
            }
            Err(e) => {
                tracing::error!(error = %e, "no netlink: the network is not configured");
                (None, None)
            }
        }
    } else {
        (None, None)
    };
    let cmdline = if opts.own_network {
        crate::network::cmdline::read(&opts.paths.cmdline).unwrap_or_else(|e| {
            tracing::error!(error = %e, "ignoring bronze.ip= on the kernel command line");
            vec![]
        })
    } else {
        vec![]
    };
    let leases = match &dhcp {
        Some(dhcp) => dhcp.lock().await.leases(),
        None => watch::channel(Default::default()).1,
    };
    let network_spec = Arc::new(NetworkSpecController::new(
        config.subscribe(),
        platform.subscribe(),
        network_status.snapshots(),
        leases,
        cmdline,
        plugins.clone(),
        applier.clone(),
        dhcp.clone(),
        store.writer()?,
        network.clone(),
        network_ready_tx,
        Some(bound.ip()),
    ));
    let _ = node.network.set(network_spec.clone());

    let (api_stop_tx, api_stop_rx) = watch::channel(false);
    let mode = opts.mode.as_str();
    let unsaved_maintenance = maintenance_is_new.then(|| (dir.clone(), maintenance.clone()));
    let on_serving = move || {
        if let Some((dir, cert)) = unsaved_maintenance {
            tokio::task::spawn_blocking(move || save_maintenance_cert(&dir, &cert));
        }
        serving_tx.send_replace(true);
        laps.lap("API");
        tracing::debug!("startup: {laps}");
        tracing::info!(listen = %bound, mode, startup_ms = laps.total().as_millis() as u64, "API listening");
    };
    let api = tokio::spawn(crate::api::serve(
        listener,
        node.clone(),
        async move {
            let mut rx = api_stop_rx;
            let _ = rx.wait_for(|s| *s).await;
        },
        on_serving,
    ));

    // Its own listener, following machine.metrics in the live config.
    let sources = crate::metrics::Sources { store: store.clone(), plugins: plugins.clone(), paths: opts.paths.clone() };
    let _metrics = crate::metrics::server::MetricsServer::start(sources, config.subscribe());

    let (stage_tx, stage_rx) = watch::channel(Stage::Booting);
    let machine_status = Arc::new(MachineStatusController {
        writer: store.writer()?,
        stage: stage_rx,
        mode: opts.mode.as_str(),
        storage: storage_description(&opts),
    });
    let machine_settings = (opts.mode == Mode::Pid1).then(|| {
        Arc::new(MachineSettingsController {
            config: config.subscribe(),
            platform: platform.clone(),
            network: network.clone(),
        })
    });
    let platform_controller = Arc::new(PlatformController {
        plugins: plugins.clone(),
        config: config.clone(),
        cmdline: opts.paths.cmdline.clone(),
        dir: dir.clone(),
        detection: store.writer()?,
        metadata: store.writer()?,
        handle: platform.clone(),
        events: events.clone(),
        audit,
        retry: RetryPolicy::default(),
        flag: opts.platform.clone(),
        started: std::time::Instant::now(),
    });
    let plugin_config = Arc::new(PluginConfigController { manager: plugins.clone() });
    let events_for_boot = events.clone();
    let time = Arc::new(time_controller(&opts, &store, &config, events, node.time_holds.clone(), &network)?);
    let services_controller = Arc::new(ServicesController { supervisor: services.clone(), config: config.subscribe() });
    let boot = Arc::new(crate::boot::controller::BootController::new(
        node.boot.clone(),
        store.writer()?,
        events_for_boot,
        node.power.clone(),
        health_timeout,
    ));

    let mut signals = Signals::new()?;
    loop {
        stage_tx.send_replace(Stage::Booting);
        let mut runtime = Runtime::default();
        runtime.spawn(machine_status.clone());
        runtime.spawn(time.clone());
        runtime.spawn(network_status.clone());
        runtime.spawn(services_controller.clone());
        runtime.spawn(plugin_config.clone());
        runtime.spawn(platform_controller.clone());
        runtime.spawn(network_spec.clone());
        runtime.spawn(boot.clone());
        if let Some(settings) = &machine_settings {
            runtime.spawn(settings.clone());
        }
        stage_tx.send_replace(Stage::Running);

        let action = tokio::select! {
            Some(action) = power_rx.recv() => action,
            signal = signals.next() => {
                tracing::info!(signal, "signal received");
                // As init, Ctrl-Alt-Del (SIGINT) means reboot.
                if opts.mode == Mode::Pid1 && signal == "SIGINT" { PowerAction::Reboot } else { PowerAction::Shutdown }
            }
        };
        if let Some(early) = &opts.early {
            stage_tx.send_replace(if action.reboots() { Stage::Rebooting } else { Stage::ShuttingDown });
            if action == PowerAction::RebootNow {
                services.kill_all();
            }
            runtime.stop().await;
            if let Some(dhcp) = &dhcp
                && action != PowerAction::RebootNow
            {
                // Leases are released before the links go down.
                dhcp.lock().await.set_links(Vec::new()).await;
            }
            if let Err(e) = pid1_power(action, &services, &plugins, applier.clone(), early).await {
                // reboot(2) failed: stay alive, report, and keep serving.
                tracing::error!(error = %e, "power action failed; the node stays up");
                config.boot(None).await.context("reloading stored config")?;
                plugins.resume().await;
            }
            continue;
        }
        match action {
            PowerAction::Reboot | PowerAction::RebootNow => {
                tracing::info!("reboot: restarting subsystems in-process");
                stage_tx.send_replace(Stage::Rebooting);
                runtime.stop().await;
                services.stop_all().await;
                config.boot(None).await.context("reloading stored config")?;
            }
            PowerAction::Shutdown => {
                tracing::info!("shutting down");
                stage_tx.send_replace(Stage::ShuttingDown);
                if let Some(dhcp) = &dhcp {
                    dhcp.lock().await.set_links(Vec::new()).await;
                }
                runtime.stop().await;
                services.stop_all().await;
                plugins.stop();
                let _ = api_stop_tx.send(true);
                // Open watch streams would hold a graceful stop forever.
                let _ = tokio::time::timeout(Duration::from_secs(2), api).await;
                return Ok(());
            }
        }
    }
}

/// Where services run: as PID 1 each in its own group under
/// `bronze.slice` (plain children if the kernel has no cgroup v2 to offer);
/// in process mode plain children.
fn service_cgroups(mode: Mode) -> Arc<dyn crate::cgroup::ServiceCgroups> {
    use crate::cgroup::{NoServiceCgroups, Slice};
    match mode {
        Mode::Pid1 => match Slice::create(std::path::Path::new(crate::cgroup::ROOT)) {
            Ok(slice) => {
                tracing::info!(slice = %slice.dir().display(), controllers = ?slice.controllers(), "service cgroups");
                Arc::new(slice)
            }
            Err(e) => {
                tracing::warn!(error = %e, "services run without cgroups: their resources are not enforced");
                Arc::new(NoServiceCgroups)
            }
        },
        Mode::Process => Arc::new(NoServiceCgroups),
    }
}

/// The compile workers' confinement for the mode: as PID 1 a cgroup of
/// their own besides their rlimits (rlimits alone if the kernel offers no
/// memory controller); in process mode rlimits only.
fn plugin_compiler(mode: Mode, reaper: Reaper) -> crate::plugins::compiler::Compiler {
    use crate::plugins::cgroup::{CgroupV2, NoCgroup, WorkerCgroup};
    let cgroup: Arc<dyn WorkerCgroup> = match mode {
        Mode::Pid1 => match CgroupV2::create(std::path::Path::new("/sys/fs/cgroup")) {
            Ok(cgroup) => Arc::new(cgroup),
            Err(e) => {
                tracing::warn!(error = %e, "plugin compiles are limited by rlimits only: no cgroup");
                Arc::new(NoCgroup)
            }
        },
        Mode::Process => Arc::new(NoCgroup),
    };
    let program = PathBuf::from(crate::plugins::compiler::WORKER_PROGRAM);
    crate::plugins::compiler::Compiler::new(program, reaper, cgroup)
}

/// How the node keeps its state, for `MachineStatus`.
fn storage_description(opts: &NodeOptions) -> String {
    match &opts.early {
        Some(early) => match &early.state_disk {
            Some(dev) => format!("state disk {} at {}", dev.display(), opts.state_dir.display()),
            None => format!("no state disk: {} is in memory and lost at reboot", opts.state_dir.display()),
        },
        None => format!("state dir {}", opts.state_dir.display()),
    }
}

/// PID 1's reboot and power-off: stop services, sync, unmount, links down,
/// reboot(2). Returns only if that fails.
async fn pid1_power(
    action: PowerAction,
    services: &Arc<Supervisor>,
    plugins: &Arc<crate::plugins::PluginManager>,
    applier: Option<Arc<Applier>>,
    early: &EarlyReport,
) -> anyhow::Result<()> {
    use crate::init::{Deadlines, KernelMounter, KernelPower, PowerTarget, ShutdownHooks};
    let target = match action {
        PowerAction::Reboot | PowerAction::RebootNow => PowerTarget::Reboot,
        PowerAction::Shutdown => PowerTarget::PowerOff,
    };
    let services = services.clone();
    let plugins = plugins.clone();
    let hooks = ShutdownHooks::new()
        .stop_services(move || async move {
            services.stop_all().await;
            Ok(())
        })
        // Schedules stop at once; calls in flight end by their own deadline.
        .stop_plugins(move || async move {
            plugins.stop();
            Ok(())
        })
        // Every link down before reboot(2): avoids a virtio-net poweroff hang.
        .links_down(move || async move {
            let by_netlink = match &applier {
                Some(applier) => match applier.links_down().await {
                    Ok(report) => {
                        for e in &report.errors {
                            tracing::warn!(error = %e, "link down");
                        }
                        true
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "netlink links down failed; using ioctls");
                        false
                    }
                },
                None => false,
            };
            if !by_netlink {
                for e in crate::init::all_links_down() {
                    tracing::warn!(error = %e, "link down");
                }
            }
            Ok(())
        });
    crate::init::shutdown(target, hooks, &KernelMounter, &KernelPower, &early.unmount_plan(), Deadlines::default())
        .await
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// SIGTERM, SIGINT and SIGPWR, as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    pwr: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            pwr: signal(SignalKind::from_raw(libc::SIGPWR))?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.pwr.recv() => "SIGPWR",
        }
    }
}
