//! `bronzectl gen config`: a fresh CA, a node config rendered from the
//! embedded default template, and a client config with an admin
//! certificate. Nothing here talks to a node.

use crate::clientconfig::{ClientConfig, Context, write_private};
use crate::connect;
use anyhow::{Context as _, bail};
use bronze_pki::{CertificateAuthority, ClientCertSpec, DEFAULT_CLIENT_TTL, KeyType};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Paths written by [`generate`].
#[derive(Debug)]
pub struct Generated {
    pub node_config: PathBuf,
    pub client_config: PathBuf,
}

/// Writes `DIR/node.yaml` and `DIR/bronzeconfig` for a node reachable at
/// `endpoint`. Existing files are kept unless `force`. The CA and the admin
/// key are `key_type` keys, and so is the server key the node mints.
/// `time_servers` go into `machine.time.servers`; none are written unless
/// asked, so a generated node never contacts a public server by default.
pub fn generate(
    name: &str,
    endpoint: &str,
    time_servers: &[String],
    dir: &Path,
    force: bool,
    key_type: KeyType,
) -> anyhow::Result<Generated> {
    let (host, _) = connect::split_host_port(endpoint)?;
    let node_endpoint = connect::normalize(endpoint)?;
    let node_config = dir.join("node.yaml");
    let client_config = dir.join("bronzeconfig");
    for path in [&node_config, &client_config] {
        if path.exists() && !force {
            bail!("{} already exists; pass --force to overwrite", path.display());
        }
    }
    let ca = bronze_pki::generate_ca(&format!("bronze {name} CA"), key_type)?;
    let mut document = bronze_config::render_default(&ca.cert_pem, &ca.key_pem, name, &[host]);
    if !time_servers.is_empty() {
        let list = time_servers.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
        anyhow::ensure!(document.contains("    servers: []\n"), "the default template has no time.servers line");
        document = document.replacen("    servers: []\n", &format!("    servers: [{list}]\n"), 1);
    }
    // The template and our inputs must make a valid config; check before writing.
    bronze_config::load(document.as_bytes()).context("generated node config does not validate")?;

    let authority = CertificateAuthority::from_pem(&ca.cert_pem, &ca.key_pem)?;
    let spec = ClientCertSpec::new("admin", &["os:admin".to_string()], DEFAULT_CLIENT_TTL);
    let admin = authority.issue_client(&ClientCertSpec { key_type, ..spec })?;
    let client = ClientConfig {
        context: name.to_string(),
        contexts: BTreeMap::from([(
            name.to_string(),
            Context { nodes: vec![node_endpoint], ca: ca.cert_pem, crt: admin.cert_pem, key: admin.key_pem },
        )]),
    };
    write_private(&node_config, document.as_bytes())
        .with_context(|| format!("cannot write {}", node_config.display()))?;
    client.save(&client_config)?;
    Ok(Generated { node_config, client_config })
}
