//! Compares a provider's answer (the `PlatformMetadata` JSON that
//! `plugins run` returns under `fetch.ok`) with the `PlatformNetworkConfig`
//! that Talos's platform tests expect for the same input
//! (`talos-expected*.yaml` in `../shared/fixtures/platforms/`), field by
//! field, where both models carry the field:
//!
//! - addresses per link, routes (destination, gateway, link; then metric),
//!   the host name (Talos splits host and domain name: compared as FQDN),
//!   DNS servers and search domains, time servers, DHCP operators per link
//!   (family, route metric, skip-hostname), external IPs, link MTUs;
//! - metadata: platform, hostname, region, zone, instanceType, instanceId,
//!   providerId, spot, tags.
//!
//! Talos names links (`eth0`); a Bronze answer names an interface by MAC
//! (and by name when the plugin saw the host's links). `links` is the
//! table of Talos's test (name, MAC) that joins the two. A Bronze
//! interface that neither names nor matches a link shows as `mac <mac>`.
//!
//! The result is one sorted line per difference, e.g.
//! `addresses: talos has 2001:db8::5/64 on eth0, bronze does not` or
//! `metadata.providerId: talos "aws:///us-east-1a/i-1" bronze "aws:///x/i-1"`,
//! so a test can assert that the differences are exactly the documented ones.

use anyhow::{Context, bail};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The metadata fields compared, in Talos's (and Bronze's JSON) spelling.
const METADATA: [&str; 8] =
    ["platform", "hostname", "region", "zone", "instanceType", "instanceId", "providerId", "spot"];

/// One `talos-expected*.yaml`, loaded and normalised.
#[derive(Debug, Clone)]
pub struct Expected {
    pub path: PathBuf,
    /// The document as JSON (for a test that wants to look at it).
    pub raw: Value,
    model: Model,
}

/// What both sides carry, normalised (addresses parsed and printed back,
/// default routes spelled `0.0.0.0/0` / `::/0`, MACs lower case).
#[derive(Debug, Clone, Default)]
struct Model {
    /// (link, cidr)
    addresses: BTreeSet<(String, String)>,
    /// (link, destination, gateway or "") → metric
    routes: BTreeMap<(String, String, String), Option<u32>>,
    hostname: Option<String>,
    dns: BTreeSet<String>,
    search: BTreeSet<String>,
    time: BTreeSet<String>,
    /// (link, "dhcp4"|"dhcp6") → (route metric, skip hostname)
    operators: BTreeMap<(String, String), (Option<u32>, bool)>,
    external: BTreeSet<String>,
    /// link → MTU (only links with one)
    mtu: BTreeMap<String, u32>,
    /// Absent for a Talos platform that sets no metadata (vmware).
    metadata: Option<BTreeMap<&'static str, String>>,
    tags: BTreeMap<String, String>,
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
    Ok(Expected { path: path.to_path_buf(), raw, model })
}

/// The differences between Talos's expectation and Bronze's answer (the
/// `fetch.ok` JSON), one sorted line each; empty when they agree.
pub fn compare(expected: &Expected, ours: &Value, links: &[(&str, &str)]) -> Vec<String> {
    let ours = match bronze_model(ours, links) {
        Ok(m) => m,
        Err(e) => return vec![format!("bronze: {e:#}")],
    };
    let talos = &expected.model;
    let mut out = BTreeSet::new();

    for (link, cidr) in talos.addresses.difference(&ours.addresses) {
        out.insert(format!("addresses: talos has {cidr} on {link}, bronze does not"));
    }
    for (link, cidr) in ours.addresses.difference(&talos.addresses) {
        out.insert(format!("addresses: bronze has {cidr} on {link}, talos does not"));
    }

    for (key, metric) in &talos.routes {
        match ours.routes.get(key) {
            None => out.insert(format!("routes: talos has {}, bronze does not", route(key, *metric))),
            Some(m) if m != metric => out.insert(format!(
                "routes: {}: talos metric {} bronze {}",
                route(key, None),
                shown_u32(*metric),
                shown_u32(*m)
            )),
            Some(_) => false,
        };
    }
    for (key, metric) in &ours.routes {
        if !talos.routes.contains_key(key) {
            out.insert(format!("routes: bronze has {}, talos does not", route(key, *metric)));
        }
    }

    if talos.hostname != ours.hostname {
        out.insert(format!("hostnames: talos {} bronze {}", shown(&talos.hostname), shown(&ours.hostname)));
    }
    sets(&mut out, "resolvers.dnsServers", &talos.dns, &ours.dns);
    sets(&mut out, "resolvers.searchDomains", &talos.search, &ours.search);
    sets(&mut out, "timeServers", &talos.time, &ours.time);
    sets(&mut out, "externalIPs", &talos.external, &ours.external);

    for ((link, op), (metric, skip)) in &talos.operators {
        match ours.operators.get(&(link.clone(), op.clone())) {
            None => out.insert(format!("operators: talos has {op} on {link}, bronze does not")),
            Some((m, s)) => {
                if m != metric {
                    out.insert(format!(
                        "operators: {op} on {link}: talos routeMetric {} bronze {}",
                        shown_u32(*metric),
                        shown_u32(*m)
                    ));
                }
                if s != skip {
                    out.insert(format!("operators: {op} on {link}: talos skipHostnameRequest {skip} bronze {s}"))
                } else {
                    false
                }
            }
        };
    }
    for (link, op) in ours.operators.keys() {
        if !talos.operators.contains_key(&(link.clone(), op.clone())) {
            out.insert(format!("operators: bronze has {op} on {link}, talos does not"));
        }
    }

    // MTU: compared on links both sides configure.
    for (link, mtu) in &talos.mtu {
        if let Some(m) = ours.mtu.get(link)
            && m != mtu
        {
            out.insert(format!("links.mtu: {link}: talos {mtu} bronze {m}"));
        } else if !ours.mtu.contains_key(link) && ours.links().contains(link) {
            out.insert(format!("links.mtu: {link}: talos {mtu} bronze none"));
        }
    }
    for (link, m) in &ours.mtu {
        if !talos.mtu.contains_key(link) {
            out.insert(format!("links.mtu: {link}: talos none bronze {m}"));
        }
    }

    if let (Some(t), Some(b)) = (&talos.metadata, &ours.metadata) {
        for field in METADATA {
            let (tv, bv) = (t.get(field), b.get(field));
            if tv != bv {
                out.insert(format!("metadata.{field}: talos {} bronze {}", shown(&tv.cloned()), shown(&bv.cloned())));
            }
        }
        for (k, v) in &talos.tags {
            match ours.tags.get(k) {
                None => out.insert(format!("metadata.tags: talos has {k}={v:?}, bronze does not")),
                Some(o) if o != v => out.insert(format!("metadata.tags.{k}: talos {v:?} bronze {o:?}")),
                Some(_) => false,
            };
        }
        for (k, v) in &ours.tags {
            if !talos.tags.contains_key(k) {
                out.insert(format!("metadata.tags: bronze has {k}={v:?}, talos does not"));
            }
        }
    }
    out.into_iter().collect()
}

impl Model {
    /// Every link the model mentions.
    fn links(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = self.addresses.iter().map(|(l, _)| l.clone()).collect();
        all.extend(self.routes.keys().map(|(l, _, _)| l.clone()));
        all.extend(self.operators.keys().map(|(l, _)| l.clone()));
        all.extend(self.mtu.keys().cloned());
        all
    }
}

fn sets(out: &mut BTreeSet<String>, field: &str, talos: &BTreeSet<String>, ours: &BTreeSet<String>) {
    for v in talos.difference(ours) {
        out.insert(format!("{field}: talos has {v}, bronze does not"));
    }
    for v in ours.difference(talos) {
        out.insert(format!("{field}: bronze has {v}, talos does not"));
    }
}

fn route((link, dst, gw): &(String, String, String), metric: Option<u32>) -> String {
    let mut s = dst.clone();
    if !gw.is_empty() {
        s.push_str(&format!(" via {gw}"));
    }
    s.push_str(&format!(" on {link}"));
    if let Some(m) = metric {
        s.push_str(&format!(" metric {m}"));
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

/// An address or CIDR printed the way Rust prints it (`2001:db8::1`),
/// brackets removed; anything unparsable kept as written.
fn norm_ip(s: &str) -> String {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
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

fn metric_of(v: Option<&Value>) -> Option<u32> {
    v.and_then(Value::as_u64).map(|m| m as u32).filter(|m| *m != 0)
}

fn talos_model(doc: &Value) -> anyhow::Result<Model> {
    let mut m = Model::default();
    for a in list(doc, "addresses") {
        let link = a.get("linkName").and_then(str_of).context("an address without linkName")?;
        let cidr = a.get("address").and_then(str_of).context("an address without address")?;
        m.addresses.insert((link, norm_ip(&cidr)));
    }
    for r in list(doc, "routes") {
        let link = r.get("outLinkName").and_then(str_of).unwrap_or_default();
        let family = r.get("family").and_then(str_of).unwrap_or_default();
        let dst = r.get("dst").and_then(str_of).unwrap_or_default();
        let dst = if dst.is_empty() {
            if family == "inet6" { "::/0".to_string() } else { "0.0.0.0/0".to_string() }
        } else {
            norm_ip(&dst)
        };
        let gw = r.get("gateway").and_then(str_of).map(|g| norm_ip(&g)).unwrap_or_default();
        m.routes.insert((link, dst, gw), metric_of(r.get("priority")));
    }
    m.hostname = list(doc, "hostnames").next().and_then(|h| {
        let host = h.get("hostname").and_then(str_of).unwrap_or_default();
        let domain = h.get("domainname").and_then(str_of).unwrap_or_default();
        let fqdn = if domain.is_empty() { host } else { format!("{host}.{domain}") };
        Some(fqdn).filter(|f| !f.is_empty())
    });
    for r in list(doc, "resolvers") {
        m.dns.extend(strings(r, "dnsServers").iter().map(|s| norm_ip(s)));
        m.search.extend(strings(r, "searchDomains").into_iter().map(|s| s.trim_end_matches('.').to_string()));
    }
    for t in list(doc, "timeServers") {
        m.time.extend(strings(t, "timeServers"));
    }
    for o in list(doc, "operators") {
        let op = o.get("operator").and_then(str_of).context("an operator without operator")?;
        let link = o.get("linkName").and_then(str_of).unwrap_or_default();
        let spec = o.get(&op);
        let metric = metric_of(spec.and_then(|s| s.get("routeMetric")));
        let skip = spec.and_then(|s| s.get("skipHostnameRequest")).and_then(Value::as_bool).unwrap_or(false);
        m.operators.insert((link, op), (metric, skip));
    }
    m.external.extend(strings(doc, "externalIPs").iter().map(|s| norm_ip(s)));
    for l in list(doc, "links") {
        if let (Some(name), Some(mtu)) = (l.get("name").and_then(str_of), metric_of(l.get("mtu"))) {
            m.mtu.insert(name, mtu);
        }
    }
    if let Some(meta) = doc.get("metadata").filter(|v| v.is_object()) {
        let mut fields = BTreeMap::new();
        for field in METADATA {
            if let Some(v) = meta.get(field).and_then(str_of).filter(|v| !v.is_empty()) {
                fields.insert(field, v);
            }
        }
        fields.entry("spot").or_insert_with(|| "false".into());
        m.metadata = Some(fields);
        if let Some(tags) = meta.get("tags").and_then(Value::as_object) {
            m.tags = tags.iter().map(|(k, v)| (k.clone(), str_of(v).unwrap_or_default())).collect();
        }
    }
    Ok(m)
}

fn bronze_model(ours: &Value, links: &[(&str, &str)]) -> anyhow::Result<Model> {
    if !ours.is_object() {
        bail!("the answer is not a PlatformMetadata object: {ours}");
    }
    let mut m = Model::default();
    for iface in list(ours, "interfaces") {
        let mac = iface.get("mac").and_then(str_of).map(|s| s.to_ascii_lowercase());
        let link = iface
            .get("name")
            .and_then(str_of)
            .or_else(|| {
                let mac = mac.as_deref()?;
                links.iter().find(|(_, l)| l.eq_ignore_ascii_case(mac)).map(|(n, _)| n.to_string())
            })
            .or_else(|| mac.as_ref().map(|mac| format!("mac {mac}")))
            .unwrap_or_else(|| "(no link)".into());
        for a in strings(iface, "addresses") {
            m.addresses.insert((link.clone(), norm_ip(&a)));
        }
        for r in list(iface, "routes") {
            let dst = r.get("to").and_then(str_of).map(|d| norm_ip(&d)).unwrap_or_default();
            let gw = r.get("gateway").and_then(str_of).map(|g| norm_ip(&g)).unwrap_or_default();
            m.routes.insert((link.clone(), dst, gw), metric_of(r.get("metric")));
        }
        for d in list(iface, "dhcp") {
            let op = match d.get("family").and_then(Value::as_str) {
                Some("ipv4") => "dhcp4",
                Some("ipv6") => "dhcp6",
                other => bail!("interface {link}: dhcp family {other:?}"),
            };
            let skip = d.get("skipHostname").and_then(Value::as_bool).unwrap_or(false);
            m.operators.insert((link.clone(), op.into()), (metric_of(d.get("routeMetric")), skip));
        }
        if let Some(mtu) = metric_of(iface.get("mtu")) {
            m.mtu.insert(link.clone(), mtu);
        }
    }
    m.hostname = ours.get("hostname").and_then(str_of).filter(|h| !h.is_empty());
    m.dns.extend(strings(ours, "nameservers").iter().map(|s| norm_ip(s)));
    m.search.extend(strings(ours, "searchDomains").into_iter().map(|s| s.trim_end_matches('.').to_string()));
    m.time.extend(strings(ours, "timeServers"));
    m.external.extend(strings(ours, "externalIps").iter().map(|s| norm_ip(s)));
    let mut fields = BTreeMap::new();
    for field in METADATA {
        if let Some(v) = ours.get(field).and_then(str_of).filter(|v| !v.is_empty()) {
            fields.insert(field, v);
        }
    }
    fields.entry("spot").or_insert_with(|| "false".into());
    m.metadata = Some(fields);
    if let Some(tags) = ours.get("tags").and_then(Value::as_object) {
        m.tags = tags.iter().map(|(k, v)| (k.clone(), str_of(v).unwrap_or_default())).collect();
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TALOS: &str = r#"
addresses:
    - address: 2001:db8::5/64
      linkName: eth0
      family: inet6
links:
    - name: eth0
      mtu: 1460
routes:
    - family: inet4
      dst: ""
      gateway: 10.0.0.1
      outLinkName: eth0
      priority: 1024
    - family: inet6
      dst: 2001:db8:1::/48
      gateway: ""
      outLinkName: eth0
      priority: 2048
hostnames:
    - hostname: talos
      domainname: example.org
resolvers:
    - dnsServers: [10.0.0.2]
      searchDomains: [example.org]
timeServers:
    - timeServers: [169.254.169.123]
operators:
    - operator: dhcp4
      linkName: eth0
      dhcp4:
        routeMetric: 1024
    - operator: dhcp6
      linkName: eth0
      dhcp6:
        routeMetric: 1024
        skipHostnameRequest: true
externalIPs: [1.2.3.4]
metadata:
    platform: aws
    hostname: talos.example.org
    region: us-east-1
    zone: us-east-1a
    instanceType: t3.micro
    instanceId: i-1
    providerId: aws:///us-east-1a/i-1
    spot: true
    tags:
        cluster: mycluster
"#;

    fn load() -> Expected {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("talos-expected.yaml");
        std::fs::write(&path, TALOS).unwrap();
        expected(&path).unwrap()
    }

    fn agreeing() -> Value {
        json!({
            "platform": "aws",
            "providerId": "aws:///us-east-1a/i-1",
            "instanceId": "i-1",
            "instanceType": "t3.micro",
            "hostname": "talos.example.org",
            "region": "us-east-1",
            "zone": "us-east-1a",
            "spot": true,
            "tags": {"cluster": "mycluster"},
            "externalIps": ["1.2.3.4"],
            "interfaces": [{
                "mac": "06:17:04:D7:F0:6B",
                "addresses": ["2001:0db8::5/64"],
                "routes": [
                    {"to": "0.0.0.0/0", "gateway": "10.0.0.1", "metric": 1024},
                    {"to": "2001:db8:1::/48", "metric": 2048}
                ],
                "mtu": 1460,
                "dhcp": [
                    {"family": "ipv4", "routeMetric": 1024},
                    {"family": "ipv6", "routeMetric": 1024, "skipHostname": true}
                ]
            }],
            "nameservers": ["10.0.0.2"],
            "searchDomains": ["example.org."],
            "timeServers": ["169.254.169.123"]
        })
    }

    const LINKS: &[(&str, &str)] = &[("eth0", "06:17:04:d7:f0:6b")];

    #[test]
    fn an_agreeing_answer_has_no_differences() {
        assert_eq!(compare(&load(), &agreeing(), LINKS), Vec::<String>::new());
    }

    #[test]
    fn every_kind_of_difference_is_detected() {
        let mut ours = agreeing();
        let iface = &mut ours["interfaces"][0];
        iface["addresses"] = json!(["2001:db8::6/64"]);
        iface["routes"] = json!([{"to": "0.0.0.0/0", "gateway": "10.0.0.1", "metric": 100}]);
        iface["mtu"] = json!(9001);
        iface["dhcp"] = json!([{"family": "ipv4"}, {"family": "ipv6", "routeMetric": 1024}]);
        ours["hostname"] = json!("talos");
        ours["providerId"] = json!("aws:///x/i-1");
        ours["spot"] = json!(false);
        ours["tags"] = json!({"cluster": "other", "extra": "1"});
        ours["externalIps"] = json!([]);
        ours["nameservers"] = json!(["10.0.0.3"]);
        ours["searchDomains"] = json!([]);
        ours["timeServers"] = json!(["169.254.169.123", "fd00:ec2::123"]);
        let got = compare(&load(), &ours, LINKS);
        let want = [
            "addresses: bronze has 2001:db8::6/64 on eth0, talos does not",
            "addresses: talos has 2001:db8::5/64 on eth0, bronze does not",
            "externalIPs: talos has 1.2.3.4, bronze does not",
            "hostnames: talos \"talos.example.org\" bronze \"talos\"",
            "links.mtu: eth0: talos 1460 bronze 9001",
            "metadata.hostname: talos \"talos.example.org\" bronze \"talos\"",
            "metadata.providerId: talos \"aws:///us-east-1a/i-1\" bronze \"aws:///x/i-1\"",
            "metadata.spot: talos \"true\" bronze \"false\"",
            "metadata.tags.cluster: talos \"mycluster\" bronze \"other\"",
            "metadata.tags: bronze has extra=\"1\", talos does not",
            "operators: dhcp4 on eth0: talos routeMetric 1024 bronze none",
            "operators: dhcp6 on eth0: talos skipHostnameRequest true bronze false",
            "resolvers.dnsServers: bronze has 10.0.0.3, talos does not",
            "resolvers.dnsServers: talos has 10.0.0.2, bronze does not",
            "resolvers.searchDomains: talos has example.org, bronze does not",
            "routes: 0.0.0.0/0 via 10.0.0.1 on eth0: talos metric 1024 bronze 100",
            "routes: talos has 2001:db8:1::/48 on eth0 metric 2048, bronze does not",
            "timeServers: bronze has fd00:ec2::123, talos does not",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn an_unknown_mac_is_named_by_its_mac() {
        let got = compare(&load(), &agreeing(), &[]);
        assert!(got.contains(&"addresses: bronze has 2001:db8::5/64 on mac 06:17:04:d7:f0:6b, talos does not".into()));
        assert!(got.contains(&"operators: talos has dhcp4 on eth0, bronze does not".into()), "{got:#?}");
    }

    #[test]
    fn every_shared_talos_expectation_loads() {
        let Some(any) = crate::mockcloud::shared_fixture("aws", "talos-expected.yaml") else {
            crate::mockcloud::skip_without_fixtures("talos::every_shared_talos_expectation_loads");
            return;
        };
        let root = any.parent().unwrap().parent().unwrap();
        let mut loaded = 0;
        for provider in std::fs::read_dir(root).unwrap().flatten().filter(|e| e.path().is_dir()) {
            for file in std::fs::read_dir(provider.path()).unwrap().flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                if name.starts_with("talos-expected") && name.ends_with(".yaml") {
                    let e = expected(file.path()).unwrap_or_else(|err| panic!("{}: {err:#}", file.path().display()));
                    // An empty answer differs from every expectation that
                    // says anything.
                    let differences = compare(&e, &serde_json::json!({"platform": "none"}), &[]);
                    assert!(!differences.is_empty(), "{}", file.path().display());
                    loaded += 1;
                }
            }
        }
        assert!(loaded >= 28, "only {loaded} talos-expected files");
    }

    #[test]
    fn the_shared_talos_files_load() {
        let Some(path) = crate::mockcloud::shared_fixture("aws", "talos-expected-v6.yaml") else {
            crate::mockcloud::skip_without_fixtures("talos::the_shared_talos_files_load");
            return;
        };
        let e = expected(path).unwrap();
        assert_eq!(e.model.time, ["169.254.169.123", "fd00:ec2::123"].into_iter().map(String::from).collect());
        assert_eq!(e.model.dns, ["fd00:ec2::253".to_string()].into_iter().collect());
        assert_eq!(e.model.operators.len(), 2);
        let meta = e.model.metadata.as_ref().unwrap();
        assert_eq!(meta["providerId"], "aws:///us-east-1a/i-0a0a0a0a0a0a0a0a0");
        assert_eq!(meta["spot"], "true");
    }
}
