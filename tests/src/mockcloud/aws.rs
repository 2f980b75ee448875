//! Amazon EC2's instance metadata service (IMDS), as the real one and the
//! Amazon EC2 Metadata Mock (AEMM) behave:
//!
//! - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`
//!   in 1..=21600 returns a token (`text/plain`, the TTL echoed in the same
//!   header); a missing or out-of-range TTL is 400; a request carrying
//!   `X-Forwarded-For` is 403 (IMDS refuses tokens to proxied requests).
//! - With IMDSv2 required (the default), a GET without a token, or with an
//!   unknown or expired one, is 401. [`Aws::imdsv1`] also serves tokenless
//!   GETs.
//! - Every other method is 405; unknown paths 404, all with IMDS's own
//!   XHTML error bodies.
//! - Documents live under `/latest/`, and the dated prefixes
//!   `/2021-01-03/` and `/2009-04-04/` serve the same tree (Afterburn asks
//!   those). A directory (`meta-data/`, `placement`, ...) answers its
//!   listing, one entry per line, sub-directories with a trailing `/`.
//!
//! [`Aws::new`] serves the repo's own instance (below);
//! [`Aws::from_aemm`] the AEMM defaults document; [`Aws::from_talos`] the
//! values of a Talos `MetadataConfig` test struct as IMDS paths.

use super::{Cloud, Request, Response};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest token lifetime IMDS grants.
pub const MAX_TTL: u64 = 21600;

/// The repo's own instance: a dual-stack t3.micro spot instance in
/// eu-west-1b, shaped like the documents IMDS publishes (values from the
/// documentation ranges).
pub const DEFAULT_VALUES: &[(&str, &str)] = &[
    ("meta-data/ami-id", "ami-0c1f2e3d4b5a69788"),
    ("meta-data/ami-launch-index", "0"),
    ("meta-data/hostname", "ip-10-1-2-3.eu-west-1.compute.internal"),
    ("meta-data/local-hostname", "ip-10-1-2-3.eu-west-1.compute.internal"),
    ("meta-data/public-hostname", "ec2-203-0-113-7.eu-west-1.compute.amazonaws.com"),
    ("meta-data/instance-id", "i-0b22a22eec53b9321"),
    ("meta-data/instance-type", "t3.micro"),
    ("meta-data/instance-life-cycle", "spot"),
    ("meta-data/local-ipv4", "10.1.2.3"),
    ("meta-data/public-ipv4", "203.0.113.7"),
    ("meta-data/ipv6", "2001:db8:100::7"),
    ("meta-data/mac", "0a:1b:2c:3d:4e:5f"),
    ("meta-data/placement/region", "eu-west-1"),
    ("meta-data/placement/availability-zone", "eu-west-1b"),
    ("meta-data/placement/availability-zone-id", "euw1-az2"),
    ("meta-data/tags/instance/Name", "bronze-node-1"),
    ("meta-data/tags/instance/cluster", "prod"),
    ("meta-data/network/interfaces/macs/0a:1b:2c:3d:4e:5f/device-number", "0"),
    ("meta-data/network/interfaces/macs/0a:1b:2c:3d:4e:5f/local-ipv4s", "10.1.2.3\n10.1.2.4"),
    ("meta-data/network/interfaces/macs/0a:1b:2c:3d:4e:5f/ipv6s", "2001:db8:100::7"),
    ("meta-data/network/interfaces/macs/0a:1b:2c:3d:4e:5f/subnet-ipv4-cidr-block", "10.1.2.0/24"),
    ("meta-data/network/interfaces/macs/0a:1b:2c:3d:4e:5f/subnet-ipv6-cidr-blocks", "2001:db8:100::/64"),
    ("meta-data/network/interfaces/macs/0a:1b:2c:3d:4e:60/device-number", "1"),
    ("meta-data/network/interfaces/macs/0a:1b:2c:3d:4e:60/local-ipv4s", "10.1.9.9"),
];

/// The repo instance's identity document (as IMDS prints it).
pub const DEFAULT_IDENTITY: &str = r#"{
  "accountId" : "123456789012",
  "architecture" : "x86_64",
  "availabilityZone" : "eu-west-1b",
  "billingProducts" : null,
  "devpayProductCodes" : null,
  "marketplaceProductCodes" : null,
  "imageId" : "ami-0c1f2e3d4b5a69788",
  "instanceId" : "i-0b22a22eec53b9321",
  "instanceType" : "t3.micro",
  "kernelId" : null,
  "pendingTime" : "2026-11-02T09:14:03Z",
  "privateIp" : "10.1.2.3",
  "ramdiskId" : null,
  "region" : "eu-west-1",
  "version" : "2017-09-30"
}"#;

/// The repo instance's user data.
pub const DEFAULT_USER_DATA: &str = "#!/bin/sh\necho bronze\n";

/// The mock IMDS.
pub struct Aws {
    /// Leaf documents by path under `/latest/` (`meta-data/instance-id`).
    docs: BTreeMap<String, Response>,
    /// Whether a GET needs a token (IMDSv2 required).
    pub require_token: bool,
    tokens: Mutex<HashMap<String, Instant>>,
    counter: AtomicU64,
}

impl Default for Aws {
    fn default() -> Self {
        Self::new()
    }
}

impl Aws {
    /// The repo's own instance (IMDSv2 required).
    pub fn new() -> Aws {
        let mut aws = Aws::empty();
        for (path, value) in DEFAULT_VALUES {
            aws.insert(path, Response::text(*value));
        }
        aws.insert("dynamic/instance-identity/document", Response::text(DEFAULT_IDENTITY));
        aws.insert("user-data", Response::new(200, "application/octet-stream", DEFAULT_USER_DATA));
        aws
    }

    /// No documents at all.
    pub fn empty() -> Aws {
        Aws {
            docs: BTreeMap::new(),
            require_token: true,
            tokens: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        }
    }

    /// Also serves GETs without a token (IMDSv1).
    pub fn imdsv1(mut self) -> Aws {
        self.require_token = false;
        self
    }

    /// Sets the document at `path` under `/latest/` (`meta-data/hostname`).
    pub fn insert(&mut self, path: &str, response: Response) {
        self.docs.insert(path.trim_start_matches('/').to_string(), response);
    }

    /// Sets a text value.
    pub fn set(mut self, path: &str, value: impl Into<Vec<u8>>) -> Aws {
        self.insert(path, Response::text(value));
        self
    }

    /// Removes the document at `path`, and everything under it.
    pub fn remove(mut self, path: &str) -> Aws {
        let path = path.trim_start_matches('/').trim_end_matches('/').to_string();
        self.docs.retain(|p, _| p != &path && !p.starts_with(&format!("{path}/")));
        self
    }

    /// The AEMM defaults document (`aemm-metadata-default-values.json`):
    /// every path with a value, served as AEMM serves it: strings as
    /// text, objects as tab-indented JSON (the elastic-inference
    /// accelerator as compact JSON text), user data base64-decoded.
    pub fn from_aemm(path: &Path) -> anyhow::Result<Aws> {
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
        let mut aws = Aws::empty();
        for section in ["metadata", "dynamic", "userdata"] {
            let paths = doc[section]["paths"].as_object().ok_or_else(|| anyhow::anyhow!("{section}.paths"))?;
            for (key, url) in paths {
                let url = url.as_str().ok_or_else(|| anyhow::anyhow!("{section}.paths.{key}"))?;
                let under = url.strip_prefix("/latest/").ok_or_else(|| anyhow::anyhow!("{url}: not /latest/"))?;
                let response = match &doc[section]["values"][key] {
                    serde_json::Value::Null => continue,
                    serde_json::Value::String(s) if section == "userdata" => {
                        Response::new(200, "application/octet-stream", base64_decode(s)?)
                    }
                    serde_json::Value::String(s) => Response::text(s.clone()),
                    value if key == "elastic-inference-accelerator" => Response::text(value.to_string()),
                    value => Response::json(tab_json(value)),
                };
                aws.insert(under, response);
            }
        }
        Ok(aws)
    }

    /// A Talos `MetadataConfig` test struct (`talos-metadata*.json`) as
    /// the IMDS paths Talos reads its fields from.
    pub fn from_talos(path: &Path) -> anyhow::Result<Aws> {
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
        let mut aws = Aws::empty();
        let fields = [
            ("hostname", "meta-data/hostname"),
            ("instance-id", "meta-data/instance-id"),
            ("instance-type", "meta-data/instance-type"),
            ("instance-life-cycle", "meta-data/instance-life-cycle"),
            ("public-ipv4", "meta-data/public-ipv4"),
            ("local-hostname", "meta-data/local-hostname"),
            ("public-hostname", "meta-data/public-hostname"),
            ("region", "meta-data/placement/region"),
            ("zone", "meta-data/placement/availability-zone"),
        ];
        for (field, path) in fields {
            if let Some(v) = doc[field].as_str() {
                aws.insert(path, Response::text(v));
            }
        }
        if let Some(tags) = doc["tags"].as_object() {
            for (k, v) in tags {
                aws.insert(&format!("meta-data/tags/instance/{k}"), Response::text(v.as_str().unwrap_or_default()));
            }
        }
        if let Some(nic) = doc["primary-interface"].as_object() {
            let mac = nic["mac"].as_str().ok_or_else(|| anyhow::anyhow!("primary-interface.mac"))?;
            aws.insert("meta-data/mac", Response::text(mac));
            let at = |k: &str| format!("meta-data/network/interfaces/macs/{mac}/{k}");
            if let Some(n) = nic.get("device-number").and_then(|v| v.as_str()) {
                aws.insert(&at("device-number"), Response::text(n));
            }
            for list in ["local-ipv4s", "ipv6s"] {
                if let Some(items) = nic.get(list).and_then(|v| v.as_array()) {
                    let lines: Vec<&str> = items.iter().filter_map(|v| v.as_str()).collect();
                    aws.insert(&at(list), Response::text(lines.join("\n")));
                }
            }
        }
        Ok(aws)
    }

    /// Every leaf path under `/latest/`, for assertions.
    pub fn paths(&self) -> Vec<String> {
        self.docs.keys().cloned().collect()
    }

    fn token_put(&self, request: &Request) -> Response {
        if request.header("x-forwarded-for").is_some() {
            return error(403, "Forbidden");
        }
        let ttl = request.header("x-aws-ec2-metadata-token-ttl-seconds").and_then(|t| t.trim().parse::<u64>().ok());
        let Some(ttl) = ttl.filter(|t| (1..=MAX_TTL).contains(t)) else {
            return error(400, "Bad Request");
        };
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let token = format!("AQAEAMock{n:08}{:016x}==", rand::random::<u64>());
        self.tokens.lock().unwrap().insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
        Response::text(token).with_header("x-aws-ec2-metadata-token-ttl-seconds", &ttl.to_string())
    }

    fn token_ok(&self, request: &Request) -> bool {
        match request.header("x-aws-ec2-metadata-token") {
            Some(token) => self.tokens.lock().unwrap().get(token).is_some_and(|expiry| Instant::now() < *expiry),
            None => !self.require_token,
        }
    }

    /// The document or listing at `under` (path below `/latest/`).
    fn lookup(&self, under: &str) -> Response {
        if let Some(doc) = self.docs.get(under) {
            return doc.clone();
        }
        let dir = under.trim_end_matches('/');
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let mut entries = BTreeSet::new();
        for path in self.docs.keys() {
            if let Some(rest) = path.strip_prefix(&prefix) {
                match rest.split_once('/') {
                    Some((child, _)) => entries.insert(format!("{child}/")),
                    None => entries.insert(rest.to_string()),
                };
            }
        }
        if entries.is_empty() || dir.is_empty() {
            // `/latest/` itself lists the three sections; anything else
            // without entries does not exist.
            if dir.is_empty() {
                return Response::text("dynamic\nmeta-data\nuser-data");
            }
            return error(404, "Not Found");
        }
        Response::text(entries.into_iter().collect::<Vec<_>>().join("\n"))
    }
}

impl Cloud for Aws {
    fn handle(&self, request: &Request) -> Response {
        let under = ["/latest/", "/2021-01-03/", "/2009-04-04/"].iter().find_map(|p| {
            request.path.strip_prefix(p).or_else(|| (request.path == p.trim_end_matches('/')).then_some(""))
        });
        let Some(under) = under else { return error(404, "Not Found") };
        match (request.method.as_str(), under) {
            ("PUT", "api/token") => self.token_put(request),
            (_, "api/token") => error(405, "Method Not Allowed"),
            ("GET", _) if !self.token_ok(request) => error(401, "Unauthorized"),
            ("GET", _) => self.lookup(under),
            _ => error(405, "Method Not Allowed"),
        }
    }
}

/// IMDS's XHTML error page for `status`.
pub fn error(status: u16, reason: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 \
         Transitional//EN\"\n\t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n<html \
         xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n <head>\n  <title>{status} - \
         {reason}</title>\n </head>\n <body>\n  <h1>{status} - {reason}</h1>\n </body>\n</html>\n"
    );
    Response::new(status, "text/html", body)
}

/// JSON indented with tabs, as AEMM prints objects.
fn tab_json(value: &serde_json::Value) -> Vec<u8> {
    // JSON strings hold no raw newline, so leading spaces are indentation.
    let pretty = serde_json::to_string_pretty(value).expect("JSON value serialises");
    let lines: Vec<String> = pretty
        .lines()
        .map(|l| {
            let body = l.trim_start_matches(' ');
            format!("{}{body}", "\t".repeat((l.len() - body.len()) / 2))
        })
        .collect();
    lines.join("\n").into_bytes()
}

/// Standard base64 (with or without padding).
fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => anyhow::bail!("not base64: {:?}", c as char),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: None,
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: Vec::new(),
            peer: "127.0.0.1:1".parse().unwrap(),
        }
    }

    fn token(aws: &Aws) -> String {
        let r = aws.handle(&req("PUT", "/latest/api/token", &[("x-aws-ec2-metadata-token-ttl-seconds", "60")]));
        assert_eq!(r.status, 200);
        String::from_utf8(r.body).unwrap()
    }

    #[test]
    fn the_token_rules_are_imds_rules() {
        let aws = Aws::new();
        assert_eq!(aws.handle(&req("PUT", "/latest/api/token", &[])).status, 400);
        for bad in ["0", "21601", "x"] {
            let r = aws.handle(&req("PUT", "/latest/api/token", &[("x-aws-ec2-metadata-token-ttl-seconds", bad)]));
            assert_eq!(r.status, 400, "ttl {bad}");
        }
        let proxied = req(
            "PUT",
            "/latest/api/token",
            &[("x-aws-ec2-metadata-token-ttl-seconds", "60"), ("x-forwarded-for", "10.0.0.1")],
        );
        assert_eq!(aws.handle(&proxied).status, 403);
        assert_eq!(aws.handle(&req("GET", "/latest/meta-data/instance-id", &[])).status, 401);
        let unknown = [("x-aws-ec2-metadata-token", "forged")];
        assert_eq!(aws.handle(&req("GET", "/latest/meta-data/instance-id", &unknown)).status, 401);
        let t = token(&aws);
        let ok = aws.handle(&req("GET", "/latest/meta-data/instance-id", &[("x-aws-ec2-metadata-token", &t)]));
        assert_eq!((ok.status, ok.body), (200, b"i-0b22a22eec53b9321".to_vec()));
        assert_eq!(aws.handle(&req("GET", "/latest/api/token", &[])).status, 405);
        assert_eq!(aws.handle(&req("POST", "/latest/meta-data/", &[("x-aws-ec2-metadata-token", &t)])).status, 405);
        let v1 = Aws::new().imdsv1();
        assert_eq!(v1.handle(&req("GET", "/latest/meta-data/instance-id", &[])).status, 200);
    }

    #[test]
    fn listings_dated_prefixes_and_404s() {
        let aws = Aws::new().imdsv1();
        let get = |p: &str| {
            let r = aws.handle(&req("GET", p, &[]));
            (r.status, String::from_utf8(r.body).unwrap())
        };
        let (status, index) = get("/latest/meta-data/");
        assert_eq!(status, 200);
        assert!(index.lines().any(|l| l == "instance-id") && index.lines().any(|l| l == "placement/"), "{index}");
        assert_eq!(get("/latest/meta-data/network/interfaces/macs/").1, "0a:1b:2c:3d:4e:5f/\n0a:1b:2c:3d:4e:60/");
        assert_eq!(get("/latest/meta-data/tags/instance").1, "Name\ncluster");
        assert_eq!(get("/2021-01-03/meta-data/instance-id").1, "i-0b22a22eec53b9321");
        assert_eq!(get("/2009-04-04/meta-data/placement/availability-zone").1, "eu-west-1b");
        let (status, body) = get("/latest/meta-data/nothing-here");
        assert_eq!(status, 404);
        assert!(body.contains("<h1>404 - Not Found</h1>"), "{body}");
        assert_eq!(get("/other").0, 404);
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(base64_decode("MTIzNCxqb2huLHJlYm9vdCx0cnVlCg==").unwrap(), b"1234,john,reboot,true\n");
        assert!(base64_decode("a*b").is_err());
    }
}
