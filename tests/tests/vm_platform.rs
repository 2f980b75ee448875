//! The image booted as a cloud instance would be: a config drive on a
//! CD-ROM, SMBIOS strings, a metadata service at 169.254.169.254.
//!
//! `cidata_iso_is_read_by_the_nocloud_plugin`: a `cidata` ISO made by
//! Debian's genisoimage from files this test writes is attached as an IDE
//! CD-ROM. From outside, over the API only, the test proves the guest found
//! it: the image's nocloud plugin, run in the guest, detects it (a `cidata`
//! volume, through `bronze:host/volumes`) and reads the instance id and
//! hostname back from it (PID 1 mounted the ISO read-only), and the guest's
//! kernel log shows the iso9660 mount. `cidata_vfat_drive_...` does the same
//! with a vfat disk labelled `CIDATA` (mkfs.vfat + mcopy), on a VM whose
//! SMBIOS chassis asset tag the oracle plugin detects.
//!
//! `the_guest_reaches_a_mock_imds_at_169_254_169_254`: the VM carries EC2's
//! SMBIOS strings and its user network forwards 169.254.169.254:80 to a mock
//! IMDSv2 on the host's loopback. The image's aws plugin, run in the guest
//! with its real endpoint, detects EC2 from the DMI and fetches the
//! instance over IMDSv2 from the mock.
//!
//! Needs the image (`cargo xtask image`), qemu, genisoimage, dosfstools and
//! mtools; `cargo xtask test` provides them.

use bronze_api::v1 as pb;
use bronze_images::layout::ImageLayout;
use bronze_images::vm::{Disk, DiskFormat, MetadataService, Smbios, Vm, VmSpec, maintenance_fingerprint};
use bronze_tests::mockcloud::MockServer;
use bronze_tests::mockcloud::aws::Aws;
use bronze_tests::plugins::{config_with_plugins, instance_yaml};
use bronze_tests::vmnode::{BOOT, state_disk, target_dir, wait_api};
use bronze_tests::{Pki, bronzectl, free_port};
use bronzectl::client::NodeClient;
use bronzectl::connect::Auth;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most two guests of this file at once: five TCG guests on two cores
/// (with the rest of the suite) take minutes to boot.
static VMS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

fn layout() -> ImageLayout {
    let layout = ImageLayout::new(&target_dir());
    assert!(
        layout.is_built(),
        "no image in {}: run `cargo xtask image` (cargo xtask test does)",
        layout.vmlinux().display()
    );
    layout
}

/// `genisoimage -V cidata -J -r` over a directory holding `files`.
fn cidata_iso(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    for (name, text) in files {
        std::fs::write(seed.join(name), text).unwrap();
    }
    let iso = dir.join("seed.iso");
    let out = Command::new("genisoimage")
        .args(["-quiet", "-V", "cidata", "-J", "-r", "-o"])
        .arg(&iso)
        .arg(&seed)
        .output()
        .expect("genisoimage (Debian package genisoimage; cargo xtask test installs it)");
    assert!(out.status.success(), "genisoimage: {}", String::from_utf8_lossy(&out.stderr));
    iso
}

/// Runs the plugin instance `id` in the guest until it answers (the image
/// compiles its plugins in the background after boot), within `wait`.
async fn run_plugin(vm: &Vm, client: &NodeClient, id: &str, wait: Duration) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        let answer =
            bronze_tests::plugins::client(client.channel.clone()).run(pb::PluginRunRequest { id: id.into() }).await;
        match answer {
            Ok(done) => {
                let done = done.into_inner();
                return serde_json::from_str(&done.result_json)
                    .unwrap_or_else(|e| panic!("result of {id} {:?}: {e}", done.result_json));
            }
            Err(status) => assert!(
                Instant::now() < deadline,
                "plugin {id} did not run within {wait:?}: {status}\n{}",
                vm.console().unwrap_or_default()
            ),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A VM booted from `spec` and configured through maintenance mode (the
/// pinned certificate) with `instances` (for `machine.plugins.instances`).
struct Booted {
    vm: Vm,
    client: NodeClient,
    /// An admin bronzectl config for the node.
    admin: PathBuf,
}

async fn boot_and_configure(spec: &VmSpec, dir: &Path, hostname: &str, instances: &str) -> Booted {
    let node = format!("127.0.0.1:{}", spec.api_port);
    let mut vm = Vm::spawn(spec, &dir.join("console.log")).expect("qemu starts");
    wait_api(&mut vm, &node, &Auth::Insecure { fingerprint: None }, BOOT).await;
    let line = vm.wait_for_line("fingerprint=", Instant::now() + Duration::from_secs(10)).expect("fingerprint logged");
    let fingerprint = maintenance_fingerprint(&line).expect("fingerprint on the console");
    let pki = Pki::new();
    let config = config_with_plugins(&pki, hostname, &format!("instances:{instances}"));
    let config_path = dir.join("node.yaml");
    std::fs::write(&config_path, config).unwrap();
    let args = ["-n", &node, "--insecure", "--cert-fingerprint", &fingerprint, "apply-config", "-f"];
    let run = bronzectl(None, &[&args[..], &[config_path.to_str().unwrap()]].concat()).await;
    assert_eq!(run.code, 0, "{run:?}\n{}", vm.console().unwrap_or_default());
    let auth = pki.auth(&["os:admin"]);
    wait_api(&mut vm, &node, &auth, BOOT).await;
    let client = NodeClient::connect(&node, &auth).await.expect("mTLS client");
    let admin = dir.join("bronzeconfig");
    pki.write_bronzeconfig(&admin, std::slice::from_ref(&node), &["os:admin"]);
    Booted { vm, client, admin }
}

/// The kernel log's messages, over the API.
async fn dmesg(admin: &Path) -> Vec<String> {
    let run = bronzectl(Some(admin), &["-o", "json", "dmesg"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let kernel: Value = serde_json::from_str(run.stdout.lines().next().unwrap_or("")).unwrap();
    kernel["entries"].as_array().unwrap().iter().filter_map(|e| e["message"].as_str().map(String::from)).collect()
}

/// Powers the guest off over the API: qemu exits 0 within 15 s.
async fn shutdown(b: &mut Booted) {
    let run = bronzectl(Some(&b.admin), &["shutdown"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let exit = b.vm.wait_exit(Instant::now() + Duration::from_secs(15)).expect("wait").expect("qemu exits within 15 s");
    assert!(exit.success(), "qemu exit {exit}:\n{}", b.vm.console().unwrap_or_default());
}

/// A seed's meta-data with values no image could carry by chance:
/// `(instance id, hostname, meta-data)`.
fn seed_meta_data() -> (String, String, String) {
    let instance_id = format!("iid-vm-{}-{}", std::process::id(), free_port());
    let hostname = format!("seed-{}", free_port());
    let meta_data = format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n");
    (instance_id, hostname, meta_data)
}

/// A VM with a state disk, the first boot address and a closed NTP port.
fn plain_spec(layout: &ImageLayout, dir: &Path) -> VmSpec {
    let mut spec = VmSpec::new(layout.vmlinux(), layout.initrd(), free_port());
    spec.disks.push(Disk { path: state_disk(dir, 64), format: DiskFormat::Raw });
    spec.append = vec![spec.first_boot_ip().to_string(), "bronze.ntp=127.0.0.1:1".into()];
    spec
}

/// Boots `spec` (with a seed attached), configures a nocloud instance
/// granted the cidata volumes (the image ships the plugin; it imports http
/// for seed URLs, so it needs some http grant), and runs it in the guest: it
/// must detect the volume and read `instance_id` and `hostname` from it.
/// `more` is appended to the config's plugin instances.
async fn nocloud_reads_the_seed(spec: &VmSpec, dir: &Path, instance_id: &str, hostname: &str, more: &str) -> Booted {
    let grants =
        r#"facts: [dmi, links, cmdline], volumes: [cidata, CIDATA], http: [{ url: "http://127.0.0.1:1/no-seed/" }]"#;
    let instances = instance_yaml("nocloud", "nocloud", "", grants, None) + more;
    let b = boot_and_configure(spec, dir, "vm-cidata", &instances).await;
    let result = run_plugin(&b.vm, &b.client, "nocloud", Duration::from_secs(180)).await;
    assert_eq!(result["detected"], true, "{result}");
    let metadata = &result["fetch"]["ok"];
    assert_eq!(metadata["platform"], "nocloud", "{result}");
    assert_eq!(metadata["instanceId"], instance_id, "{result}");
    assert_eq!(metadata["hostname"], hostname, "{result}");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cidata_iso_is_read_by_the_nocloud_plugin() {
    let _vm_slot = VMS.acquire().await.expect("semaphore");
    let layout = layout();
    let tmp = tempfile::tempdir().unwrap();
    let (instance_id, hostname, meta_data) = seed_meta_data();
    let iso = cidata_iso(tmp.path(), &[("meta-data", &meta_data), ("user-data", "#cloud-config\n")]);
    let mut spec = plain_spec(&layout, tmp.path());
    spec.cdroms.push(iso);
    let mut b = nocloud_reads_the_seed(&spec, tmp.path(), &instance_id, &hostname, "").await;
    // The guest kernel found the CD-ROM and mounted an iso9660 filesystem
    // (isofs logs its Rock Ridge extensions at mount).
    let messages = dmesg(&b.admin).await;
    assert!(messages.iter().any(|m| m.contains("sr0")), "no CD-ROM in the kernel log: {messages:#?}");
    assert!(messages.iter().any(|m| m.contains("ISO 9660 Extensions")), "no iso9660 mount: {messages:#?}");
    shutdown(&mut b).await;
}

/// `mkfs.vfat -n CIDATA` holding `files` (copied in with mtools' mcopy, no
/// root needed).
fn cidata_vfat(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let image = dir.join("seed.vfat");
    let out = Command::new("mkfs.vfat")
        .args(["-C", "-n", "CIDATA"])
        .arg(&image)
        .arg("2048")
        .output()
        .expect("mkfs.vfat (Debian package dosfstools; cargo xtask test installs it)");
    assert!(out.status.success(), "mkfs.vfat: {}", String::from_utf8_lossy(&out.stderr));
    for (name, text) in files {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let out = Command::new("mcopy")
            .arg("-i")
            .arg(&image)
            .arg(&file)
            .arg(format!("::{name}"))
            .output()
            .expect("mcopy (Debian package mtools; cargo xtask test installs it)");
        assert!(out.status.success(), "mcopy: {}", String::from_utf8_lossy(&out.stderr));
    }
    image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cidata_vfat_drive_is_read_by_the_nocloud_plugin() {
    let _vm_slot = VMS.acquire().await.expect("semaphore");
    let layout = layout();
    let tmp = tempfile::tempdir().unwrap();
    let (instance_id, hostname, meta_data) = seed_meta_data();
    let seed = cidata_vfat(tmp.path(), &[("meta-data", &meta_data), ("user-data", "#cloud-config\n")]);
    let mut spec = plain_spec(&layout, tmp.path());
    // /dev/vdb, after the state disk.
    spec.disks.push(Disk { path: seed, format: DiskFormat::Raw });
    // And an SMBIOS type 3 string, which only the chassis carries: Oracle's
    // asset tag. The oracle plugin in the guest detects it from the DMI.
    spec.smbios.asset_tag = Some("OracleCloud.com".into());
    let oracle = instance_yaml(
        "oracle",
        "oracle",
        "",
        r#"config: true, facts: [dmi, links], http: [{ url: "http://169.254.169.254/opc/v2/", methods: [GET] }]"#,
        None,
    );
    let mut b = nocloud_reads_the_seed(&spec, tmp.path(), &instance_id, &hostname, &oracle).await;
    let result = run_plugin(&b.vm, &b.client, "oracle", Duration::from_secs(180)).await;
    assert_eq!(result["detected"], true, "{result}");
    shutdown(&mut b).await;
}

/// The DMI of an EC2 instance, as qemu's SMBIOS type 1 strings.
fn ec2_smbios() -> Smbios {
    Smbios {
        manufacturer: Some("Amazon EC2".into()),
        product: Some("t3.micro".into()),
        serial: Some("ec2e1916-9099-7caf-fd21-0123456789ab".into()),
        uuid: Some("ec2e1916-9099-7caf-fd21-0123456789ab".into()),
        ..Smbios::default()
    }
}

/// The aws plugin's manifest grants, IPv4 endpoint only (slirp has no IPv6
/// metadata address).
const AWS_GRANTS: &str =
    r#"config: true, facts: [dmi, links], http: [{ url: "http://169.254.169.254/latest/", methods: [GET, PUT] }]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_reaches_a_mock_imds_at_169_254_169_254() {
    let _vm_slot = VMS.acquire().await.expect("semaphore");
    let layout = layout();
    let tmp = tempfile::tempdir().unwrap();
    let instance_id = format!("i-0{:016x}", u64::from(std::process::id()) << 16 | u64::from(free_port()));
    let aws = Aws::new().set("meta-data/instance-id", instance_id.clone());
    let mock = MockServer::loopback(Arc::new(aws)).await;

    let mut spec = plain_spec(&layout, tmp.path());
    spec.smbios = ec2_smbios();
    spec.metadata = Some(MetadataService::Relay(mock.addr.port()));
    // An empty IDE CD drive, as many clouds' machines have (and qemu adds by
    // default): the volumes source must ask it for a disc, not read it.
    spec.extra_args.extend(["-drive".into(), "if=ide,media=cdrom".into()]);
    // The metadata network moves the guest: its first boot address too.
    spec.append[0] = spec.first_boot_ip().to_string();
    // The plugin with its real endpoint (no `endpoint` config).
    let instances = instance_yaml("aws", "aws", "", AWS_GRANTS, None);
    let mut b = boot_and_configure(&spec, tmp.path(), "vm-aws", &instances).await;

    let result = run_plugin(&b.vm, &b.client, "aws", Duration::from_secs(180)).await;
    // Detected from the SMBIOS strings, fetched over IMDSv2 from the mock
    // through 169.254.169.254:80.
    assert_eq!(result["detected"], true, "{result}");
    let metadata = &result["fetch"]["ok"];
    assert_eq!(metadata["instanceId"], instance_id.as_str(), "{result}");
    assert_eq!(metadata["providerId"], format!("aws:///eu-west-1b/{instance_id}"), "{result}");
    let hits = mock.hits();
    assert_eq!(hits.first().map(String::as_str), Some("PUT /latest/api/token"), "{hits:?}");
    assert!(hits.iter().any(|h| h == "GET /latest/meta-data/instance-id"), "{hits:?}");
    // Every GET carried the token the PUT handed out.
    let requests = mock.requests();
    assert!(requests.iter().filter(|r| r.method == "GET").all(|r| r.header("x-aws-ec2-metadata-token").is_some()));
    // The volumes source asked the empty drive for a disc instead of
    // reading it (no I/O errors logged).
    let messages = dmesg(&b.admin).await;
    assert!(messages.iter().any(|m| m.contains("sr0")), "no CD drive in the kernel log: {messages:#?}");
    assert!(!messages.iter().any(|m| m.contains("Medium not present")), "the empty drive was read: {messages:#?}");
    shutdown(&mut b).await;
}
// ---- End to end through the platform controller ----

/// A machine config the test generated, to be served as user data: no
/// hostname (the platform's is used below the config's) and no time servers
/// (the platform's layer is used).
fn user_data_config(pki: &Pki) -> String {
    let config = pki.node_config("placeholder");
    let without = config.replacen("  hostname: placeholder\n", "", 1);
    assert_ne!(without, config, "the template's hostname line moved");
    without
}

/// `bronzectl -o json ARGS` over `admin`, the first resource's spec when
/// the answer is a resource list.
async fn ctl_json(admin: &Path, args: &[&str]) -> Value {
    let run = bronzectl(Some(admin), &[&["-o", "json"], args].concat()).await;
    assert_eq!(run.code, 0, "bronzectl {args:?}: {run:?}");
    serde_json::from_str(run.stdout.lines().next().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

/// Polls `bronzectl -o json ARGS` until `ok` holds (90 s).
async fn wait_ctl(admin: &Path, args: &[&str], what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    // The boot budget for a fetch is 60 s; the cached copy is used after it
    // at the latest.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let run = bronzectl(Some(admin), &[&["-o", "json"], args].concat()).await;
        if run.code == 0
            && let Ok(v) = serde_json::from_str::<Value>(run.stdout.lines().next().unwrap_or(""))
            && ok(&v)
        {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} not reached: {run:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Boots `spec` and waits for the API over mTLS with `pki`'s admin: a node
/// that came up from user data answers mTLS without anyone applying a config.
async fn boot_configured_by_platform(spec: &VmSpec, dir: &Path, log: &str, pki: &Pki) -> (Vm, NodeClient, PathBuf) {
    let node = format!("127.0.0.1:{}", spec.api_port);
    let mut vm = Vm::spawn(spec, &dir.join(log)).expect("qemu starts");
    let auth = pki.auth(&["os:admin"]);
    wait_api(&mut vm, &node, &auth, BOOT).await;
    let client = NodeClient::connect(&node, &auth).await.expect("mTLS client");
    let admin = dir.join("bronzeconfig");
    pki.write_bronzeconfig(&admin, std::slice::from_ref(&node), &["os:admin"]);
    (vm, client, admin)
}

/// The node is configured (Version says so) without any client having
/// applied a config: the apply that configured it is the platform's (its
/// audit event names the source `platform`), and no API apply happened.
async fn assert_configured_by_the_platform(client: &mut NodeClient, admin: &Path) {
    let version = client.machine.version(pb::VersionRequest {}).await.expect("version").into_inner();
    assert!(!version.maintenance, "{version:?}");
    let events = ctl_json(admin, &["events"]).await;
    let events = events["events"].as_array().expect("events").clone();
    assert!(
        events.iter().any(|e| e["subject"] == "platform" && e["method"] == "platform/user-data" && e["result"] == "ok"),
        "no apply from the platform in the events: {events:#?}"
    );
    assert!(
        !events.iter().any(|e| e["method"].as_str().unwrap_or("").ends_with("/ApplyConfiguration")),
        "a client applied a config: {events:#?}"
    );
}

/// The node's hostname once it is `want` (the platform layer may land a
/// moment after the API answers), or a panic with the last one seen (60 s).
async fn wait_hostname(client: &mut NodeClient, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = client.machine.hostname(pb::HostnameRequest {}).await.expect("hostname").into_inner().hostname;
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "hostname is {now:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn power_off(vm: &mut Vm, admin: &Path) {
    let run = bronzectl(Some(admin), &["shutdown"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let exit = vm.wait_exit(Instant::now() + Duration::from_secs(15)).expect("wait").expect("qemu exits within 15 s");
    assert!(exit.success(), "qemu exit {exit}:\n{}", vm.console().unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_vm_comes_up_from_user_data_then_from_the_cache() {
    let _vm_slot = VMS.acquire().await.expect("semaphore");
    let layout = layout();
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let tag = free_port();
    let host = format!("ip-10-9-{}-{}.eu-west-1.compute.internal", tag / 256, tag % 256);
    let instance_id = format!("i-0{:016x}", u64::from(std::process::id()) << 16 | u64::from(tag));
    let aws = Aws::new()
        .set("meta-data/hostname", host.clone())
        .set("meta-data/local-hostname", host.clone())
        .set("meta-data/instance-id", instance_id.clone())
        .set("user-data", user_data_config(&pki));
    let mock = MockServer::loopback(Arc::new(aws)).await;

    let disk = state_disk(tmp.path(), 64);
    let mut spec = VmSpec::new(layout.vmlinux(), layout.initrd(), free_port());
    spec.disks.push(Disk { path: disk, format: DiskFormat::Raw });
    spec.smbios = ec2_smbios();
    spec.metadata = Some(MetadataService::Relay(mock.addr.port()));
    // No bronze.ntp=: the platform's time server must show.
    spec.append = vec![spec.first_boot_ip().to_string()];

    // 1. First boot: detected as aws, user data applied, up over mTLS.
    let (mut vm, mut client, admin) = boot_configured_by_platform(&spec, tmp.path(), "boot1.log", &pki).await;
    assert_configured_by_the_platform(&mut client, &admin).await;
    wait_hostname(&mut client, &host).await;
    let detection = wait_ctl(&admin, &["get", "platformdetection"], "aws detected", |v| {
        v["resources"][0]["spec"]["platform"] == "aws"
    })
    .await;
    assert_eq!(detection["resources"][0]["spec"]["platform"], "aws", "{detection}");
    let metadata = wait_ctl(&admin, &["get", "platformmetadata"], "metadata", |v| {
        v["resources"][0]["spec"]["metadata"]["instanceId"] == instance_id.as_str()
    })
    .await;
    let spec1 = &metadata["resources"][0]["spec"];
    assert_eq!(spec1["platform"], "aws", "{metadata}");
    assert_eq!(spec1["cached"], false, "{metadata}");
    assert_eq!(spec1["userData"]["kind"], "machine-config", "{metadata}");
    assert_eq!(spec1["userData"]["action"], "applied", "{metadata}");
    let time = ctl_json(&admin, &["time"]).await;
    assert!(time.to_string().contains("169.254.169.123"), "platform time server missing: {time}");
    let hits = mock.hits();
    assert_eq!(hits.first().map(String::as_str), Some("PUT /latest/api/token"), "{hits:?}");
    assert!(hits.iter().any(|h| h == "GET /latest/user-data"), "{hits:?}");
    power_off(&mut vm, &admin).await;

    // 2. Second boot, the metadata service gone: the relay finds nothing
    //    listening, the cached copy (stale) is used, and the node comes up the
    //    same from its stored config.
    let gone = mock.addr.port();
    drop(mock);
    spec.api_port = free_port();
    spec.metadata = Some(MetadataService::Relay(gone));
    let (mut vm, mut client, admin) = boot_configured_by_platform(&spec, tmp.path(), "boot2.log", &pki).await;
    // The stored config (never replaced by user data): configured at once.
    let version = client.machine.version(pb::VersionRequest {}).await.expect("version").into_inner();
    assert!(!version.maintenance, "{version:?}");
    wait_hostname(&mut client, &host).await;
    let metadata = wait_ctl(&admin, &["get", "platformmetadata"], "cached metadata", |v| {
        v["resources"][0]["spec"]["cached"] == true
    })
    .await;
    let spec2 = &metadata["resources"][0]["spec"];
    assert_eq!(spec2["metadata"]["instanceId"], instance_id.as_str(), "{metadata}");
    assert_eq!(spec2["platform"], "aws", "{metadata}");
    assert!(spec2["ageSeconds"].as_u64().is_some(), "{metadata}");
    let time = ctl_json(&admin, &["time"]).await;
    assert!(time.to_string().contains("169.254.169.123"), "platform time server missing: {time}");
    power_off(&mut vm, &admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nocloud_vm_comes_up_from_a_cidata_iso() {
    let _vm_slot = VMS.acquire().await.expect("semaphore");
    let layout = layout();
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let instance_id = format!("iid-vm-{}-{}", std::process::id(), free_port());
    let host = format!("seed-{}", free_port());
    let meta_data = format!("instance-id: {instance_id}\nlocal-hostname: {host}\n");
    let user_data = user_data_config(&pki);
    let iso = cidata_iso(tmp.path(), &[("meta-data", &meta_data), ("user-data", &user_data)]);

    let mut spec = VmSpec::new(layout.vmlinux(), layout.initrd(), free_port());
    spec.disks.push(Disk { path: state_disk(tmp.path(), 64), format: DiskFormat::Raw });
    spec.cdroms.push(iso);
    spec.append = vec![spec.first_boot_ip().to_string(), "bronze.ntp=127.0.0.1:1".into()];
    let (mut vm, mut client, admin) = boot_configured_by_platform(&spec, tmp.path(), "console.log", &pki).await;
    assert_configured_by_the_platform(&mut client, &admin).await;
    wait_hostname(&mut client, &host).await;
    let metadata = wait_ctl(&admin, &["get", "platformmetadata"], "nocloud metadata", |v| {
        v["resources"][0]["spec"]["metadata"]["instanceId"] == instance_id.as_str()
    })
    .await;
    assert_eq!(metadata["resources"][0]["spec"]["platform"], "nocloud", "{metadata}");
    assert_eq!(metadata["resources"][0]["spec"]["userData"]["action"], "applied", "{metadata}");
    let detection = ctl_json(&admin, &["get", "platformdetection"]).await;
    assert_eq!(detection["resources"][0]["spec"]["platform"], "nocloud", "{detection}");
    power_off(&mut vm, &admin).await;
}
