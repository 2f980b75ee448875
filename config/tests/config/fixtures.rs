//! Test material: a self-signed Ed25519 CA (generated once with
//! `openssl req -x509 -newkey ed25519 -nodes -subj /CN=test -days 3650`),
//! a second pair for the node's own server certificate, and document
//! builders.

pub const CA_CRT: &str = "-----BEGIN CERTIFICATE-----
MIIBMjCB5aADAgECAhQWc7SneFEW9p2b0P37fXnoNkDmrzAFBgMrZXAwDzENMAsG
A1UEAwwEdGVzdDAeFw0yNjExMjcxMjQyMDJaFw0zNjExMjQxMjQyMDJaMA8xDTAL
BgNVBAMMBHRlc3QwKjAFBgMrZXADIQD5vUHwSTtqgfk2pW35T0HZcuL4xFBbY16k
stLiQmHCZ6NTMFEwHQYDVR0OBBYEFC1uclmJMGD6PuN7sSAMNIS3n+yTMB8GA1Ud
IwQYMBaAFC1uclmJMGD6PuN7sSAMNIS3n+yTMA8GA1UdEwEB/wQFMAMBAf8wBQYD
K2VwA0EAKuL5vUMrNDhbZELmM5N2iXvi0+P/k/xubW1APnemk8dHW0qdHATLlzGY
lLMKiF36zep3ABCRdX71FnQZTMiwDg==
-----END CERTIFICATE-----
";

pub const CA_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEILCK4sxmLpCbFm+mKVJZNlO2RQjOQOfHpMvQGim5rUSt
-----END PRIVATE KEY-----
";

pub const NODE_CRT: &str = "-----BEGIN CERTIFICATE-----
MIIBMjCB5aADAgECAhRLkCHmltfT7my7C67WFTxx6nPN/zAFBgMrZXAwDzENMAsG
A1UEAwwEbm9kZTAeFw0yNjExMjcxMjQyMDJaFw0zNjExMjQxMjQyMDJaMA8xDTAL
BgNVBAMMBG5vZGUwKjAFBgMrZXADIQDME/UvxKO/v8EBVJr84B1uengXBwuMlb6t
JprBmdcMMKNTMFEwHQYDVR0OBBYEFBR9jdcXSGEjXm72eW1pLJ/IZgJ4MB8GA1Ud
IwQYMBaAFBR9jdcXSGEjXm72eW1pLJ/IZgJ4MA8GA1UdEwEB/wQFMAMBAf8wBQYD
K2VwA0EABJ6xRVDxVrx26gjv+k77IYtuFyrlJcIhkWmH6M9bbAx5MMEOpPl2p65Z
4JbV2ZvvRmJhQfSxQvtfbvpfbLB+DQ==
-----END CERTIFICATE-----
";

pub const NODE_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEILW75I8Jtfg2in2XHlI3ICpkksQeDU91WseMdO2a6Roz
-----END PRIVATE KEY-----
";

/// `text` as a YAML block scalar body at `indent` spaces.
pub fn block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// The `api:` section (at machine level, two spaces in) with CA crt+key.
pub fn api_section() -> String {
    format!("  api:\n    ca:\n      crt: |\n{}      key: |\n{}", block(CA_CRT, 8), block(CA_KEY, 8))
}

/// A valid document: hostname, the API section, then `rest` (lines under
/// `machine:`, indented by two spaces).
pub fn doc(rest: &str) -> String {
    format!("version: v1alpha1\nmachine:\n  hostname: node-1\n{}{rest}", api_section())
}

/// The 1-based line of the `nth` (1-based) line containing `needle`.
pub fn line_of(doc: &str, needle: &str, nth: usize) -> usize {
    doc.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(nth - 1)
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} #{nth} not in document:\n{doc}"))
}
