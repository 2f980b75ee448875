//! What the VM tests share: the target dir the image is in, an empty
//! state disk, waiting for a booting node's API, and a copy of the disk
//! image booted through UEFI.

use bronze_api::v1 as pb;
use bronze_images::bootdisk::{ESP_SIZE_MIB, EspImage};
use bronze_images::layout::ImageLayout;
use bronze_images::vm::{Disk, DiskFormat, Firmware, Vm, VmSpec, free_port, maintenance_fingerprint};
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

/// A copy of the disk image in a temp dir with its own firmware variables,
/// booted through OVMF (as often as a test needs, on the same disk), its
/// API forwarded to `node`.
pub struct DiskVm {
    tmp: tempfile::TempDir,
    disk: PathBuf,
    port: u16,
    /// `127.0.0.1:PORT`: the guest's API.
    pub node: String,
}

impl DiskVm {
    pub fn new(layout: &ImageLayout) -> DiskVm {
        assert!(
            layout.disk_image().is_file(),
            "no disk image in {}: run `cargo xtask image` (cargo xtask test does)",
            layout.disk_image().display()
        );
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("disk.img");
        std::fs::copy(layout.disk_image(), &disk).unwrap();
        Firmware::ovmf(tmp.path().join("efivars.fd")).unwrap();
        let port = free_port().expect("a free port");
        DiskVm { tmp, disk, port, node: format!("127.0.0.1:{port}") }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    pub fn esp(&self) -> EspImage {
        EspImage::open(&self.disk, ESP_SIZE_MIB)
    }

    /// qemu on the disk, its console in `console`.
    pub fn start(&self, console: &str) -> Vm {
        let firmware = Firmware { code: bronze_images::vm::OVMF_CODE.into(), vars: self.dir().join("efivars.fd") };
        let spec =
            VmSpec::from_disk_image(Disk { path: self.disk.clone(), format: DiskFormat::Raw }, firmware, self.port);
        Vm::spawn(&spec, &self.dir().join(console)).expect("qemu starts")
    }

    /// Applies `yaml` to the node in maintenance mode, pinning the
    /// certificate its console shows; waits for mTLS. The fingerprint and an
    /// admin client config.
    pub async fn configure(&self, vm: &mut Vm, pki: &crate::Pki, yaml: &str) -> (String, PathBuf) {
        let line =
            vm.wait_for_line("fingerprint=", Instant::now() + Duration::from_secs(10)).expect("fingerprint logged");
        let fingerprint = maintenance_fingerprint(&line).expect("fingerprint on the console");
        let config = self.dir().join("node.yaml");
        std::fs::write(&config, yaml).unwrap();
        let node = self.node.as_str();
        let args = ["-n", node, "--insecure", "--cert-fingerprint", &fingerprint, "apply-config", "-f"];
        let run = crate::bronzectl(None, &[&args[..], &[config.to_str().unwrap()]].concat()).await;
        assert_eq!(run.code, 0, "{run:?}\n{}", vm.console().unwrap_or_default());
        let admin = self.dir().join("bronzeconfig");
        pki.write_bronzeconfig(&admin, std::slice::from_ref(&self.node), &["os:admin"]);
        wait_api(vm, node, &pki.auth(&["os:admin"]), BOOT).await;
        (fingerprint, admin)
    }
}
