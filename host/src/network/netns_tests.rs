//! Real netlink against the real kernel, inside a private network
//! namespace per test, so the host's links are never touched.
//!
//! Each test runs its body on a fresh thread that calls
//! `unshare(CLONE_NEWNET)` (network namespaces are per thread), then drives
//! a current-thread tokio runtime on that thread so every netlink socket is
//! opened inside the namespace. Without root (or without CAP_SYS_ADMIN in
//! a container) a test says "skipped because ..." and passes.
#![allow(unsafe_code)]

use super::apply::{Applier, HOSTS, RESOLV_CONF};
use super::controller::NetworkStatusController;
use super::netlink::{Netlink, RtNetlink};
use super::observe::{KernelObserver, Publisher, Snapshot, observe};
use super::plan::{AddressPlan, BondMode, BondPlan, LinkKind, LinkPlan, NetworkPlan, RoutePlan, VlanPlan};
use super::resources::{ADDRESS_STATUS, LINK_STATUS, ROUTE_STATUS};
use crate::controllers::Runtime;
use crate::state::Store;
use bronze_config::{Interface, Network, Route};
use rtnetlink::LinkVeth;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// The snapshot's link dump leaves out the IPv6 statistics the kernel
/// otherwise adds to every link (the counters in `IFLA_STATS64` it always
/// sends); a plain dump of the same namespace carries them, so the check can
/// fail.
#[test]
fn the_link_dump_skips_the_ipv6_statistics() {
    in_new_netns(|| async {
        use futures::TryStreamExt;
        use rtnetlink::packet_route::link::{AfSpecInet6, AfSpecUnspec, LinkAttribute, LinkMessage};
        let (connection, handle, _) = rtnetlink::new_connection().unwrap();
        tokio::spawn(connection);
        let ipv6_stats = |links: &[LinkMessage]| {
            links
                .iter()
                .flat_map(|l| &l.attributes)
                .filter_map(|a| match a {
                    LinkAttribute::AfSpecUnspec(specs) => Some(specs),
                    _ => None,
                })
                .flatten()
                .filter_map(|spec| match spec {
                    AfSpecUnspec::Inet6(inet6) => Some(inet6),
                    _ => None,
                })
                .flatten()
                .filter(|a| matches!(a, AfSpecInet6::Stats(_) | AfSpecInet6::Icmp6Stats(_)))
                .count()
        };
        let plain: Vec<LinkMessage> = handle.link().get().execute().try_collect().await.unwrap();
        assert!(ipv6_stats(&plain) > 0, "a plain dump carries IPv6 statistics: {plain:?}");
        let ours: Vec<LinkMessage> = super::observe::link_dump(&handle).execute().try_collect().await.unwrap();
        assert_eq!(ours.len(), plain.len());
        assert_eq!(ipv6_stats(&ours), 0, "{ours:?}");
    });
}

fn address(link: &str, a: &str) -> AddressPlan {
    AddressPlan { link: link.into(), address: cidr(a) }
}

fn route(link: &str, dest: &str, gateway: Option<&str>, metric: u32, on_link: bool) -> RoutePlan {
    RoutePlan {
        link: link.into(),
        destination: cidr(dest),
        gateway: gateway.map(|g| g.parse().unwrap()),
        metric,
        on_link,
    }
}

/// `ip -d link show NAME` run from this thread, so inside its namespace
/// (a child inherits the forking thread's network namespace).
fn ip_details(name: &str) -> String {
    let out = std::process::Command::new("ip").args(["-d", "link", "show", name]).output().expect("run ip");
    assert!(out.status.success(), "ip -d link show {name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether this kernel can create links of `kind` (the Firecracker guest
/// kernels have neither bonding nor 802.1Q): tries one on `parent`.
async fn kernel_has(nl: &RtNetlink, kind: &str, parent: u32) -> bool {
    let bond = BondPlan {
        mode: BondMode::BalanceRr,
        members: vec![],
        miimon: None,
        updelay: None,
        downdelay: None,
        lacp_rate_fast: false,
        xmit_hash_policy: None,
    };
    let probe = match kind {
        "bond" => nl.create_bond("probe-bond", &bond).await,
        _ => nl.create_vlan("probe-vlan", parent, 4000).await,
    };
    match probe {
        Ok(()) => {
            let index = nl.link_index(if kind == "bond" { "probe-bond" } else { "probe-vlan" }).await.unwrap();
            nl.delete_link(index.expect("probe exists")).await.unwrap();
            true
        }
        Err(e) if e.is(libc::EOPNOTSUPP) => {
            let option = if kind == "bond" { "CONFIG_BONDING" } else { "CONFIG_VLAN_8021Q" };
            println!("skipped because this kernel cannot create a {kind} link (no {option})");
            false
        }
        Err(e) => panic!("creating a probe {kind}: {e}"),
    }
}

#[test]
fn a_second_apply_writes_nothing_and_on_link_gateways_are_accepted() {
    in_new_netns(|| async {
        let nl = Arc::new(RtNetlink::connect().unwrap());
        create_veth(&nl, "veth2", "veth2p").await;
        let link = "veth2";
        let plan = NetworkPlan {
            links: vec![LinkPlan { name: link.into(), up: true, mtu: Some(1450), kind: None }],
            addresses: vec![address(link, "10.70.0.5/24"), address(link, "fd00:70::5/64")],
            routes: vec![
                // The same destination at two metrics: both exist.
                route(link, "10.71.0.0/16", Some("10.70.0.1"), 50, false),
                route(link, "10.71.0.0/16", Some("10.70.0.1"), 300, false),
                route(link, "10.72.0.0/24", None, 100, false),
                // The gateway is in no address's subnet: only on-link works.
                route(link, "0.0.0.0/0", Some("192.0.2.1"), 1024, true),
            ],
            resolvers: vec!["10.70.0.53".parse().unwrap()],
            hostname: Some("node-a.lan".into()),
            ..Default::default()
        };
        let root = tempfile::tempdir().unwrap();
        let applier = Applier::new(nl.clone(), root.path());
        let report = applier.apply(&plan).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(report.writes, 8, "mtu, up, 2 addresses, 4 routes: {report:?}");
        assert!(report.resolv_conf_written && report.hosts_written);
        let hosts = std::fs::read_to_string(root.path().join(HOSTS)).unwrap();
        assert!(hosts.ends_with("127.0.1.1\tnode-a.lan node-a\n"), "{hosts}");

        let seen = observe().await.unwrap();
        let veth = seen.link(link).unwrap();
        assert_eq!((veth.mtu, veth.up), (1450, true));
        assert_eq!(address_ids(&seen, link), ["veth2/10.70.0.5/24", "veth2/fd00:70::5/64"]);
        assert_eq!(
            route_ids(&seen, link),
            [
                ("10.71.0.0/16 via 10.70.0.1 dev veth2".to_string(), 50, "inet".to_string()),
                ("10.72.0.0/24 dev veth2".to_string(), 100, "inet".to_string()),
                ("10.71.0.0/16 via 10.70.0.1 dev veth2 metric 300".to_string(), 300, "inet".to_string()),
                ("0.0.0.0/0 via 192.0.2.1 dev veth2".to_string(), 1024, "inet".to_string()),
            ]
        );

        // The same plan again: nothing differs, nothing is written.
        let report = applier.apply(&plan).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(report.writes, 0, "{report:?}");
        assert!(!report.resolv_conf_written && !report.hosts_written);

        // Without the on-link flag the kernel refuses such a gateway.
        let mut off_link = plan.clone();
        off_link.routes.push(route(link, "10.73.0.0/16", Some("198.51.100.1"), 1024, false));
        let report = applier.apply(&off_link).await.unwrap();
        assert_eq!(
            report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "cannot add route 10.73.0.0/16 via 198.51.100.1 dev veth2 metric 1024: Network is unreachable (os error 101)"
            ]
        );
        assert_eq!(report.writes, 1);

        // A smaller plan: the IPv6 address and the metric-300 route go;
        // the kernel's own prefix and link-local routes stay.
        let mut smaller = plan.clone();
        smaller.addresses.retain(|a| a.address.addr().is_ipv4());
        smaller.routes.retain(|r| r.metric != 300);
        let report = applier.apply(&smaller).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!((report.writes, report.removed_addresses.len(), report.removed_routes.len()), (2, 1, 1));
        let seen = observe().await.unwrap();
        assert_eq!(address_ids(&seen, link), ["veth2/10.70.0.5/24"]);
        assert!(seen.addresses.iter().any(|a| a.link == link && a.address.starts_with("fe80:")), "link-local kept");
        assert!(
            seen.routes.iter().any(|r| r.link == link && r.protocol == "kernel" && r.destination == "10.70.0.0/24")
        );
        assert_eq!(route_ids(&seen, link).len(), 3);

        // A restarted bronzed (new applier) finds everything in place.
        let report = Applier::new(nl.clone(), root.path()).apply(&smaller).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(report.writes, 0, "{report:?}");
    });
}

#[test]
fn a_bond_of_two_veths_with_a_vlan_on_it_adopted_after_a_restart_then_taken_back() {
    in_new_netns(|| async {
        let nl = Arc::new(RtNetlink::connect().unwrap());
        let bm0 = create_veth(&nl, "bm0", "bm0p").await;
        create_veth(&nl, "bm1", "bm1p").await;
        if !kernel_has(&nl, "bond", bm0).await || !kernel_has(&nl, "vlan", bm0).await {
            return;
        }
        let bond = BondPlan {
            mode: BondMode::ActiveBackup,
            members: vec!["bm0".into(), "bm1".into()],
            miimon: Some(100),
            updelay: Some(200),
            downdelay: Some(200),
            lacp_rate_fast: false,
            xmit_hash_policy: None,
        };
        let plan = NetworkPlan {
            links: vec![
                LinkPlan { name: "bond0".into(), up: true, mtu: Some(1400), kind: Some(LinkKind::Bond(bond)) },
                LinkPlan {
                    name: "bond0.42".into(),
                    up: true,
                    mtu: None,
                    kind: Some(LinkKind::Vlan(VlanPlan { parent: "bond0".into(), id: 42 })),
                },
            ],
            addresses: vec![address("bond0.42", "10.80.0.5/24")],
            routes: vec![route("bond0.42", "10.81.0.0/16", Some("10.80.0.1"), 20, false)],
            ..Default::default()
        };
        let applier = Applier::new(nl.clone(), "/nonexistent-root");
        let report = applier.apply(&plan).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(report.created_links, ["bond0", "bond0.42"]);

        let seen = observe().await.unwrap();
        let kinds: Vec<_> = ["bond0", "bond0.42"].iter().map(|n| seen.link(n).unwrap().kind.clone()).collect();
        assert_eq!(kinds, ["bond", "vlan"]);
        assert_eq!(
            (seen.link("bm0").unwrap().master.as_str(), seen.link("bm1").unwrap().master.as_str()),
            ("bond0", "bond0")
        );
        assert_eq!(seen.link("bond0").unwrap().mtu, 1400);
        assert!(seen.link("bond0").unwrap().up && seen.link("bond0.42").unwrap().up);
        let (bond0, vlan) = (seen.link("bond0").unwrap(), seen.link("bond0.42").unwrap());
        assert_eq!(bond0.bond_mode, "active-backup");
        assert_eq!((vlan.vlan_id, vlan.parent.as_str()), (Some(42), "bond0"));
        let details = ip_details("bond0");
        assert!(details.contains("mode active-backup") && details.contains("miimon 100"), "{details}");
        assert!(ip_details("bond0.42").contains("id 42"));
        assert_eq!(address_ids(&seen, "bond0.42"), ["bond0.42/10.80.0.5/24"]);
        assert_eq!(route_ids(&seen, "bond0.42")[0].0, "10.81.0.0/16 via 10.80.0.1 dev bond0.42");

        let report = applier.apply(&plan).await.unwrap();
        assert_eq!(report.writes, 0, "{report:?}");

        // bronzed restarts: the bond and VLAN are adopted, not recreated.
        let applier = Applier::new(nl.clone(), "/nonexistent-root");
        let report = applier.apply(&plan).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!((report.writes, report.created_links.len()), (0, 0));

        // Another mode: the bond is made again (its VLAN goes with it and
        // is made again too), the members enslaved again.
        let mut balance = plan.clone();
        let Some(LinkKind::Bond(bond)) = &mut balance.links[0].kind else { unreachable!() };
        bond.mode = BondMode::BalanceRr;
        let report = applier.apply(&balance).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(
            (report.deleted_links.clone(), report.created_links.clone()),
            (vec!["bond0".to_string()], vec!["bond0".to_string(), "bond0.42".to_string()])
        );
        let seen = observe().await.unwrap();
        assert_eq!(seen.link("bond0").unwrap().bond_mode, "balance-rr");
        assert_eq!(
            (seen.link("bm0").unwrap().master.as_str(), seen.link("bm1").unwrap().master.as_str()),
            ("bond0", "bond0")
        );
        assert_eq!(address_ids(&seen, "bond0.42"), ["bond0.42/10.80.0.5/24"]);
        assert_eq!(applier.apply(&balance).await.unwrap().writes, 0);
        let applier = Applier::new(nl.clone(), "/nonexistent-root");
        applier.apply(&plan).await.unwrap();

        // bm1 leaves the bond: released, the rest untouched.
        let mut one_member = plan.clone();
        let Some(LinkKind::Bond(bond)) = &mut one_member.links[0].kind else { unreachable!() };
        bond.members.retain(|m| m == "bm0");
        let report = applier.apply(&one_member).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(report.writes, 1, "{report:?}");
        let seen = observe().await.unwrap();
        assert_eq!(
            (seen.link("bm0").unwrap().master.as_str(), seen.link("bm1").unwrap().master.as_str()),
            ("bond0", "")
        );
        assert_eq!(applier.apply(&one_member).await.unwrap().writes, 0);

        // A plan with bm0 alone: VLAN and bond deleted, members released.
        let alone = NetworkPlan { links: vec![LinkPlan::up("bm0")], ..Default::default() };
        let report = applier.apply(&alone).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(report.deleted_links, ["bond0.42", "bond0"]);
        let seen = observe().await.unwrap();
        assert!(seen.link("bond0").is_none() && seen.link("bond0.42").is_none());
        assert_eq!((seen.link("bm0").unwrap().master.as_str(), seen.link("bm1").unwrap().master.as_str()), ("", ""));
        assert!(seen.link("bm0").unwrap().up);
    });
}

#[test]
fn a_vlan_on_a_veth_with_an_address() {
    in_new_netns(|| async {
        let nl = Arc::new(RtNetlink::connect().unwrap());
        let parent = create_veth(&nl, "vp0", "vp0p").await;
        if !kernel_has(&nl, "vlan", parent).await {
            return;
        }
        let plan = NetworkPlan {
            links: vec![
                LinkPlan::up("vp0"),
                LinkPlan {
                    name: "vp0.7".into(),
                    up: true,
                    mtu: Some(1400),
                    kind: Some(LinkKind::Vlan(VlanPlan { parent: "vp0".into(), id: 7 })),
                },
            ],
            addresses: vec![address("vp0.7", "10.90.0.5/24")],
            ..Default::default()
        };
        let applier = Applier::new(nl.clone(), "/nonexistent-root");
        let report = applier.apply(&plan).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        let seen = observe().await.unwrap();
        let vlan = seen.link("vp0.7").unwrap();
        assert_eq!((vlan.kind.as_str(), vlan.mtu, vlan.up), ("vlan", 1400, true));
        assert!(ip_details("vp0.7").contains("vlan protocol 802.1Q id 7"));
        assert_eq!((vlan.vlan_id, vlan.parent.as_str()), (Some(7), "vp0"));
        assert_eq!(applier.apply(&plan).await.unwrap().writes, 0);

        // Another id under the same name: made again.
        let mut eight = plan.clone();
        eight.links[1].kind = Some(LinkKind::Vlan(VlanPlan { parent: "vp0".into(), id: 8 }));
        let report = applier.apply(&eight).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!((report.deleted_links, report.created_links), (vec!["vp0.7".into()], vec!["vp0.7".into()]));
        assert!(ip_details("vp0.7").contains("vlan protocol 802.1Q id 8"));
        assert_eq!(address_ids(&observe().await.unwrap(), "vp0.7"), ["vp0.7/10.90.0.5/24"]);
        let report = applier.apply(&NetworkPlan::default()).await.unwrap();
        assert_eq!(report.deleted_links, ["vp0.7"]);
    });
}

#[test]
fn a_new_link_is_published_on_the_netlink_event_well_before_the_timer() {
    in_new_netns(|| async {
        let store = Store::new();
        let controller = Arc::new(NetworkStatusController::new(
            Publisher::new(&store).unwrap(),
            Arc::new(KernelObserver::new("/nonexistent-sysfs")),
            Arc::new(tokio::sync::Notify::new()),
        ));
        let mut snapshots = controller.snapshots();
        let mut runtime = Runtime::default();
        runtime.spawn(controller);
        snapshots.changed().await.unwrap();
        assert!(store.get(&LINK_STATUS, "lo").is_some());

        let started = Instant::now();
        let status = std::process::Command::new("ip")
            .args(["link", "add", "ev0", "type", "veth", "peer", "name", "ev0p"])
            .status()
            .expect("run ip");
        assert!(status.success());
        let published = tokio::time::timeout(Duration::from_secs(3), async {
            while store.get(&LINK_STATUS, "ev0").is_none() {
                snapshots.changed().await.unwrap();
            }
        })
        .await;
        let took = started.elapsed();
        assert!(published.is_ok(), "ev0 not published within 3 s");
        assert!(took < Duration::from_secs(1), "took {took:?}: the 5 s timer, not the event");
        assert!(snapshots.borrow().link("ev0p").is_some());
        println!("ev0 published {took:?} after ip link add");
        runtime.stop().await;
    });
}
