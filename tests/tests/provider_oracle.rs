//! The oracle provider plugin end to end: the real component built from
//! `plugins/providers/oracle`, installed over the API of a real `bronzed`
//! whose DMI comes from a fake sysfs, fetching from the Oracle Cloud mock
//! (IMDS v2, `Authorization: Bearer Oracle` enforced) over loopback HTTP.

use bronze_tests::mockcloud::oracle::{INSTANCE, Oracle, USER_DATA, VNICS};
use bronze_tests::mockcloud::{Cloud, MockServer, shared_fixture, skip_without_fixtures};
use bronze_tests::provider::MockedNode;
use serde_json::{Value, json};
use std::sync::Arc;

const PLUGIN: &str = "oracle";

fn grants(base: &str) -> String {
    format!(r#"config: true, facts: [dmi, links], http: [{{ url: "{base}/opc/v2/" }}]"#)
}

/// A node whose DMI chassis asset tag is `asset_tag`, with one instance of
/// the plugin per `(instance id, mock)`; the plugin installed.
async fn setup(asset_tag: &str, mocks: &[(&str, &MockServer)]) -> MockedNode {
    MockedNode::start(PLUGIN, "oci", &[("chassis_asset_tag", asset_tag), ("sys_vendor", "QEMU")], grants, mocks).await
}

async fn mock(cloud: impl Cloud) -> MockServer {
    MockServer::loopback(Arc::new(cloud)).await
}

#[tokio::test]
async fn the_mock_refuses_requests_without_the_bearer_header_like_oci() {
    let server = mock(Oracle::new()).await;
    let (status, body) = server.raw("GET", "/opc/v2/instance/", "").await;
    assert_eq!(status, 401, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["code"], "NotAuthenticated");
    let (status, _) = server.raw("GET", "/opc/v2/instance/", "Authorization: Bearer Other\r\n").await;
    assert_eq!(status, 401);
    let (status, body) = server.raw("GET", "/opc/v2/instance/", "Authorization: Bearer Oracle\r\n").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.raw("GET", "/opc/v2/nothing", "Authorization: Bearer Oracle\r\n").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["code"], "NotFound");
}

#[tokio::test]
async fn an_instance_reports_zone_shape_vnics_dhcp6_and_user_data() {
    let server = mock(Oracle::new()).await;
    let s = setup("OracleCloud.com", &[("oracle", &server)]).await;
    let got = s.result("oracle").await;
    assert_eq!(got["detected"], true, "{got}");
    let m = &got["fetch"]["ok"];
    assert_eq!(m["platform"], "oracle", "{got}");
    assert_eq!(m["instanceId"], "ocid1.instance.oc1.eu-frankfurt-1.antheljtbronzetest");
    assert_eq!(m["providerId"], "oci://ocid1.instance.oc1.eu-frankfurt-1.antheljtbronzetest");
    assert_eq!(m["hostname"], "bronze-oci-1");
    assert_eq!(m["region"], "fra");
    assert_eq!(m["zone"], "EU-FRANKFURT-1-AD-2", "the tenancy prefix is dropped");
    assert_eq!(m["instanceType"], "VM.Standard.A1.Flex");
    assert_eq!(m["nameservers"], json!(["169.254.169.254"]));
    assert_eq!(m["timeServers"], json!(["169.254.169.254"]));
    assert_eq!(m["privateIpv4"], json!(["10.0.0.17", "10.0.1.9"]));
    assert_eq!(m["publicIpv6"], json!(["2603:c020:8010:7e00::1a2b"]));
    assert_eq!(m["tags"], json!({ "team": "bronze", "Operations.CostCenter": "42" }));
    assert_eq!(m["userDataBytes"], USER_DATA.len(), "base64 decoded");
    let ifaces = m["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 2, "{m}");
    assert_eq!(ifaces[0]["mac"], "02:00:17:0a:bc:01");
    assert_eq!(ifaces[0]["dhcp"], json!([{ "family": "ipv6", "routeMetric": 1024 }]));
    assert_eq!(ifaces[0]["routes"], json!([{ "to": "::/0", "gateway": "fe80::200:17ff:fe0a:bc00", "metric": 2048 }]));
    assert_eq!(ifaces[1]["mac"], "02:00:17:0a:bc:02");
    assert!(ifaces[1]["dhcp"].as_array().unwrap().is_empty(), "no IPv6 on the second VNIC: {m}");

    assert_eq!(
        server.hits(),
        ["GET /opc/v2/instance/", "GET /opc/v2/vnics/", "GET /opc/v2/instance/metadata/user_data"]
    );
    for request in server.requests() {
        assert_eq!(request.header("authorization"), Some("Bearer Oracle"), "{} {}", request.method, request.path);
    }
}

#[tokio::test]
async fn other_asset_tags_are_not_detected_and_bad_documents_are_named() {
    let nothing = mock(Oracle::new()).await;
    let s = setup("Not-Oracle", &[("oracle", &nothing)]).await;
    let got = s.result("oracle").await;
    assert_eq!(got["detected"], false, "{got}");
    assert!(nothing.hits().is_empty(), "detect() must not send anything: {:?}", nothing.hits());
    drop(s);

    let bad_vnics = mock(Oracle::with_documents(INSTANCE, r#"{"vnics": "not a list"}"#, None)).await;
    let bad_ip = mock(Oracle::with_documents(INSTANCE, &VNICS.replace("10.0.0.17", "10.0.0.300"), None)).await;
    let no_user_data = mock(Oracle::with_documents(INSTANCE, VNICS, None)).await;
    let mut bad_base64 = Oracle::with_documents(INSTANCE, VNICS, None);
    bad_base64
        .docs
        .insert("/opc/v2/instance/metadata/user_data", bronze_tests::mockcloud::Response::text("not*base64"));
    let bad_base64 = mock(bad_base64).await;
    let s = setup(
        "OracleCloud.com",
        &[("bad-vnics", &bad_vnics), ("bad-ip", &bad_ip), ("no-user-data", &no_user_data), ("bad-base64", &bad_base64)],
    )
    .await;
    let got = s.result("bad-vnics").await;
    assert_eq!(got["fetch"]["error"], "invalid", "{got}");
    assert!(got["fetch"]["message"].as_str().unwrap().contains("/opc/v2/vnics/: invalid JSON"), "{got}");
    let got = s.result("bad-ip").await;
    assert_eq!(got["fetch"]["error"], "invalid", "{got}");
    assert!(got["fetch"]["message"].as_str().unwrap().contains("10.0.0.300"), "{got}");
    let got = s.result("no-user-data").await;
    assert!(got["fetch"]["ok"]["userDataBytes"].is_null(), "a 404 is no user data: {got}");
    let got = s.result("bad-base64").await;
    assert_eq!(got["fetch"]["error"], "invalid", "{got}");
    assert!(got["fetch"]["message"].as_str().unwrap().contains("not base64"), "{got}");
}

/// Talos's test: the VNIC is eth0.
const TALOS_LINKS: &[(&str, &str)] = &[("eth0", "02:00:17:00:00:00")];

/// Every difference from Talos's expected output, and why (see
/// docs/platforms/oracle.md).
const DOCUMENTED: &[&str] = &[
    // Talos drops OCI's freeform and defined tags; Bronze reports them
    // (defined tags as `<namespace>.<key>`).
    r#"metadata.tags: bronze has Department="Finance", talos does not"#,
    r#"metadata.tags: bronze has Operations.CostCenter="42", talos does not"#,
];

#[tokio::test]
async fn conformance_with_talos() {
    let (Some(instance), Some(vnics), Some(expected)) = (
        shared_fixture("oracle", "talos-metadata.json"),
        shared_fixture("oracle", "talos-metadatanetwork.json"),
        shared_fixture("oracle", "talos-expected.yaml"),
    ) else {
        skip_without_fixtures("provider_oracle::conformance_with_talos");
        return;
    };
    let instance = std::fs::read_to_string(instance).unwrap();
    let vnics = std::fs::read_to_string(vnics).unwrap();
    let server = mock(Oracle::with_documents(&instance, &vnics, None)).await;
    let s = setup("OracleCloud.com", &[("oracle", &server)]).await;
    let got = s.result("oracle").await;
    let ours = &got["fetch"]["ok"];
    assert!(ours.is_object(), "{got}");
    let expected = bronze_tests::talos::expected(&expected).unwrap();
    let differences = bronze_tests::talos::compare(&expected, ours, TALOS_LINKS);
    assert_eq!(differences, DOCUMENTED, "\nours: {ours:#}");
}
