//! Property tests: `load` never panics on any input, and generated valid
//! configs survive decode → encode → decode unchanged.

use bronze_config::{decode, load, validate};
use proptest::prelude::*;

use crate::fixtures::{api_section, doc};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = load(&bytes);
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        let _ = load(text.as_bytes());
    }

    #[test]
    fn yaml_like_strings_never_panic(text in "[a-z0-9 :\\-\\[\\]{},#&*!|>'\"%@`?\n\t.]{0,300}") {
        let _ = load(text.as_bytes());
        let _ = load(format!("version: v1alpha1\nmachine:\n{text}").as_bytes());
    }

    /// A valid document with one byte changed, inserted or removed: close
    /// to real mistakes, and exercising every error path.
    #[test]
    fn mutated_documents_never_panic(
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        op in 0u8..3,
    ) {
        let mut bytes = doc(
            "  time:\n    servers: [\"10.0.0.1:123\"]\n  network:\n    interfaces:\n      - name: eth0\n        addresses: [10.0.2.15/24]\n  services:\n    - name: web\n      command: /bin/web\n      env: {A: b}\n      dependsOn: [network-ready]\n",
        )
        .into_bytes();
        let i = pos.index(bytes.len());
        match op {
            0 => bytes[i] = byte,
            1 => bytes.insert(i, byte),
            _ => {
                bytes.remove(i);
            }
        }
        if let Err(err) = load(&bytes) {
            prop_assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn generated_configs_round_trip(
        hostname in proptest::option::of("[a-z][a-z0-9-]{0,20}[a-z0-9](\\.[a-z][a-z0-9]{0,10}){0,2}"),
        servers in proptest::collection::vec(server(), 0..4),
        interfaces in proptest::collection::vec(interface(), 0..4),
        disabled in any::<bool>(),
        min_poll in 1u64..100,
    ) {
        let mut text = String::from("version: v1alpha1\nmachine:\n");
        if let Some(hostname) = &hostname {
            text.push_str(&format!("  hostname: {hostname}\n"));
        }
        text.push_str(&api_section());
        text.push_str(&format!("  time:\n    disabled: {disabled}\n    minPoll: {min_poll}s\n    servers: [{}]\n", servers.join(", ")));
        text.push_str("  network:\n    interfaces:\n");
        for (i, (addresses, mtu)) in interfaces.iter().enumerate() {
            text.push_str(&format!("      - name: eth{i}\n        addresses: [{}]\n", addresses.join(", ")));
            if let Some(mtu) = mtu {
                text.push_str(&format!("        mtu: {mtu}\n"));
            }
        }
        let cfg = decode(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert!(validate(&cfg).is_ok(), "{:?}", validate(&cfg));
        prop_assert_eq!(cfg.machine.hostname.as_ref().map(|h| h.as_str()), hostname.as_deref());
        prop_assert_eq!(cfg.machine.time.servers.len(), servers.len());
        prop_assert_eq!(cfg.machine.network.interfaces.len(), interfaces.len());
        let encoded = cfg.to_yaml();
        let again = decode(encoded.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}\n{encoded}")))?;
        prop_assert_eq!(&again, &cfg);
        prop_assert_eq!(again.to_yaml(), encoded);
    }
}

/// A time server in one of the accepted forms, quoted for a flow list.
fn server() -> impl Strategy<Value = String> {
    prop_oneof![
        ("[a-z]{1,10}\\.example\\.com", proptest::option::of(1u16..)).prop_map(|(host, port)| match port {
            Some(port) => format!("\"{host}:{port}\""),
            None => format!("\"{host}\""),
        }),
        (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, port)| format!("\"{}:{port}\"", std::net::Ipv4Addr::from(ip))),
        (any::<u128>(), 1u16..).prop_map(|(ip, port)| format!("\"[{}]:{port}\"", std::net::Ipv6Addr::from(ip))),
        any::<u128>().prop_map(|ip| format!("\"{}\"", std::net::Ipv6Addr::from(ip))),
    ]
}

/// Addresses (quoted CIDRs of both families) and an optional valid MTU.
fn interface() -> impl Strategy<Value = (Vec<String>, Option<u32>)> {
    let cidr = prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(ip, p)| format!("\"{}/{p}\"", std::net::Ipv4Addr::from(ip))),
        (any::<u128>(), 0u8..=128).prop_map(|(ip, p)| format!("\"{}/{p}\"", std::net::Ipv6Addr::from(ip))),
    ];
    (proptest::collection::vec(cidr, 0..4), proptest::option::of(68u32..=65535))
}
