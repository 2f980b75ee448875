//! The data of one plugin call's `Store`, and the `bronze:host` functions
//! implemented on it. Only the interfaces a plugin is granted are put into
//! its linker (see `capabilities`); these impls never check grants a second
//! time except where a grant has a scope (http, probe).

use super::bindings::host::bronze::host as wit;
use super::facts::{Facts, cmdline_value};
use super::limits::Limiter;
use super::log::{Level, LogOutput, PluginLog};
use super::net::{self, HttpPolicy, ProbePolicy, Resolver};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Most resources (WASI streams, pollables) a guest may hold at once.
const MAX_TABLE_ENTRIES: usize = 1024;

/// What one instance's calls can reach, shared by all its stores.
pub struct InstanceContext {
    pub instance: String,
    /// The installed plugin the instance runs (its log lines name it).
    pub plugin: String,
    /// The instance's config values (empty unless `config` is granted).
    pub config: BTreeMap<String, String>,
    pub http: HttpPolicy,
    pub probe: ProbePolicy,
    pub facts: Facts,
    pub log: Arc<PluginLog>,
    pub resolver: Arc<dyn Resolver>,
    /// The volumes it may read (empty labels unless `volumes` is granted).
    pub volumes: super::volumes::VolumeAccess,
}

/// Store data for one call; dropped with the store after the call.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: Limiter,
    cx: Arc<InstanceContext>,
    /// When the whole call must be over.
    pub deadline: Instant,
    /// When network imports must give up: a little before `deadline`, so
    /// the guest can still report the failure itself.
    net_deadline: Instant,
    /// Network imports refuse every request (a provider's `detect`, which
    /// must decide from facts alone).
    pub offline: bool,
}

/// Share of the call's time kept back from network imports (at most
/// [`MAX_NET_RESERVE`]) for the guest to report.
const NET_RESERVE_DIVISOR: u32 = 10;
const MAX_NET_RESERVE: Duration = Duration::from_millis(100);

impl PluginState {
    pub fn new(cx: Arc<InstanceContext>, memory_limit: usize, deadline: Instant) -> Self {
        // WASI is linked so std's imports resolve, but it reaches nothing:
        // no preopens, env, args or sockets; stdout/stderr go to the log.
        let wasi = WasiCtxBuilder::new()
            .stdout(LogOutput::new(cx.log.clone(), &cx.plugin, Level::Info))
            .stderr(LogOutput::new(cx.log.clone(), &cx.plugin, Level::Warn))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_TABLE_ENTRIES);
        let reserve = (deadline.saturating_duration_since(Instant::now()) / NET_RESERVE_DIVISOR).min(MAX_NET_RESERVE);
        PluginState {
            wasi,
            table,
            limiter: Limiter::new(memory_limit),
            cx,
            deadline,
            net_deadline: deadline - reserve,
            offline: false,
        }
    }

    /// Time left for a network import, capped by the guest's own timeout.
    fn budget(&self, requested_ms: Option<u32>) -> Duration {
        let left = self.net_deadline.saturating_duration_since(Instant::now());
        match requested_ms {
            Some(ms) => left.min(Duration::from_millis(ms.into())),
            None => left,
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wit::types::Host for PluginState {}

impl wit::log::Host for PluginState {
    async fn log(&mut self, level: wit::log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            wit::log::Level::Trace => Level::Trace,
            wit::log::Level::Debug => Level::Debug,
            wit::log::Level::Info => Level::Info,
            wit::log::Level::Warn => Level::Warn,
            wit::log::Level::Error => Level::Error,
        };
        self.cx.log.write(&self.cx.plugin, level, &message);
        Ok(())
    }
}

impl wit::config::Host for PluginState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.cx.config.get(&key).cloned())
    }

    async fn entries(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.cx.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

impl wit::facts_dmi::Host for PluginState {
    async fn read(&mut self) -> wasmtime::Result<wit::facts_dmi::DmiInfo> {
        let mut fields = self.cx.facts.dmi().into_iter();
        let mut next = || fields.next().flatten();
        Ok(wit::facts_dmi::DmiInfo {
            sys_vendor: next(),
            product_name: next(),
            product_serial: next(),
            product_uuid: next(),
            board_vendor: next(),
            board_name: next(),
            chassis_asset_tag: next(),
            bios_vendor: next(),
            bios_version: next(),
        })
    }
}

impl wit::facts_links::Host for PluginState {
    async fn links(&mut self) -> wasmtime::Result<Vec<wit::types::Link>> {
        Ok(self.cx.facts.links().into_iter().map(link_to_wit).collect())
    }
}

pub fn link_to_wit(link: super::facts::LinkFact) -> wit::types::Link {
    wit::types::Link {
        name: link.name,
        mac: link.mac,
        mtu: link.mtu,
        up: link.up,
        carrier: link.carrier,
        addresses: link.addresses,
    }
}

impl wit::facts_cmdline::Host for PluginState {
    async fn cmdline(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.cx.facts.cmdline())
    }

    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(cmdline_value(&self.cx.facts.cmdline(), &key))
    }
}

impl wit::facts_time::Host for PluginState {
    async fn status(&mut self) -> wasmtime::Result<wit::facts_time::TimeStatus> {
        let t = self.cx.facts.time();
        Ok(wit::facts_time::TimeStatus {
            synced: t.synced,
            synced_by_timeout: t.synced_by_timeout,
            server: t.server,
            offset_ns: t.offset_ns,
            since_last_sync_secs: t.since_last_sync_secs,
        })
    }
}

impl wit::http::Host for PluginState {
    async fn send(
        &mut self,
        req: wit::http::Request,
    ) -> wasmtime::Result<Result<wit::http::Response, wit::http::Error>> {
        use wit::http::{Error, Method};
        if self.offline {
            return Ok(Err(Error::Denied(OFFLINE.to_string())));
        }
        let request = net::HttpRequest {
            method: match req.method {
                Method::Get => net::Method::Get,
                Method::Head => net::Method::Head,
                Method::Post => net::Method::Post,
                Method::Put => net::Method::Put,
                Method::Patch => net::Method::Patch,
                Method::Delete => net::Method::Delete,
                Method::Options => net::Method::Options,
            },
            url: req.url,
            headers: req.headers,
            body: req.body,
            timeout: Some(self.budget(req.timeout_ms)),
            max_body_bytes: req.max_body_bytes,
        };
        let cx = self.cx.clone();
        let result = net::send(&cx.http, cx.resolver.as_ref(), request, self.net_deadline).await;
        Ok(match result {
            Ok(r) => Ok(wit::http::Response { status: r.status, headers: r.headers, body: r.body, url: r.url }),
            Err(e) => {
                cx.log.write(&cx.plugin, Level::Debug, &format!("http: {e}"));
                Err(match e {
                    net::HttpError::Denied(m) => Error::Denied(m),
                    net::HttpError::InvalidRequest(m) => Error::InvalidRequest(m),
                    net::HttpError::Dns(m) => Error::Dns(m),
                    net::HttpError::Connect(m) => Error::Connect(m),
                    net::HttpError::Timeout => Error::Timeout,
                    net::HttpError::TooLarge(cap) => Error::TooLarge(cap),
                    net::HttpError::Protocol(m) => Error::Protocol(m),
                })
            }
        })
    }
}

impl wit::probe::Host for PluginState {
    async fn tcp_connect(
        &mut self,
        host: String,
        port: u16,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<u64, wit::probe::ProbeError>> {
        if self.offline {
            return Ok(Err(wit::probe::ProbeError::Denied(OFFLINE.to_string())));
        }
        let cx = self.cx.clone();
        let budget = self.budget(Some(timeout_ms));
        let result = net::tcp_connect(&cx.probe, cx.resolver.as_ref(), &host, port, budget, self.net_deadline).await;
        Ok(result.map(|took| took.as_micros() as u64).map_err(probe_error))
    }

    async fn http_status(
        &mut self,
        url: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<u16, wit::probe::ProbeError>> {
        if self.offline {
            return Ok(Err(wit::probe::ProbeError::Denied(OFFLINE.to_string())));
        }
        let cx = self.cx.clone();
        let budget = self.budget(Some(timeout_ms));
        let result = net::http_status(&cx.probe, cx.resolver.as_ref(), &url, budget, self.net_deadline).await;
        Ok(result.map_err(probe_error))
    }
}

/// Why a network import refused during `detect`.
const OFFLINE: &str = "no network during detect(): decide from facts (dmi, cmdline, volumes) only";

impl wit::volumes::Host for PluginState {
    async fn devices(&mut self) -> wasmtime::Result<Vec<wit::volumes::BlockDevice>> {
        let source = self.cx.volumes.source.clone();
        let devices = tokio::task::spawn_blocking(move || source.devices()).await.unwrap_or_default();
        Ok(devices
            .into_iter()
            .map(|d| wit::volumes::BlockDevice {
                name: d.name,
                size_bytes: d.size_bytes,
                fs_type: d.fs_type,
                label: d.label,
            })
            .collect())
    }

    async fn read_file(
        &mut self,
        label: String,
        path: String,
        max_bytes: Option<u32>,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::volumes::VolumeError>> {
        use super::volumes::VolumeError as E;
        use wit::volumes::VolumeError as W;
        let access = self.cx.volumes.clone();
        // Mounting and reading block; the call's deadline still bounds it.
        let read = tokio::task::spawn_blocking(move || access.read(&label, &path, max_bytes));
        let result = match tokio::time::timeout_at(self.net_deadline, read).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(E::Io(format!("the read failed: {join}"))),
            Err(_) => Err(E::Io("the read did not finish before the call's deadline".into())),
        };
        Ok(result.map_err(|e| match e {
            E::Denied(m) => W::Denied(m),
            E::NotFound(m) => W::NotFound(m),
            E::InvalidPath(m) => W::InvalidPath(m),
            E::TooLarge(n) => W::TooLarge(n),
            E::Io(m) => W::Io(m),
        }))
    }
}

fn probe_error(e: net::ProbeError) -> wit::probe::ProbeError {
    use wit::probe::ProbeError as W;
    match e {
        net::ProbeError::Denied(m) => W::Denied(m),
        net::ProbeError::InvalidTarget(m) => W::InvalidTarget(m),
        net::ProbeError::Dns(m) => W::Dns(m),
        net::ProbeError::Unreachable(m) => W::Unreachable(m),
        net::ProbeError::Timeout => W::Timeout,
        net::ProbeError::Protocol(m) => W::Protocol(m),
    }
}

impl PluginState {
    /// The node's links in WIT form (the configurator's input).
    pub fn links(&self) -> Vec<wit::types::Link> {
        self.cx.facts.links().into_iter().map(link_to_wit).collect()
    }
}
