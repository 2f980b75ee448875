//! Compares a network plan (the `ok` JSON of `plugins run` on a network
//! configurator, as `host/src/plugins/worlds/network.rs` `plan_json`
//! renders it) with the `PlatformNetworkConfig` Talos's platform tests
//! expect for the same document (`talos-expected*.yaml` in
//! `../shared/fixtures/platforms/`), field by field:
//!
//! - addresses per link;
//! - routes (link, destination, gateway), then their metric and on-link
//!   flag. Talos writes an on-link gateway as a second, link-scope route
//!   to the gateway's /32 or /128; that route is folded into the gateway
//!   route's on-link flag here, so both sides say the same thing once;
//! - links: their presence, kind (`""`, `bond`, `vlan`), MTU, bond master
//!   of each member, bond mode, miimon, up/down delay, LACP rate and
//!   transmit hash policy, VLAN parent and id;
//! - DHCP operators per link and family, with their route metric;
//! - resolvers, search domains, hostname (Talos's host and domain joined),
//!   time servers.
//!
//! Talos names links; a plan matches them by name, MAC or driver. A
//! `mac` match whose MAC is in `aliases` (MAC, Talos's name) is compared
//! under Talos's name and reported once as `links.match: ...`; any other
//! shows as `mac <mac>` or `driver <driver>`. Zero metrics, MTUs and bond
//! timers mean "unset" on both sides.
//!
//! The result is one sorted line per difference, so a test asserts that
//! the differences are exactly its documented list.

use anyhow::{Context, bail};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// One `talos-expected*.yaml`, loaded and normalised.
#[derive(Debug, Clone)]
pub struct Expected {
    pub path: PathBuf,
    model: Model,
}

/// A route's attributes beyond its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RouteAttrs {
    metric: Option<u32>,
    on_link: bool,
}

/// A bond's settings, as both sides can say them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct BondAttrs {
    mode: String,
    miimon: Option<u32>,
    updelay: Option<u32>,
    downdelay: Option<u32>,
    lacp_rate: String,
    hash: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct LinkAttrs {
    kind: String,
    mtu: Option<u32>,
    master: Option<String>,
    bond: Option<BondAttrs>,
    /// (parent, id)
    vlan: Option<(String, u32)>,
}

#[derive(Debug, Clone, Default)]
struct Model {
    /// (link, cidr)
    addresses: BTreeSet<(String, String)>,
    /// (link, destination, gateway or "")
    routes: BTreeMap<(String, String, String), RouteAttrs>,
    links: BTreeMap<String, LinkAttrs>,
    /// (link, "dhcp4"|"dhcp6") → route metric
    operators: BTreeMap<(String, String), Option<u32>>,
    dns: BTreeSet<String>,
    search: BTreeSet<String>,
    hostname: Option<String>,
    time: BTreeSet<String>,
    /// Lines the plan side adds (MAC matches compared under Talos's name).
    notes: BTreeSet<String>,
}

/// Loads and normalises a `talos-expected*.yaml`.
pub fn expected(path: impl AsRef<Path>) -> anyhow::Result<Expected> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let raw = serde_json::to_value(&yaml).with_context(|| format!("{} as JSON", path.display()))?;
    if !raw.is_object() {
        bail!("{}: not a PlatformNetworkConfig mapping", path.display());
    }
    let model = talos_model(&raw).with_context(|| format!("normalise {}", path.display()))?;
    Ok(Expected { path: path.to_path_buf(), model })
}

/// The differences between Talos's expectation and a plan (the `ok` JSON),
/// one sorted line each; empty when they agree.
pub fn compare(expected: &Expected, plan: &Value, aliases: &[(&str, &str)]) -> Vec<String> {
    let ours = match plan_model(plan, aliases) {
        Ok(m) => m,
        Err(e) => return vec![format!("plan: {e:#}")],
    };
    let talos = &expected.model;
    let mut out: BTreeSet<String> = ours.notes.clone();

    for (link, cidr) in talos.addresses.difference(&ours.addresses) {
        out.insert(format!("addresses: talos has {cidr} on {link}, bronze does not"));
    }
    for (link, cidr) in ours.addresses.difference(&talos.addresses) {
        out.insert(format!("addresses: bronze has {cidr} on {link}, talos does not"));
    }

    for (key, t) in &talos.routes {
        let Some(o) = ours.routes.get(key) else {
            out.insert(format!("routes: talos has {}, bronze does not", route(key, t)));
            continue;
        };
        if t.metric != o.metric {
            out.insert(format!(
                "routes: {}: talos metric {} bronze {}",
                route(key, &RouteAttrs { metric: None, on_link: false }),
                shown_u32(t.metric),
                shown_u32(o.metric)
            ));
        }
        if t.on_link != o.on_link {
            out.insert(format!(
                "routes: {}: talos on-link {} bronze {}",
                route(key, &RouteAttrs { metric: None, on_link: false }),
                t.on_link,
                o.on_link
            ));
        }
    }
    for (key, o) in &ours.routes {
        if !talos.routes.contains_key(key) {
            out.insert(format!("routes: bronze has {}, talos does not", route(key, o)));
        }
    }

    for (name, t) in &talos.links {
        let Some(o) = ours.links.get(name) else {
            out.insert(format!("links: talos has {name}, bronze does not"));
            continue;
        };
        let mut field = |what: &str, t: String, o: String| {
            if t != o {
                out.insert(format!("links.{what}: {name}: talos {t} bronze {o}"));
            }
        };
        field("kind", format!("{:?}", t.kind), format!("{:?}", o.kind));
        field("mtu", shown_u32(t.mtu), shown_u32(o.mtu));
        field("master", shown(&t.master), shown(&o.master));
        field("vlan", format!("{:?}", t.vlan), format!("{:?}", o.vlan));
        if let (Some(tb), Some(ob)) = (&t.bond, &o.bond) {
            field("bond.mode", tb.mode.clone(), ob.mode.clone());
            field("bond.miimon", shown_u32(tb.miimon), shown_u32(ob.miimon));
            field("bond.updelay", shown_u32(tb.updelay), shown_u32(ob.updelay));
            field("bond.downdelay", shown_u32(tb.downdelay), shown_u32(ob.downdelay));
            field("bond.lacpRate", tb.lacp_rate.clone(), ob.lacp_rate.clone());
            field("bond.xmitHashPolicy", shown(&tb.hash), shown(&ob.hash));
        }
    }
    for name in ours.links.keys() {
        if !talos.links.contains_key(name) {
            out.insert(format!("links: bronze has {name}, talos does not"));
        }
    }

    for (key @ (link, op), metric) in &talos.operators {
        match ours.operators.get(key) {
            None => out.insert(format!("operators: talos has {op} on {link}, bronze does not")),
            Some(m) if m != metric => out.insert(format!(
                "operators: {op} on {link}: talos routeMetric {} bronze {}",
                shown_u32(*metric),
                shown_u32(*m)
            )),
            Some(_) => false,
        };
    }
    for (link, op) in ours.operators.keys() {
        if !talos.operators.contains_key(&(link.clone(), op.clone())) {
            out.insert(format!("operators: bronze has {op} on {link}, talos does not"));
        }
    }

    if talos.hostname != ours.hostname {
        out.insert(format!("hostnames: talos {} bronze {}", shown(&talos.hostname), shown(&ours.hostname)));
    }
    sets(&mut out, "resolvers.dnsServers", &talos.dns, &ours.dns);
    sets(&mut out, "resolvers.searchDomains", &talos.search, &ours.search);
    sets(&mut out, "timeServers", &talos.time, &ours.time);
    out.into_iter().collect()
}

/// Whether `line` only says that Talos wrote its per-family default metric
/// (1024 for IPv4 routes and DHCP, 2048 for IPv6) where the plan leaves
/// the metric to the host.
pub fn is_default_metric(line: &str) -> bool {
    !line.contains(" has ")
        && (line.ends_with("talos metric 1024 bronze none")
            || line.ends_with("talos metric 2048 bronze none")
            || line.ends_with("talos routeMetric 1024 bronze none")
            || line.ends_with("talos routeMetric 2048 bronze none"))
}

fn sets(out: &mut BTreeSet<String>, field: &str, talos: &BTreeSet<String>, ours: &BTreeSet<String>) {
    for v in talos.difference(ours) {
        out.insert(format!("{field}: talos has {v}, bronze does not"));
    }
    for v in ours.difference(talos) {
        out.insert(format!("{field}: bronze has {v}, talos does not"));
    }
}

fn route((link, dst, gw): &(String, String, String), attrs: &RouteAttrs) -> String {
    let mut s = dst.clone();
    if !gw.is_empty() {
        s.push_str(&format!(" via {gw}"));
    }
    s.push_str(&format!(" on {link}"));
    if let Some(m) = attrs.metric {
        s.push_str(&format!(" metric {m}"));
    }
    if attrs.on_link {
        s.push_str(" on-link");
    }
    s
}

fn shown(v: &Option<String>) -> String {
    match v {
        Some(v) => format!("{v:?}"),
        None => "none".into(),
    }
}

fn shown_u32(v: Option<u32>) -> String {
    v.map_or_else(|| "none".into(), |v| v.to_string())
}

/// An address or CIDR printed the way Rust prints it; unparsable kept.
fn norm_ip(s: &str) -> String {
    let s = s.trim();
    if let Some((addr, len)) = s.split_once('/') {
        if let (Ok(a), Ok(l)) = (addr.parse::<IpAddr>(), len.parse::<u8>()) {
            return format!("{a}/{l}");
        }
        return s.to_string();
    }
    s.parse::<IpAddr>().map(|a| a.to_string()).unwrap_or_else(|_| s.to_string())
}

fn str_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    list(v, key).filter_map(str_of).collect()
}

/// A number where 0 (and absence) means unset.
fn nonzero(v: Option<&Value>) -> Option<u32> {
    v.and_then(Value::as_u64).map(|m| m as u32).filter(|m| *m != 0)
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(str_of).filter(|s| !s.is_empty())
}

fn talos_model(doc: &Value) -> anyhow::Result<Model> {
    let mut m = Model::default();
    for a in list(doc, "addresses") {
        let link = text(a.get("linkName")).context("an address without linkName")?;
        let cidr = text(a.get("address")).context("an address without address")?;
        m.addresses.insert((link, norm_ip(&cidr)));
    }
    // Routes, then link-scope host routes to a gateway folded into on-link.
    let mut host_routes = Vec::new();
    for r in list(doc, "routes") {
        let link = text(r.get("outLinkName")).unwrap_or_default();
        let family = text(r.get("family")).unwrap_or_default();
        let gw = text(r.get("gateway")).map(|g| norm_ip(&g)).unwrap_or_default();
        let dst = match text(r.get("dst")) {
            None if family == "inet6" => "::/0".to_string(),
            None => "0.0.0.0/0".to_string(),
            Some(d) => norm_ip(&d),
        };
        let attrs = RouteAttrs { metric: nonzero(r.get("priority")), on_link: false };
        if gw.is_empty() && text(r.get("scope")).as_deref() == Some("link") {
            host_routes.push((link, dst, attrs));
        } else {
            m.routes.insert((link, dst, gw), attrs);
        }
    }
    for (link, dst, attrs) in host_routes {
        let host = dst.trim_end_matches("/32").trim_end_matches("/128").to_string();
        let via = m.routes.iter_mut().find(|((l, _, g), _)| *l == link && *g == host && host != dst);
        match via {
            Some((_, r)) => r.on_link = true,
            None => {
                m.routes.insert((link, dst, String::new()), attrs);
            }
        }
    }
    for l in list(doc, "links") {
        let name = text(l.get("name")).context("a link without name")?;
        let entry = m.links.entry(name).or_default();
        let kind = text(l.get("kind")).unwrap_or_default();
        if !kind.is_empty() {
            entry.kind = kind;
        }
        entry.mtu = entry.mtu.or(nonzero(l.get("mtu")));
        entry.master = entry.master.clone().or(text(l.get("masterName")));
        if let Some(b) = l.get("bondMaster").filter(|b| b.is_object()) {
            entry.bond = Some(BondAttrs {
                mode: text(b.get("mode")).unwrap_or_else(|| "balance-rr".into()),
                miimon: nonzero(b.get("miimon")),
                updelay: nonzero(b.get("updelay")),
                downdelay: nonzero(b.get("downdelay")),
                lacp_rate: text(b.get("lacpRate")).unwrap_or_else(|| "slow".into()),
                hash: text(b.get("xmitHashPolicy")),
            });
        }
        if let Some(parent) = text(l.get("parentName")) {
            let id = l.get("vlan").and_then(|v| v.get("vlanID")).and_then(Value::as_u64).unwrap_or(0) as u32;
            entry.vlan = Some((parent, id));
        }
    }
    for o in list(doc, "operators") {
        let op = text(o.get("operator")).context("an operator without operator")?;
        let link = text(o.get("linkName")).unwrap_or_default();
        let metric = nonzero(o.get(&op).and_then(|s| s.get("routeMetric")));
        m.operators.insert((link, op), metric);
    }
    m.hostname = list(doc, "hostnames").next().and_then(|h| {
        let host = text(h.get("hostname")).unwrap_or_default();
        let fqdn = match text(h.get("domainname")) {
            Some(domain) => format!("{host}.{domain}"),
            None => host,
        };
        Some(fqdn).filter(|f| !f.is_empty())
    });
    for r in list(doc, "resolvers") {
        m.dns.extend(strings(r, "dnsServers").iter().map(|s| norm_ip(s)));
        m.search.extend(strings(r, "searchDomains").into_iter().map(|s| s.trim_end_matches('.').to_string()));
    }
    for t in list(doc, "timeServers") {
        m.time.extend(strings(t, "timeServers"));
    }
    Ok(m)
}

/// The name a plan's link match is compared under.
fn label(m: &Value, aliases: &[(&str, &str)], notes: &mut BTreeSet<String>) -> anyhow::Result<String> {
    if let Some(name) = m.get("name").and_then(Value::as_str) {
        return Ok(name.to_string());
    }
    if let Some(mac) = m.get("macaddress").and_then(Value::as_str) {
        let mac = mac.to_ascii_lowercase();
        if let Some((_, name)) = aliases.iter().find(|(a, _)| a.eq_ignore_ascii_case(&mac)) {
            notes.insert(format!("links.match: {name}: bronze matches mac {mac} (no current link has it)"));
            return Ok(name.to_string());
        }
        return Ok(format!("mac {mac}"));
    }
    if let Some(driver) = m.get("driver").and_then(Value::as_str) {
        return Ok(format!("driver {driver}"));
    }
    if let Some(path) = m.get("busPath").and_then(Value::as_str) {
        return Ok(format!("bus-path {path}"));
    }
    bail!("a link match that is none of name, macaddress, driver, busPath: {m}")
}

fn plan_model(plan: &Value, aliases: &[(&str, &str)]) -> anyhow::Result<Model> {
    if !plan.is_object() {
        bail!("not a plan object: {plan}");
    }
    let mut m = Model::default();
    let mut notes = BTreeSet::new();
    let addressing = |m: &mut Model, link: &str, a: &Value| {
        for cidr in strings(a, "addresses") {
            m.addresses.insert((link.to_string(), norm_ip(&cidr)));
        }
        for r in list(a, "routes") {
            let dst = text(r.get("to")).map(|d| norm_ip(&d)).unwrap_or_default();
            let gw = text(r.get("via")).map(|g| norm_ip(&g)).unwrap_or_default();
            let on_link = r.get("onLink").and_then(Value::as_bool).unwrap_or(false);
            m.routes.insert((link.to_string(), dst, gw), RouteAttrs { metric: nonzero(r.get("metric")), on_link });
        }
        for op in ["dhcp4", "dhcp6"] {
            if a.get(op).and_then(Value::as_bool).unwrap_or(false) {
                m.operators.insert((link.to_string(), op.to_string()), nonzero(a.get("dhcpRouteMetric")));
            }
        }
        nonzero(a.get("mtu"))
    };
    for e in list(plan, "ethernets") {
        let link = label(&e["match"], aliases, &mut notes)?;
        let mtu = addressing(&mut m, &link, &e["addressing"]);
        let entry = m.links.entry(link).or_default();
        entry.mtu = entry.mtu.or(mtu);
    }
    for b in list(plan, "bonds") {
        let name = text(b.get("name")).context("a bond without name")?;
        let mtu = addressing(&mut m, &name, &b["addressing"]);
        for member in list(b, "members") {
            let member = label(member, aliases, &mut notes)?;
            m.links.entry(member).or_default().master = Some(name.clone());
        }
        let entry = m.links.entry(name).or_default();
        entry.kind = "bond".into();
        entry.mtu = mtu;
        entry.bond = Some(BondAttrs {
            mode: text(b.get("mode")).unwrap_or_default(),
            miimon: nonzero(b.get("miimon")),
            updelay: nonzero(b.get("updelay")),
            downdelay: nonzero(b.get("downdelay")),
            lacp_rate: if b.get("lacpRateFast").and_then(Value::as_bool).unwrap_or(false) { "fast" } else { "slow" }
                .into(),
            hash: text(b.get("transmitHashPolicy")),
        });
    }
    for v in list(plan, "vlans") {
        let name = text(v.get("name")).context("a VLAN without name")?;
        let mtu = addressing(&mut m, &name, &v["addressing"]);
        let parent = label(&v["parent"], aliases, &mut notes)?;
        let id = v.get("id").and_then(Value::as_u64).unwrap_or(0) as u32;
        let entry = m.links.entry(name).or_default();
        entry.kind = "vlan".into();
        entry.mtu = mtu;
        entry.vlan = Some((parent, id));
    }
    m.dns.extend(strings(plan, "nameservers").iter().map(|s| norm_ip(s)));
    m.search.extend(strings(plan, "search").into_iter().map(|s| s.trim_end_matches('.').to_string()));
    m.hostname = text(plan.get("hostname"));
    m.time.extend(strings(plan, "timeServers"));
    m.notes = notes;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TALOS: &str = r#"
addresses:
    - {address: 10.0.0.5/24, linkName: eth0, family: inet4}
    - {address: 10.1.0.5/24, linkName: bond0.4, family: inet4}
links:
    - {name: eth0, mtu: 1450, kind: ""}
    - {name: eth1, mtu: 0, kind: "", masterName: bond0}
    - {name: eth2, mtu: 0, kind: "", masterName: bond0}
    - name: bond0
      mtu: 9000
      kind: bond
      bondMaster: {mode: 802.3ad, xmitHashPolicy: layer3+4, lacpRate: fast, miimon: 100, updelay: 200, downdelay: 200}
    - {name: bond0.4, mtu: 0, kind: vlan, parentName: bond0, vlan: {vlanID: 4, vlanProtocol: 802.1q}}
routes:
    - {family: inet4, dst: "", gateway: 10.0.0.1, outLinkName: eth0, priority: 100, scope: global}
    - {family: inet4, dst: 10.0.0.1/32, gateway: "", outLinkName: eth0, priority: 100, scope: link}
    - {family: inet6, dst: "", gateway: "fe80::1", outLinkName: eth0, priority: 2048, scope: global}
hostnames:
    - {hostname: talos, domainname: fqdn}
resolvers:
    - dnsServers: [8.8.8.8]
timeServers: []
operators:
    - {operator: dhcp4, linkName: eth0, dhcp4: {routeMetric: 1024}}
"#;

    fn load() -> Expected {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("talos-expected.yaml");
        std::fs::write(&path, TALOS).unwrap();
        expected(&path).unwrap()
    }

    fn addressing(addresses: &[&str], routes: Value, mtu: Option<u32>, dhcp4: bool) -> Value {
        json!({"dhcp4": dhcp4, "dhcp6": false, "dhcpRouteMetric": null, "addresses": addresses, "routes": routes, "mtu": mtu})
    }

    fn agreeing() -> Value {
        let mut plan = agreeing_but_dhcp_metric();
        plan["ethernets"][0]["addressing"]["dhcpRouteMetric"] = json!(1024);
        plan
    }

    fn agreeing_but_dhcp_metric() -> Value {
        json!({
            "ethernets": [
                {"match": {"macaddress": "02:00:00:00:00:01"}, "addressing": addressing(
                    &["10.0.0.5/24"],
                    json!([
                        {"to": "0.0.0.0/0", "via": "10.0.0.1", "metric": 100, "onLink": true},
                        {"to": "::/0", "via": "fe80::1", "metric": 2048, "onLink": false},
                    ]),
                    Some(1450),
                    true,
                )},
                {"match": {"name": "eth1"}, "addressing": addressing(&[], json!([]), None, false)},
            ],
            "bonds": [{
                "name": "bond0",
                "members": [{"name": "eth1"}, {"name": "eth2"}],
                "mode": "802.3ad", "miimon": 100, "updelay": 200, "downdelay": 200,
                "lacpRateFast": true, "transmitHashPolicy": "layer3+4",
                "addressing": addressing(&[], json!([]), Some(9000), false),
            }],
            "vlans": [{"name": "bond0.4", "id": 4, "parent": {"name": "bond0"},
                       "addressing": addressing(&["10.1.0.5/24"], json!([]), None, false)}],
            "nameservers": ["8.8.8.8"], "search": [], "hostname": "talos.fqdn", "timeServers": [],
        })
    }

    const ALIASES: &[(&str, &str)] = &[("02:00:00:00:00:01", "eth0")];

    #[test]
    fn an_agreeing_plan_differs_only_by_the_mac_match() {
        let mut plan = agreeing();
        assert_eq!(
            compare(&load(), &plan, ALIASES),
            ["links.match: eth0: bronze matches mac 02:00:00:00:00:01 (no current link has it)"]
        );
        plan["ethernets"][0]["match"] = json!({"name": "eth0"});
        assert_eq!(compare(&load(), &plan, &[]), Vec::<String>::new());
    }

    #[test]
    fn every_kind_of_difference_is_detected() {
        let mut plan = agreeing();
        plan["ethernets"][0]["match"] = json!({"name": "eth0"});
        plan["ethernets"][0]["addressing"] = addressing(
            &["10.0.0.6/24"],
            json!([{"to": "0.0.0.0/0", "via": "10.0.0.1", "metric": null, "onLink": false}]),
            None,
            false,
        );
        let bond = &mut plan["bonds"][0];
        bond["members"] = json!([{"name": "eth1"}, {"macaddress": "02:00:00:00:00:09"}]);
        bond["mode"] = json!("active-backup");
        bond["updelay"] = json!(null);
        bond["lacpRateFast"] = json!(false);
        plan["vlans"][0]["id"] = json!(5);
        plan["nameservers"] = json!(["8.8.4.4"]);
        plan["search"] = json!(["lan"]);
        plan["hostname"] = json!(null);
        let got = compare(&load(), &plan, &[]);
        let want = [
            "addresses: bronze has 10.0.0.6/24 on eth0, talos does not",
            "addresses: talos has 10.0.0.5/24 on eth0, bronze does not",
            "hostnames: talos \"talos.fqdn\" bronze none",
            "links.bond.lacpRate: bond0: talos fast bronze slow",
            "links.bond.mode: bond0: talos 802.3ad bronze active-backup",
            "links.bond.updelay: bond0: talos 200 bronze none",
            "links.mtu: eth0: talos 1450 bronze none",
            "links.vlan: bond0.4: talos Some((\"bond0\", 4)) bronze Some((\"bond0\", 5))",
            "links: bronze has mac 02:00:00:00:00:09, talos does not",
            "links: talos has eth2, bronze does not",
            "operators: talos has dhcp4 on eth0, bronze does not",
            "resolvers.dnsServers: bronze has 8.8.4.4, talos does not",
            "resolvers.dnsServers: talos has 8.8.8.8, bronze does not",
            "resolvers.searchDomains: bronze has lan, talos does not",
            "routes: 0.0.0.0/0 via 10.0.0.1 on eth0: talos metric 100 bronze none",
            "routes: 0.0.0.0/0 via 10.0.0.1 on eth0: talos on-link true bronze false",
            "routes: talos has ::/0 via fe80::1 on eth0 metric 2048, bronze does not",
        ];
        assert_eq!(got, want);
        assert!(is_default_metric("routes: ::/0 via fe80::1 on eth0: talos metric 2048 bronze none"));
        assert!(!is_default_metric("routes: talos has ::/0 via fe80::1 on eth0 metric 2048, bronze does not"));
    }
}
