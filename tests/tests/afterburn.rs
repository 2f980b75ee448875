//! Bronze's provider plugins side by side with Afterburn 5.11.0 (the
//! metadata agent of Fedora CoreOS and Flatcar), against the same mock, at
//! the clouds' real address: in a network namespace whose `lo` holds
//! 169.254.169.254, `mockcloud --cloud NAME` listens on port 80; Afterburn
//! runs there with `--provider P --attributes FILE`, and `bronzed` (process
//! mode) runs there too with the plugin installed over its API, granted
//! exactly what its manifest's `[grants]` asks for and no endpoint
//! override. The attributes must agree, except for the differences listed
//! per provider (each explained in docs/platforms/afterburn.md).
//!
//! Afterburn is installed into `target/afterburn` on first use
//! (`bronze_tests::afterburn::binary`, several minutes once).

use bronze_tests::Pki;
use bronze_tests::afterburn::{self, NsMock};
use bronze_tests::netns::NetNs;
use bronze_tests::plugins::{bundle, config_with_plugins, install, instance_yaml, run};
use bronze_tests::provider::{fake_sysfs, manifest_grants, node_in};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One provider both sides support.
struct Case {
    /// Bronze's platform (plugin id, mockcloud name).
    platform: &'static str,
    /// Afterburn's `--provider`.
    afterburn: &'static str,
    /// DMI fields that make the plugin's detect() say yes.
    dmi: &'static [(&'static str, &'static str)],
    /// Bronze's answer as Afterburn's attributes (without `AFTERBURN_`).
    attributes: fn(&Value) -> BTreeMap<String, String>,
    /// The differences that are expected, each explained in
    /// docs/platforms/afterburn.md.
    documented: &'static [&'static str],
}

/// What one side-by-side run saw.
struct Outcome {
    differences: Vec<String>,
    afterburn: afterburn::Run,
    bronze: Value,
    bronze_elapsed: Duration,
    hits: Vec<String>,
}

fn s(m: &Value, key: &str) -> Option<String> {
    m[key].as_str().map(String::from)
}

fn attr(m: &Value, key: &str) -> Option<String> {
    m["attributes"][key].as_str().map(String::from)
}

fn strings(m: &Value, key: &str) -> Vec<String> {
    m[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect()
}

/// Builds an attribute map, leaving out what is None.
fn map<const N: usize>(entries: [(String, Option<String>); N]) -> BTreeMap<String, String> {
    entries.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect()
}

fn indexed(out: &mut BTreeMap<String, String>, prefix: &str, values: Vec<String>) {
    for (i, v) in values.into_iter().enumerate() {
        out.insert(format!("{prefix}_{i}"), v);
    }
}

/// The addresses (CIDR) of all interfaces, in order.
fn interface_cidrs(m: &Value) -> Vec<String> {
    m["interfaces"].as_array().into_iter().flatten().flat_map(|i| strings(i, "addresses")).collect()
}

fn digitalocean(m: &Value) -> BTreeMap<String, String> {
    let mut out = map([
        ("DIGITALOCEAN_HOSTNAME".into(), s(m, "hostname")),
        ("DIGITALOCEAN_REGION".into(), s(m, "region")),
        ("DIGITALOCEAN_IPV4_ANCHOR_0".into(), attr(m, "anchor-ipv4")),
    ]);
    indexed(&mut out, "DIGITALOCEAN_IPV4_PUBLIC", strings(m, "publicIpv4"));
    indexed(&mut out, "DIGITALOCEAN_IPV6_PUBLIC", strings(m, "publicIpv6"));
    indexed(&mut out, "DIGITALOCEAN_IPV4_PRIVATE", strings(m, "privateIpv4"));
    out
}

fn exoscale(m: &Value) -> BTreeMap<String, String> {
    map([
        ("EXOSCALE_INSTANCE_ID".into(), s(m, "instanceId")),
        ("EXOSCALE_LOCAL_HOSTNAME".into(), s(m, "hostname")),
        ("EXOSCALE_PUBLIC_HOSTNAME".into(), attr(m, "public-hostname")),
        ("EXOSCALE_AVAILABILITY_ZONE".into(), s(m, "zone")),
        ("EXOSCALE_PUBLIC_IPV4".into(), strings(m, "publicIpv4").first().cloned()),
        ("EXOSCALE_LOCAL_IPV4".into(), strings(m, "privateIpv4").first().cloned()),
        ("EXOSCALE_SERVICE_OFFERING".into(), s(m, "instanceType")),
        ("EXOSCALE_CLOUD_IDENTIFIER".into(), attr(m, "cloud-identifier")),
        ("EXOSCALE_VM_ID".into(), attr(m, "vm-id")),
    ])
}

fn akamai(m: &Value) -> BTreeMap<String, String> {
    let tags: Vec<String> = m["tags"].as_object().into_iter().flatten().map(|(k, _)| k.clone()).collect();
    let mut out = map([
        ("AKAMAI_INSTANCE_ID".into(), s(m, "instanceId")),
        ("AKAMAI_INSTANCE_HOST_UUID".into(), attr(m, "host-uuid")),
        ("AKAMAI_INSTANCE_LABEL".into(), s(m, "hostname")),
        ("AKAMAI_INSTANCE_REGION".into(), s(m, "region")),
        ("AKAMAI_INSTANCE_TYPE".into(), s(m, "instanceType")),
        ("AKAMAI_INSTANCE_TAGS".into(), Some(tags.join(":"))),
        ("AKAMAI_IPV6_SLAAC".into(), attr(m, "ipv6-slaac")),
        ("AKAMAI_IPV6_LINK_LOCAL".into(), attr(m, "ipv6-link-local")),
    ]);
    // The addresses with their prefix length, as the service gives them,
    // are on eth0.
    let cidrs = interface_cidrs(m);
    let cidr_of = |ip: &String| cidrs.iter().find(|c| c.split('/').next() == Some(ip.as_str())).cloned();
    indexed(&mut out, "AKAMAI_PUBLIC_IPV4", strings(m, "publicIpv4").iter().filter_map(cidr_of).collect());
    indexed(&mut out, "AKAMAI_PRIVATE_IPV4", strings(m, "privateIpv4").iter().filter_map(cidr_of).collect());
    let shared: Vec<String> = (0..).map_while(|i| attr(m, &format!("shared-ipv4-{i}"))).collect();
    indexed(&mut out, "AKAMAI_SHARED_IPV4", shared);
    indexed(&mut out, "AKAMAI_IPV6_RANGE", cidrs.iter().filter(|c| c.contains(':')).cloned().collect());
    out
}

fn oracle(m: &Value) -> BTreeMap<String, String> {
    map([
        ("ORACLECLOUD_AVAILABILITY_DOMAIN".into(), attr(m, "availability-domain")),
        ("ORACLECLOUD_COMPARTMENT_ID".into(), attr(m, "compartment-id")),
        ("ORACLECLOUD_FAULT_DOMAIN".into(), attr(m, "fault-domain")),
        ("ORACLECLOUD_HOSTNAME".into(), s(m, "hostname")),
        ("ORACLECLOUD_INSTANCE_ID".into(), s(m, "instanceId")),
        ("ORACLECLOUD_INSTANCE_SHAPE".into(), s(m, "instanceType")),
        ("ORACLECLOUD_REGION_ID".into(), attr(m, "canonical-region")),
    ])
}

fn aws(m: &Value) -> BTreeMap<String, String> {
    map([
        ("AWS_INSTANCE_ID".into(), s(m, "instanceId")),
        ("AWS_INSTANCE_TYPE".into(), s(m, "instanceType")),
        ("AWS_HOSTNAME".into(), s(m, "hostname")),
        ("AWS_PUBLIC_HOSTNAME".into(), attr(m, "public-hostname")),
        ("AWS_REGION".into(), s(m, "region")),
        ("AWS_AVAILABILITY_ZONE".into(), s(m, "zone")),
        ("AWS_AVAILABILITY_ZONE_ID".into(), attr(m, "availability-zone-id")),
        ("AWS_IPV4_LOCAL".into(), strings(m, "privateIpv4").first().cloned()),
        ("AWS_IPV4_PUBLIC".into(), strings(m, "publicIpv4").first().cloned()),
        ("AWS_IPV6".into(), strings(m, "publicIpv6").first().cloned()),
    ])
}

fn gcp(m: &Value) -> BTreeMap<String, String> {
    map([
        ("GCP_HOSTNAME".into(), s(m, "hostname")),
        ("GCP_IP_EXTERNAL_0".into(), strings(m, "publicIpv4").first().cloned()),
        ("GCP_IP_LOCAL_0".into(), strings(m, "privateIpv4").first().cloned()),
        ("GCP_MACHINE_TYPE".into(), s(m, "instanceType")),
    ])
}

fn openstack(m: &Value) -> BTreeMap<String, String> {
    map([
        ("OPENSTACK_HOSTNAME".into(), s(m, "hostname")),
        ("OPENSTACK_INSTANCE_ID".into(), s(m, "instanceId")),
        ("OPENSTACK_INSTANCE_TYPE".into(), s(m, "instanceType")),
        ("OPENSTACK_IPV4_LOCAL".into(), strings(m, "privateIpv4").first().cloned()),
        ("OPENSTACK_IPV4_PUBLIC".into(), strings(m, "publicIpv4").first().cloned()),
    ])
}

fn upcloud(m: &Value) -> BTreeMap<String, String> {
    map([
        ("UPCLOUD_HOSTNAME".into(), s(m, "hostname")),
        ("UPCLOUD_INSTANCE_ID".into(), s(m, "instanceId")),
        ("UPCLOUD_REGION".into(), s(m, "region")),
    ])
}

fn vultr(m: &Value) -> BTreeMap<String, String> {
    map([
        ("VULTR_HOSTNAME".into(), s(m, "hostname")),
        ("VULTR_INSTANCE_ID".into(), s(m, "instanceId")),
        ("VULTR_REGION_CODE".into(), s(m, "region")),
    ])
}

fn hetzner(m: &Value) -> BTreeMap<String, String> {
    map([
        ("HETZNER_AVAILABILITY_ZONE".into(), s(m, "zone")),
        ("HETZNER_HOSTNAME".into(), s(m, "hostname")),
        ("HETZNER_INSTANCE_ID".into(), s(m, "instanceId")),
        ("HETZNER_PUBLIC_IPV4".into(), strings(m, "publicIpv4").into_iter().next()),
        ("HETZNER_PUBLIC_IPV6".into(), strings(m, "publicIpv6").into_iter().next()),
        ("HETZNER_REGION".into(), s(m, "region")),
    ])
}

/// Runs the mock, bronzed with the plugin, and Afterburn in one namespace.
async fn side_by_side(case: &Case, ns: &mut NetNs, afterburn_bin: &std::path::Path) -> Outcome {
    let mock = NsMock::start(ns, case.platform);
    let sysfs = fake_sysfs(case.dmi);
    let pki = Pki::new();
    let plugins = format!(
        "allowUnsigned: true\n    instances:{}",
        instance_yaml(case.platform, case.platform, "", &manifest_grants(case.platform), None)
    );
    let config = config_with_plugins(&pki, "side-by-side", &plugins);
    let node = node_in(ns, config, vec!["--sysfs".into(), sysfs.path().display().to_string()]).await;
    let c = node.client(&pki.auth(&["os:admin"])).await;
    install(c.channel.clone(), &bundle(case.platform))
        .await
        .unwrap_or_else(|e| panic!("install {}: {e}\n{}", case.platform, node.log()));
    let started = Instant::now();
    let done = run(&c, case.platform).await;
    let bronze_elapsed = started.elapsed();
    let bronze: Value = serde_json::from_str(&done.result_json).unwrap();
    let m = &bronze["fetch"]["ok"];
    assert!(m.is_object(), "{}: bronze did not fetch: {bronze}\n{}", case.platform, node.log());

    let afterburn = afterburn::run(afterburn_bin, ns, case.afterburn);
    assert!(afterburn.success, "afterburn --provider {} failed:\n{}", case.afterburn, afterburn.stderr);
    assert!(!afterburn.attributes.is_empty(), "afterburn wrote no attributes:\n{}", afterburn.stderr);
    let differences = afterburn::compare(&afterburn.attributes, &(case.attributes)(m));
    let hits = mock.hits();
    Outcome { differences, afterburn, bronze, bronze_elapsed, hits }
}

async fn check(case: Case) {
    let Some(mut ns) = afterburn::namespace() else { return };
    let bin = afterburn::binary();
    let out = side_by_side(&case, &mut ns, &bin).await;
    eprintln!(
        "{}: bronze {:?} (plugins run over the API), afterburn {:?} (process), {} attributes, requests: {:?}",
        case.platform,
        out.bronze_elapsed,
        out.afterburn.elapsed,
        out.afterburn.attributes.len(),
        out.hits
    );
    assert_eq!(
        out.differences, case.documented,
        "\nafterburn: {:#?}\nbronze: {:#}",
        out.afterburn.attributes, out.bronze["fetch"]["ok"]
    );
}

#[tokio::test]
async fn digitalocean_agrees_with_afterburn() {
    check(Case {
        platform: "digitalocean",
        afterburn: "digitalocean",
        dmi: &[("sys_vendor", "DigitalOcean")],
        attributes: digitalocean,
        documented: &[],
    })
    .await;
}

#[tokio::test]
async fn exoscale_agrees_with_afterburn() {
    check(Case {
        platform: "exoscale",
        afterburn: "exoscale",
        dmi: &[("sys_vendor", "Exoscale")],
        attributes: exoscale,
        documented: &[],
    })
    .await;
}

#[tokio::test]
async fn akamai_agrees_with_afterburn() {
    check(Case {
        platform: "akamai",
        afterburn: "akamai",
        dmi: &[("sys_vendor", "Linode")],
        attributes: akamai,
        // Bronze's tags are a map, sorted by key; Afterburn keeps the
        // service's order. The same set.
        documented: &[r#"AKAMAI_INSTANCE_TAGS: afterburn "prod:bronze", bronze "bronze:prod""#],
    })
    .await;
}

#[tokio::test]
async fn oracle_agrees_with_afterburn() {
    check(Case {
        platform: "oracle",
        afterburn: "oraclecloud",
        dmi: &[("chassis_asset_tag", "OracleCloud.com")],
        attributes: oracle,
        documented: &[],
    })
    .await;
}

#[tokio::test]
async fn aws_agrees_with_afterburn() {
    check(Case {
        platform: "aws",
        afterburn: "aws",
        dmi: &[("sys_vendor", "Amazon EC2"), ("product_uuid", "ec2e1916-9099-7caf-fd21-012345abcdef")],
        attributes: aws,
        // Bronze's aws plugin does not read placement/availability-zone-id.
        documented: &[r#"AWS_AVAILABILITY_ZONE_ID: afterburn "euw1-az2", bronze none"#],
    })
    .await;
}

#[tokio::test]
async fn openstack_agrees_with_afterburn() {
    check(Case {
        platform: "openstack",
        afterburn: "openstack-metadata",
        dmi: &[("product_name", "OpenStack Nova")],
        attributes: openstack,
        documented: &[],
    })
    .await;
}

#[tokio::test]
async fn upcloud_agrees_with_afterburn() {
    check(Case {
        platform: "upcloud",
        afterburn: "upcloud",
        dmi: &[("sys_vendor", "UpCloud")],
        attributes: upcloud,
        documented: &[],
    })
    .await;
}

#[tokio::test]
async fn vultr_agrees_with_afterburn() {
    check(Case {
        platform: "vultr",
        afterburn: "vultr",
        dmi: &[("sys_vendor", "Vultr")],
        attributes: vultr,
        // Vultr has two ids: Afterburn reads the legacy numeric
        // /v1/instanceid; Bronze reports the instance-v2-id UUID that API v2
        // and Vultr's cloud controller manager use (the numeric one is the
        // attribute `instanceid`).
        documented: &[r#"VULTR_INSTANCE_ID: afterburn "61234567", bronze "5f1c3a52-8c4e-4f7a-9d21-0b6e1f9a7c33""#],
    })
    .await;
}

#[tokio::test]
async fn gcp_agrees_with_afterburn() {
    check(Case {
        platform: "gcp",
        afterburn: "gcp",
        dmi: &[("product_name", "Google Compute Engine")],
        attributes: gcp,
        // Afterburn passes instance/machine-type through as GCE serves it (a
        // resource path); Bronze, like Talos, reports the type's name, which
        // is what Kubernetes' instance-type label carries.
        documented: &[
            r#"GCP_MACHINE_TYPE: afterburn "projects/804113012345/machineTypes/e2-standard-2", bronze "e2-standard-2""#,
        ],
    })
    .await;
}

#[tokio::test]
async fn hetzner_agrees_with_afterburn() {
    check(Case {
        platform: "hetzner",
        afterburn: "hetzner",
        dmi: &[("sys_vendor", "Hetzner")],
        attributes: hetzner,
        // Hetzner's metadata calls the network zone (eu-central) `region`;
        // Afterburn passes it on. Bronze, like Talos and Hetzner's cloud
        // controller manager (topology.kubernetes.io/region), reports the
        // location (fsn1, the zone's part before the first '-'), and keeps
        // the network zone as the attribute `network-zone`.
        documented: &[r#"HETZNER_REGION: afterburn "eu-central", bronze "fsn1""#],
    })
    .await;
}
