//! Rules for `machine.metrics`: a fixed port, and a warning when figures
//! leave the node unencrypted.

use crate::schema::Metrics;
use crate::validate::Validation;

pub(super) fn check(metrics: Option<&Metrics>, out: &mut Validation) {
    let Some(metrics) = metrics else { return };
    if metrics.listen.port() == 0 {
        out.error("machine.metrics.listen", "port 0 is not allowed: Prometheus needs a fixed port to scrape");
    }
    if !metrics.mtls && !metrics.listen.ip().is_loopback() {
        out.warn(
            "machine.metrics.listen",
            format!(
                "metrics are served in plain HTTP without authentication on {}; set mtls: true to require a client certificate",
                metrics.listen
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    /// The self-signed test CA of `config/tests/config/fixtures.rs`.
    const CA_CRT: &str = "-----BEGIN CERTIFICATE-----
MIIBMjCB5aADAgECAhQWc7SneFEW9p2b0P37fXnoNkDmrzAFBgMrZXAwDzENMAsG
A1UEAwwEdGVzdDAeFw0yNjExMjcxMjQyMDJaFw0zNjExMjQxMjQyMDJaMA8xDTAL
BgNVBAMMBHRlc3QwKjAFBgMrZXADIQD5vUHwSTtqgfk2pW35T0HZcuL4xFBbY16k
stLiQmHCZ6NTMFEwHQYDVR0OBBYEFC1uclmJMGD6PuN7sSAMNIS3n+yTMB8GA1Ud
IwQYMBaAFC1uclmJMGD6PuN7sSAMNIS3n+yTMA8GA1UdEwEB/wQFMAMBAf8wBQYD
K2VwA0EAKuL5vUMrNDhbZELmM5N2iXvi0+P/k/xubW1APnemk8dHW0qdHATLlzGY
lLMKiF36zep3ABCRdX71FnQZTMiwDg==
-----END CERTIFICATE-----
";
    const CA_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEILCK4sxmLpCbFm+mKVJZNlO2RQjOQOfHpMvQGim5rUSt
-----END PRIVATE KEY-----
";

    fn doc(metrics: &str) -> String {
        let indent = |pem: &str| pem.lines().map(|l| format!("        {l}\n")).collect::<String>();
        format!(
            "version: v1alpha1\nmachine:\n  hostname: n1\n  api:\n    ca:\n      crt: |\n{}      key: |\n{}{metrics}",
            indent(CA_CRT),
            indent(CA_KEY)
        )
    }

    #[test]
    fn absent_means_off() {
        let cfg = crate::decode::decode(doc("").as_bytes()).unwrap();
        assert_eq!(cfg.machine.metrics, None);
        assert!(!cfg.to_yaml().contains("metrics"));
    }

    #[test]
    fn decodes_listen_and_mtls() {
        let cfg =
            crate::decode::decode(doc("  metrics:\n    listen: \"[::1]:9100\"\n    mtls: true\n").as_bytes()).unwrap();
        let m = cfg.machine.metrics.unwrap();
        assert_eq!(m.listen, "[::1]:9100".parse().unwrap());
        assert!(m.mtls);
    }

    #[test]
    fn bad_address_names_the_value() {
        let err = crate::decode::decode(doc("  metrics:\n    listen: localhost\n").as_bytes()).unwrap_err().to_string();
        assert!(err.contains("invalid listen address \"localhost\", expected an IP and port"), "{err}");
        let err = crate::decode::decode(doc("  metrics:\n    listen: 127.0.0.1:9100\n    tls: true\n").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls"), "{err}");
    }

    #[test]
    fn port_zero_is_refused_and_plain_non_loopback_warns() {
        let v = crate::validate::validate(
            &crate::decode::decode(doc("  metrics:\n    listen: 0.0.0.0:0\n").as_bytes()).unwrap(),
        );
        assert!(
            v.errors.iter().any(|e| e.path == "machine.metrics.listen" && e.message.contains("port 0 is not allowed")),
            "{:?}",
            v.errors
        );
        assert!(v.warnings.iter().any(|w| w.message.contains("plain HTTP")), "{:?}", v.warnings);
        let loopback = crate::decode::decode(doc("  metrics:\n    listen: 127.0.0.1:9100\n").as_bytes()).unwrap();
        let v = crate::validate::validate(&loopback);
        assert!(v.errors.is_empty() && !v.warnings.iter().any(|w| w.path.starts_with("machine.metrics")), "{v:?}");
    }
}
