//! What the VM tests share: the target dir the image is in, an empty
//! state disk, and waiting for a booting node's API.

use bronze_api::v1 as pb;
use bronze_images::vm::Vm;
use bronzectl::client::NodeClient;
use bronzectl::connect::Auth;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Boot deadline under TCG on a loaded 2-core machine.
pub const BOOT: Duration = Duration::from_secs(180);

/// The target dir the binaries (and `images/`) are in.
pub fn target_dir() -> PathBuf {
    let bronzed = crate::bin("bronzed");
    bronzed.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

/// An empty ext4 state disk (`BRONZE_STATE`) of `mib` MiB in `dir`.
pub fn state_disk(dir: &Path, mib: u64) -> PathBuf {
    let disk = dir.join("state.img");
    let status = Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-L", "BRONZE_STATE"])
        .arg(&disk)
        .arg(format!("{mib}M"))
        .status()
        .expect("mke2fs");
    assert!(status.success());
    disk
}

/// Waits until the API answers a real RPC with `auth` (any gRPC status
/// counts: Unauthenticated also proves bronzed is serving), at most `boot`.
pub async fn wait_api(vm: &mut Vm, node: &str, auth: &Auth, boot: Duration) {
    let deadline = Instant::now() + boot;
    loop {
        if let Ok(Some(status)) = vm.try_wait() {
            panic!("qemu exited with {status} before the API answered:\n{}", vm.console().unwrap_or_default());
        }
        if let Ok(mut c) = NodeClient::connect(node, auth).await {
            match tokio::time::timeout(Duration::from_secs(5), c.machine.version(pb::VersionRequest {})).await {
                Ok(Ok(_)) => return,
                Ok(Err(s)) if !matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) => return,
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "no API within {boot:?}:\n{}", vm.console().unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
