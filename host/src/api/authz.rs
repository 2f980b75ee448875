//! Who may call what: the one authorization table, the decision for a
//! request, and the tower layer that applies it (and records audit events)
//! in front of every gRPC service.
//!
//! Every RPC the server exposes must be in [`TABLE`]; one that is missing is
//! admin-only and treated as mutating. Tests enumerate the table and the
//! descriptor set, so a new RPC cannot be forgotten.

use super::audit::AuditLog;
use super::security::{Gate, Security};
use futures::future::BoxFuture;
use http::{Request, Response};
use rustls_pki_types::CertificateDer;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// A role from the Organization of a client certificate; the same type
/// the config uses. Roles nest: admin may do what operator may, operator
/// what reader may.
pub use bronze_config::Role;

/// The authorization of one RPC.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Full gRPC path, `/package.Service/Method`.
    pub method: &'static str,
    /// Roles that may call it.
    pub roles: &'static [Role],
    /// Mutating calls are audited.
    pub mutating: bool,
    /// Allowed in maintenance mode (no client certificate).
    pub maintenance: bool,
}

const ALL: &[Role] = &[Role::Admin, Role::Operator, Role::Reader];
const OPERATOR: &[Role] = &[Role::Admin, Role::Operator];
const ADMIN: &[Role] = &[Role::Admin];

const fn read(method: &'static str) -> Rule {
    Rule { method, roles: ALL, mutating: false, maintenance: false }
}

/// Every RPC the API serves, with the roles that may call it.
pub static TABLE: &[Rule] = &[
    Rule { method: "/bronze.v1.MachineService/Version", roles: ALL, mutating: false, maintenance: true },
    read("/bronze.v1.MachineService/Hostname"),
    Rule { method: "/bronze.v1.MachineService/ApplyConfiguration", roles: ADMIN, mutating: true, maintenance: true },
    Rule { method: "/bronze.v1.MachineService/GetConfiguration", roles: ADMIN, mutating: false, maintenance: false },
    Rule {
        method: "/bronze.v1.MachineService/GenerateClientConfiguration",
        roles: ADMIN,
        mutating: true,
        maintenance: false,
    },
    Rule { method: "/bronze.v1.MachineService/Reboot", roles: OPERATOR, mutating: true, maintenance: false },
    Rule { method: "/bronze.v1.MachineService/Upgrade", roles: ADMIN, mutating: true, maintenance: false },
    Rule { method: "/bronze.v1.MachineService/Rollback", roles: ADMIN, mutating: true, maintenance: false },
    Rule { method: "/bronze.v1.MachineService/Reset", roles: ADMIN, mutating: true, maintenance: false },
    Rule { method: "/bronze.v1.MachineService/Shutdown", roles: OPERATOR, mutating: true, maintenance: false },
    read("/bronze.v1.MachineService/Events"),
    read("/bronze.v1.MachineService/Memory"),
    read("/bronze.v1.MachineService/ServiceList"),
    Rule { method: "/bronze.v1.MachineService/ServiceStart", roles: OPERATOR, mutating: true, maintenance: false },
    Rule { method: "/bronze.v1.MachineService/ServiceStop", roles: OPERATOR, mutating: true, maintenance: false },
    Rule { method: "/bronze.v1.MachineService/ServiceRestart", roles: OPERATOR, mutating: true, maintenance: false },
    read("/bronze.v1.MachineService/Logs"),
    read("/bronze.v1.MachineService/Dmesg"),
    read("/bronze.v1.MachineService/LoadAvg"),
    // Makes the node ask its metadata service again.
    Rule { method: "/bronze.v1.MachineService/PlatformRefresh", roles: OPERATOR, mutating: true, maintenance: false },
    // Sensitive resource types are further limited to admin by the service.
    read("/bronze.v1.ResourceService/Get"),
    read("/bronze.v1.ResourceService/List"),
    read("/bronze.v1.ResourceService/Watch"),
    read("/bronze.v1.TimeService/Time"),
    // Makes the node send NTP packets to a server of the caller's choice.
    Rule { method: "/bronze.v1.TimeService/TimeCheck", roles: OPERATOR, mutating: false, maintenance: false },
    Rule { method: "/bronze.v1.PluginService/Install", roles: ADMIN, mutating: true, maintenance: false },
    Rule { method: "/bronze.v1.PluginService/Remove", roles: ADMIN, mutating: true, maintenance: false },
    Rule { method: "/bronze.v1.PluginService/Run", roles: OPERATOR, mutating: true, maintenance: false },
    // Runs the network-configurator plugin afresh, like `plugins run`;
    // changes nothing (the plan is neither applied nor kept).
    Rule { method: "/bronze.v1.NetworkService/Plan", roles: OPERATOR, mutating: false, maintenance: false },
    // netstat (issue 13): sockets and their processes, read-only.
    read("/bronze.v1.NetworkService/Netstat"),
    read("/bronze.v1.PluginService/List"),
    read("/bronze.v1.PluginService/Status"),
    // processes / stats (issue 13): read-only views of /proc.
    read("/bronze.v1.ProcessService/Processes"),
    read("/bronze.v1.ProcessService/Stats"),
    // pcap (issue 13): packet capture, admin only; audited (at the start by
    // this layer, at the end by the service with what was captured).
    Rule { method: "/bronze.v1.CaptureService/Capture", roles: ADMIN, mutating: true, maintenance: false },
    // read / ls (issue 13): every role may call; the service limits
    // /var/lib/bronze and /etc (config, leases, plugin state) to operator and
    // admin and audits those calls, and refused paths (secrets, escapes) under
    // any root, itself: most calls are of /proc and /sys, not audited.
    read("/bronze.v1.FileService/Read"),
    read("/bronze.v1.FileService/List"),
    // mounts / disks / usage and the support bundle (issue 13). The bundle
    // gathers every log, dmesg and every resource into one file: operator
    // (people who debug nodes file bug reports), audited like a mutating
    // call; the config in it is for admins only and never has a private key.
    read("/bronze.v1.StorageService/Mounts"),
    read("/bronze.v1.StorageService/Disks"),
    read("/bronze.v1.StorageService/Usage"),
    Rule { method: "/bronze.v1.SupportService/Bundle", roles: OPERATOR, mutating: true, maintenance: false },
    read("/grpc.health.v1.Health/Check"),
    read("/grpc.health.v1.Health/Watch"),
    read("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
    read("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
];

/// The rule for `path`; unknown methods are admin-only and audited.
pub fn rule_for(path: &str) -> Rule {
    TABLE.iter().find(|r| r.method == path).copied().unwrap_or(Rule {
        method: "",
        roles: ADMIN,
        mutating: true,
        maintenance: false,
    })
}

/// `/bronze.v1.MachineService/Reboot` → `Reboot`.
pub fn short_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The authenticated caller, put into request extensions for services.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: String,
    pub roles: Vec<Role>,
    pub peer: String,
    /// Anonymous maintenance-mode caller.
    pub maintenance: bool,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Roles as strings, for audit and messages.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.iter().map(|r| r.as_str().to_string()).collect()
    }

    /// "os:reader" or "os:reader+os:operator" for messages.
    pub fn role_label(&self) -> String {
        if self.roles.is_empty() { "(no role)".into() } else { self.role_names().join("+") }
    }
}

/// Decides one request. Pure apart from the verification cache. A denial
/// still names the caller as far as it is known, for the audit trail.
pub fn authorize(
    security: &Security,
    path: &str,
    certs: Option<&[CertificateDer<'static>]>,
    peer: String,
) -> Result<Caller, (Status, Caller)> {
    let rule = rule_for(path);
    let gate = security.gate();
    let anonymous =
        |subject: &str| Caller { subject: subject.into(), roles: vec![], peer: peer.clone(), maintenance: false };
    match &*gate {
        Gate::Maintenance => {
            let caller = Caller { maintenance: true, ..anonymous("anonymous (maintenance mode)") };
            if rule.maintenance {
                return Ok(caller);
            }
            let status = Status::permission_denied(format!(
                "maintenance mode: {} is not available until a machine config is applied (only Version and ApplyConfiguration are)",
                short_name(path)
            ));
            Err((status, caller))
        }
        Gate::Secure(_) => {
            let Some(certs) = certs.filter(|c| !c.is_empty()) else {
                let status = Status::unauthenticated("client certificate required: the node has a config, use mTLS");
                return Err((status, anonymous("anonymous")));
            };
            let identity =
                security.verify_client(&gate, certs).map_err(|s| (s, anonymous("unverified certificate")))?;
            let caller = Caller { subject: identity.subject, roles: identity.roles, peer, maintenance: false };
            if caller.roles.is_empty() {
                let status = Status::permission_denied(
                    "client certificate carries no role (expected O=os:admin, os:operator or os:reader)",
                );
                return Err((status, caller));
            }
            if !rule.roles.iter().any(|r| caller.has(*r)) {
                let status =
                    Status::permission_denied(format!("{} may not call {}", caller.role_label(), short_name(path)));
                return Err((status, caller));
            }
            Ok(caller)
        }
    }
}

/// Tower layer applying [`authorize`] and auditing mutating calls.
#[derive(Clone)]
pub struct AuthzLayer {
    pub security: Arc<Security>,
    pub audit: Arc<AuditLog>,
}

impl<S> tower::Layer<S> for AuthzLayer {
    type Service = AuthzService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthzService { inner, security: self.security.clone(), audit: self.audit.clone() }
    }
}

#[derive(Clone)]
pub struct AuthzService<S> {
    inner: S,
    security: Arc<Security>,
    audit: Arc<AuditLog>,
}

impl<S, B> tower::Service<Request<B>> for AuthzService<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        let peer = info.and_then(|i| i.get_ref().remote_addr()).map(|a| a.to_string()).unwrap_or_default();
        let certs = info.and_then(|i| i.peer_certs());
        let rule = rule_for(&path);
        let decision = authorize(&self.security, &path, certs.as_deref().map(|v| v.as_slice()), peer);
        // Take the service that was driven to readiness; leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let audit = self.audit.clone();
        Box::pin(async move {
            let caller = match decision {
                Ok(caller) => caller,
                Err((status, caller)) => {
                    audit.record(&caller, &path, &status);
                    return Ok(status.into_http());
                }
            };
            req.extensions_mut().insert(caller.clone());
            let response = inner.call(req).await?;
            if rule.mutating {
                // Unary errors come back trailers-only: the status is in the
                // headers. No status header means the call succeeded.
                let status = Status::from_header_map(response.headers()).unwrap_or_else(|| Status::ok(""));
                audit.record(&caller, &path, &status);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_no_duplicates_and_full_paths() {
        let mut seen = std::collections::HashSet::new();
        for rule in TABLE {
            assert!(seen.insert(rule.method), "{} twice", rule.method);
            assert!(rule.method.starts_with('/') && rule.method.matches('/').count() == 2, "{}", rule.method);
            assert!(!rule.roles.is_empty());
        }
    }

    #[test]
    fn unknown_methods_are_admin_only() {
        let rule = rule_for("/bronze.v1.NewService/Thing");
        assert_eq!(rule.roles, &[Role::Admin]);
        assert!(rule.mutating && !rule.maintenance);
    }

    #[test]
    fn only_version_and_apply_in_maintenance() {
        let names: Vec<_> = TABLE.iter().filter(|r| r.maintenance).map(|r| short_name(r.method)).collect();
        assert_eq!(names, ["Version", "ApplyConfiguration"]);
    }
}
