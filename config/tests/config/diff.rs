//! `diff` over encoded configs.

use bronze_config::{decode, diff};

use crate::fixtures::doc;

#[test]
fn changed_hostname() {
    let a = decode(doc("").replace("hostname: node-1", "hostname: a").as_bytes()).unwrap();
    let b = decode(doc("").replace("hostname: node-1", "hostname: b").as_bytes()).unwrap();
    let out = diff(&a.to_yaml(), &b.to_yaml());
    assert!(out.starts_with("--- live\n+++ new\n@@ "), "{out}");
    let changed: Vec<&str> = out
        .lines()
        .filter(|l| (l.starts_with('-') || l.starts_with('+')) && !l.starts_with("---") && !l.starts_with("+++"))
        .collect();
    assert_eq!(changed, ["-  hostname: a", "+  hostname: b"]);
}

#[test]
fn equal_documents() {
    let a = decode(doc("").as_bytes()).unwrap().to_yaml();
    assert_eq!(diff(&a, &a), "");
}
