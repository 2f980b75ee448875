//! Real netlink against the real kernel, inside a private network
//! namespace per test, so the host's links are never touched.
//!
//! Each test runs its body on a fresh thread that calls
//! `unshare(CLONE_NEWNET)` (network namespaces are per thread), then drives
//! a current-thread tokio runtime on that thread so every netlink socket is
//! opened inside the namespace. Without root (or without CAP_SYS_ADMIN in
//! a container) a test says "skipped because ..." and passes.
#![allow(unsafe_code)]

use super::apply::{Applier, RESOLV_CONF};
use super::netlink::{Netlink, RtNetlink};
use super::observe::{Publisher, Snapshot, observe};
use super::plan::{AddressPlan, LinkPlan, NetworkPlan, RoutePlan};
use super::resources::{ADDRESS_STATUS, LINK_STATUS, ROUTE_STATUS};
use crate::state::Store;
use bronze_config::{Interface, Network, Route};
use rtnetlink::LinkVeth;
use std::future::Future;
use std::sync::Arc;

/// Runs `body` in a new network namespace; returns without running it
/// (saying why) when one cannot be created.
fn in_new_netns<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    if !nix::unistd::Uid::effective().is_root() {
        println!("skipped because creating a network namespace needs root");
        return;
    }
    let outcome = std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET takes no pointers; it moves
        // only the calling thread into a new network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let err = std::io::Error::last_os_error();
            println!("skipped because creating a network namespace needs root with CAP_SYS_ADMIN: {err}");
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        runtime.block_on(body());
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn cidr(s: &str) -> bronze_config::Cidr {
    s.parse().unwrap()
}

/// Creates a veth pair and sets the peer up, so `name` has a carrier and
/// behaves like a cabled NIC. (veth rather than dummy: the Firecracker
/// guest kernels these tests run on are built without CONFIG_DUMMY.)
async fn create_veth(nl: &RtNetlink, name: &str, peer: &str) -> u32 {
    nl.handle().link().add(LinkVeth::new(name, peer).build()).execute().await.expect("create veth pair");
    let peer = nl.link_index(peer).await.unwrap().expect("peer exists");
    nl.set_link(peer, true).await.unwrap();
    nl.link_index(name).await.unwrap().expect("veth exists")
}

fn route_ids(snapshot: &Snapshot, link: &str) -> Vec<(String, u32, String)> {
    snapshot
        .route_ids()
        .into_iter()
        .filter(|(_, r)| r.link == link && r.protocol == "static")
        .map(|(id, r)| (id, r.metric, r.family.clone()))
        .collect()
}

fn address_ids(snapshot: &Snapshot, link: &str) -> Vec<String> {
    snapshot.addresses.iter().filter(|a| a.link == link && a.scope == "universe").map(|a| a.id()).collect()
}

#[test]
fn apply_observe_reapply_and_links_down_on_a_veth_link() {
    in_new_netns(|| async {
        let nl = Arc::new(RtNetlink::connect().unwrap());
        // A fresh namespace has only a (down) loopback: proof we are not in
        // the host's namespace before changing anything.
        let fresh = observe().await.unwrap();
        assert_eq!(fresh.links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["lo"]);
        let lo = fresh.links[0].index;
        nl.set_link(lo, true).await.unwrap();
        let veth = create_veth(&nl, "veth0", "veth0p").await;

        let mut iface = Interface::new("veth0".parse().unwrap());
        iface.addresses = vec![cidr("10.20.0.5/24"), cidr("fd00:20::5/64")];
        iface.routes = vec![
            Route {
                network: cidr("10.30.0.0/16"),
                gateway: Some("10.20.0.1".parse().unwrap()),
                metric: Some(100),
                on_link: false,
            },
            Route { network: cidr("10.40.0.0/24"), gateway: None, metric: None, on_link: false },
            Route {
                network: cidr("fd00:30::/48"),
                gateway: Some("fd00:20::1".parse().unwrap()),
                metric: None,
                on_link: false,
            },
        ];
        iface.mtu = Some(1400);
        let network = Network {
            interfaces: vec![iface],
            nameservers: vec!["10.20.0.53".parse().unwrap()],
            search_domains: vec!["lan".parse().unwrap()],
            ..Default::default()
        };
        let cmdline = super::cmdline::parse("bronze.ip=veth0:10.20.0.9/24:10.20.0.1").unwrap();
        let layers = super::layers::Layers {
            cmdline: super::layers::cmdline_layer(&cmdline),
            config: super::layers::config_layer(&network, None, &[], &|_| Ok(None)),
            ..Default::default()
        };
        let first = super::layers::merge(&layers).unwrap().plan();
        assert_eq!(first.addresses.len(), 2, "the config's veth0 replaced the cmdline's");

        let root = tempfile::tempdir().unwrap();
        let applier = Applier::new(nl.clone(), root.path());
        let report = applier.apply(&first).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!((report.added_addresses.len(), report.added_routes.len()), (2, 3));
        assert!(report.resolv_conf_written);
        let resolv = std::fs::read_to_string(root.path().join(RESOLV_CONF)).unwrap();
        assert!(resolv.ends_with("nameserver 10.20.0.53\nsearch lan\n"), "{resolv}");

        let seen = observe().await.unwrap();
        let link = seen.link("veth0").unwrap();
        assert_eq!((link.index, link.kind.as_str(), link.mtu, link.up, link.carrier), (veth, "veth", 1400, true, true));
        assert_eq!(link.hardware_address.len(), 17, "a MAC: {}", link.hardware_address);
        assert_eq!(address_ids(&seen, "veth0"), ["veth0/10.20.0.5/24", "veth0/fd00:20::5/64"]);
        assert_eq!(
            route_ids(&seen, "veth0"),
            [
                ("10.30.0.0/16 via 10.20.0.1 dev veth0".to_string(), 100, "inet".to_string()),
                ("10.40.0.0/24 dev veth0".to_string(), 1024, "inet".to_string()),
                ("fd00:30::/48 via fd00:20::1 dev veth0".to_string(), 1024, "inet6".to_string()),
            ]
        );

        // Published as resources.
        let store = Store::new();
        Publisher::new(&store).unwrap().publish(&seen).unwrap();
        assert!(store.get(&LINK_STATUS, "veth0").is_some());
        assert!(store.get(&ADDRESS_STATUS, "veth0/10.20.0.5/24").is_some());
        assert!(store.get(&ROUTE_STATUS, "10.30.0.0/16 via 10.20.0.1 dev veth0").is_some());

        // Re-applying the same plan: everything is already there.
        let report = applier.apply(&first).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert!(report.added_addresses.is_empty() && report.added_routes.is_empty());
        assert!(!report.resolv_conf_written);

        // A smaller plan: what is no longer planned goes away.
        let smaller = NetworkPlan {
            links: vec![LinkPlan { name: "veth0".into(), up: true, mtu: Some(1500), kind: None }],
            addresses: vec![AddressPlan { link: "veth0".into(), address: cidr("10.20.0.5/24") }],
            routes: vec![RoutePlan {
                link: "veth0".into(),
                destination: cidr("0.0.0.0/0"),
                gateway: Some("10.20.0.1".parse().unwrap()),
                metric: 1024,
                on_link: false,
            }],
            ..Default::default()
        };
        let report = applier.apply(&smaller).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!((report.removed_addresses.len(), report.removed_routes.len()), (1, 3));
        let seen = observe().await.unwrap();
        assert_eq!(seen.link("veth0").unwrap().mtu, 1500);
        assert_eq!(address_ids(&seen, "veth0"), ["veth0/10.20.0.5/24"]);
        assert_eq!(
            route_ids(&seen, "veth0"),
            [("0.0.0.0/0 via 10.20.0.1 dev veth0".to_string(), 1024, "inet".to_string())]
        );

        // Shutdown: every link but loopback goes down.
        let report = applier.links_down().await.unwrap();
        assert!(report.errors.is_empty(), "{report:?}");
        let mut down = report.down.clone();
        down.sort();
        assert_eq!(down, ["veth0", "veth0p"]);
        let seen = observe().await.unwrap();
        assert!(!seen.link("veth0").unwrap().up && !seen.link("veth0p").unwrap().up);
        assert!(seen.link("lo").unwrap().up);
    });
}

#[test]
fn kernel_refusals_and_missing_links_are_reported_by_name() {
    in_new_netns(|| async {
        let nl = Arc::new(RtNetlink::connect().unwrap());
        assert_eq!(observe().await.unwrap().links.len(), 1, "a fresh namespace");
        create_veth(&nl, "veth1", "veth1p").await;
        // Bypasses plan validation on purpose: the kernel's own refusal
        // must come back naming the route.
        let plan = NetworkPlan {
            links: vec![
                LinkPlan { name: "veth1".into(), up: true, mtu: Some(70000), kind: None },
                LinkPlan { name: "eth9".into(), up: true, mtu: None, kind: None },
            ],
            addresses: vec![AddressPlan { link: "veth1".into(), address: cidr("10.60.0.5/24") }],
            routes: vec![RoutePlan {
                link: "veth1".into(),
                destination: cidr("10.50.0.0/16"),
                gateway: Some("10.99.0.1".parse().unwrap()),
                metric: 1024,
                on_link: false,
            }],
            ..Default::default()
        };
        let applier = Applier::new(nl.clone(), "/nonexistent-root");
        let report = applier.apply(&plan).await.unwrap();
        assert_eq!(report.missing_links, ["eth9"]);
        assert_eq!(
            report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "cannot set link veth1 mtu 70000: Invalid argument (os error 22)",
                "cannot add route 10.50.0.0/16 via 10.99.0.1 dev veth1 metric 1024: Network is unreachable (os error 101)",
            ]
        );
        assert!(observe().await.unwrap().link("veth1").unwrap().up, "up despite the refused mtu");
        assert_eq!(report.added_addresses.len(), 1);
    });
}

/// Read-only, so it runs in the test's own namespace (and unprivileged).
#[test]
fn observe_reads_the_current_namespace() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let snapshot = runtime.block_on(observe()).unwrap();
    let lo = snapshot.link("lo").expect("every namespace has lo");
    assert_eq!(lo.link_type, "loopback");
}
