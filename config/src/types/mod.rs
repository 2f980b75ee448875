//! Value types that reject bad input while decoding ("parse, don't
//! validate"): once a config has decoded, every field holds a well-formed
//! value and the rest of the node never re-checks syntax.

mod bytesize;
mod cidr;
mod cpu;
mod duration;
mod host;
mod hostname;
mod ip;
mod key;
mod link;
mod names;
mod path;
mod pem;
mod role;
pub(crate) mod serde_util;
mod sysctl;
mod unique_map;
mod url;

pub use bytesize::ByteSize;
pub use cidr::Cidr;
pub use cpu::CpuQuota;
pub use duration::Duration;
pub use host::{Host, HostPort, TcpEndpoint};
pub use hostname::Hostname;
pub use ip::IpAddress;
pub use key::TrustedKey;
pub use link::LinkName;
pub use names::{EnvName, ModuleName, Platform, PluginId, ServiceName, VolumeLabel};
pub use path::AbsPath;
pub use pem::{PemCertificate, PemPrivateKey};
pub use role::Role;
pub use sysctl::SysctlKey;
pub use unique_map::UniqueMap;
pub use url::{ProbeTarget, Url};
