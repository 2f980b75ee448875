//! `machine.metrics`: the OpenMetrics (Prometheus text) endpoint. Absent:
//! no listener at all.

use std::fmt;
use std::net::SocketAddr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a mapping")]
pub struct Metrics {
    /// Where `GET /metrics` is served, e.g. `0.0.0.0:9100`.
    #[serde(deserialize_with = "listen_addr", serialize_with = "display")]
    pub listen: SocketAddr,
    /// Serve over TLS with the node's API certificate and require a client
    /// certificate from the API's CA (any role may scrape).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mtls: bool,
}

struct ListenVisitor;

impl Visitor<'_> for ListenVisitor {
    type Value = SocketAddr;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an address and port to listen on, like 0.0.0.0:9100 or [::]:9100")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketAddr, E> {
        v.parse().map_err(|_| {
            E::custom(format!("invalid listen address {v:?}, expected an IP and port like 0.0.0.0:9100 or [::]:9100"))
        })
    }
}

fn listen_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    d.deserialize_str(ListenVisitor)
}

fn display<S: Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(addr)
}
