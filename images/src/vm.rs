//! Booting the image under qemu: the command line ([`VmSpec`]) and a running VM
//! whose serial console goes to a file ([`Vm`]), for `cargo xtask vm` and the
//! end-to-end tests.
//!
//! Every flag here was checked on the development machines (shared notes,
//! vm-boot.md): TCG only (the machine's /dev/kvm cannot run a stock kernel), the
//! uncompressed vmlinux through PVH, a virtio NIC on a **restricted** user network
//! (the guest reaches nothing; only the API port is forwarded, from 127.0.0.1), and
//! pvpanic so that a guest kernel panic exits qemu with 1 instead of 0.
//!
//! The one exception, [`VmNetwork::Namespace`], lifts `restrict=on` only with qemu
//! inside a network namespace the caller made: the guest then reaches that
//! namespace's loopback through slirp's gateway (10.0.2.2), which is how a test gives
//! it a time server over UDP (slirp's `guestfwd` is TCP only), and nothing beyond.
//!
//! A [`Vm`] is always killed by its PID when dropped: a test that fails half-way
//! never leaves a qemu behind.

use crate::layout::ImageLayout;
use crate::{Error, Result};
use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The port the guest's API listens on.
pub const GUEST_API_PORT: u16 = 50000;
/// The qemu binary (from bookworm-backports' `qemu-system-x86`).
pub const QEMU: &str = "qemu-system-x86_64";
/// The kernel command line every boot starts with: serial console, and reboot at
/// once on panic, which `-no-reboot` turns into qemu exiting.
pub const BASE_CMDLINE: &str = "console=ttyS0 panic=-1";
/// The guest address of qemu user networking (`-nic user`), for a first boot
/// without config.
pub const FIRST_BOOT_IP: &str = "bronze.ip=eth0:10.0.2.15/24:10.0.2.2";
/// The link-local address clouds serve instance metadata on.
pub const METADATA_ADDR: &str = "169.254.169.254";
/// The user network of a VM with a [`MetadataService`]: it must contain
/// [`METADATA_ADDR`] (qemu refuses a `guestfwd` outside it), so the guest's
/// own address, gateway and DNS move into it too (x.x.x.15, .2, .3).
pub const METADATA_NET: &str = "169.254.169.0/24";
/// The guest address on that network.
pub const METADATA_GUEST: &str = "169.254.169.15";
/// slirp's gateway (the host) on that network.
pub const METADATA_GATEWAY: &str = "169.254.169.2";
/// [`FIRST_BOOT_IP`] for a VM with a [`MetadataService`]: 169.254.169.254 is
/// on-link, and slirp answers ARP for its `guestfwd` addresses.
pub const METADATA_FIRST_BOOT_IP: &str = "bronze.ip=eth0:169.254.169.15/24:169.254.169.2";
/// Debian's `ovmf` UEFI firmware for qemu (4 MiB flash layout): the code,
/// mapped read-only...
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// ...and the template of its variable store, of which each VM gets a copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// How often [`Vm::wait_for_line`] looks at the console file.
const POLL: Duration = Duration::from_millis(20);

/// A disk image attached as a virtio block device (`/dev/vda` for the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The image file.
    pub path: PathBuf,
    /// Its format.
    pub format: DiskFormat,
}

/// The format of a [`Disk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    /// A plain file system image (what `mke2fs` makes).
    Raw,
    /// A qcow2 image (`qemu-img create -f qcow2`).
    Qcow2,
}

impl DiskFormat {
    fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// UEFI firmware for a VM that boots its first disk the way a machine does
/// (firmware, boot loader, kernel) instead of qemu loading the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    /// The firmware code (read-only flash).
    pub code: PathBuf,
    /// This VM's own variable store (writable flash).
    pub vars: PathBuf,
}

impl Firmware {
    /// Debian's OVMF with a fresh copy of its variable store at `vars`.
    pub fn ovmf(vars: impl Into<PathBuf>) -> Result<Firmware> {
        let vars = vars.into();
        std::fs::copy(OVMF_VARS, &vars).map_err(|e| Error::io("copy the OVMF variable store to", &vars, e))?;
        Ok(Firmware { code: PathBuf::from(OVMF_CODE), vars })
    }

    /// Whether Debian's `ovmf` is installed.
    pub fn is_installed() -> bool {
        Path::new(OVMF_CODE).is_file() && Path::new(OVMF_VARS).is_file()
    }
}

/// How the guest's user network is fenced in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VmNetwork {
    /// `restrict=on`: the guest reaches nothing; only the API forward gets in.
    #[default]
    Restricted,
    /// qemu runs in the named network namespace (`ip netns exec`), which must have
    /// no route out, with an unrestricted user network: the guest reaches the
    /// namespace's loopback as 10.0.2.2, and the API forward listens on the
    /// namespace's 127.0.0.1.
    Namespace(String),
}

/// SMBIOS strings the guest reads from `/sys/class/dmi/id` (how clouds are
/// detected): type 1 (system) and type 3 (chassis). `None` leaves qemu's own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Smbios {
    /// `sys_vendor`.
    pub manufacturer: Option<String>,
    /// `product_name`.
    pub product: Option<String>,
    /// `product_version`.
    pub version: Option<String>,
    /// `product_serial`.
    pub serial: Option<String>,
    /// `product_uuid` (a UUID; EC2's start with `ec2`).
    pub uuid: Option<String>,
    /// `chassis_asset_tag` (type 3: Azure's and Oracle's marks).
    pub asset_tag: Option<String>,
}

impl Smbios {
    /// The `-smbios` arguments: type 1 when any of its strings is set, type 3
    /// when the asset tag is.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let fields = [
            ("manufacturer", &self.manufacturer),
            ("product", &self.product),
            ("version", &self.version),
            ("serial", &self.serial),
            ("uuid", &self.uuid),
        ];
        let type1: Vec<String> = fields
            .iter()
            .filter_map(|(key, value)| value.as_ref().map(|v| format!("{key}={}", escape_option(v))))
            .collect();
        if !type1.is_empty() {
            args.extend(["-smbios".to_string(), format!("type=1,{}", type1.join(","))]);
        }
        if let Some(tag) = &self.asset_tag {
            args.extend(["-smbios".to_string(), format!("type=3,asset={}", escape_option(tag))]);
        }
        args
    }
}

/// Where the guest's connections to `169.254.169.254:80` go (qemu's
/// `guestfwd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataService {
    /// A TCP server on the host's 127.0.0.1 reached through a relay that qemu
    /// runs for each guest connection (`cmd:`; a small python3 program). This
    /// is the one that works for HTTP: every guest connection gets its own.
    Relay(u16),
    /// `tcp:127.0.0.1:PORT`: qemu connects **once**, when it starts (the server
    /// must already listen, or qemu exits), and carries a single stream.
    SingleStream(u16),
}

/// Copies one connection between its stdin/stdout (the guest's connection,
/// which slirp hands over as a socket) and `127.0.0.1:argv[1]`, both ways.
/// stderr is that socket too: it goes to /dev/null, so no traceback ever
/// reaches the guest; with nothing listening the guest's connection just
/// closes. No single quote: it is quoted with them.
const RELAY_PY: &str = r#"import os, socket, sys, threading
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
try:
    up = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
def guest_to_host():
    while True:
        data = os.read(0, 65536)
        if not data:
            up.shutdown(socket.SHUT_WR)
            return
        up.sendall(data)
threading.Thread(target=guest_to_host, daemon=True).start()
while True:
    data = up.recv(65536)
    if not data:
        break
    os.write(1, data)
"#;

impl MetadataService {
    /// The `guestfwd=` value (unescaped).
    pub fn guestfwd(&self) -> String {
        match self {
            MetadataService::Relay(port) => {
                // slirp splits the command like a shell (g_shell_parse_argv) and
                // runs it directly; the script has no single quote.
                format!("tcp:{METADATA_ADDR}:80-cmd:python3 -c '{RELAY_PY}' {port}")
            }
            MetadataService::SingleStream(port) => format!("tcp:{METADATA_ADDR}:80-tcp:127.0.0.1:{port}"),
        }
    }
}

/// Everything that varies between VM boots. [`VmSpec::args`] turns it into qemu's
/// arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// The qemu binary.
    pub qemu: PathBuf,
    /// The uncompressed ELF kernel (`-kernel`, booted through PVH).
    pub kernel: PathBuf,
    /// The initramfs (`-initrd`).
    pub initrd: PathBuf,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// The host port forwarded from 127.0.0.1 to the guest's API port.
    pub api_port: u16,
    /// Disks, in order (`/dev/vda`, `/dev/vdb`, ...).
    pub disks: Vec<Disk>,
    /// Kernel arguments after [`BASE_CMDLINE`].
    pub append: Vec<String>,
    /// Attach pvpanic-pci and make a guest panic exit qemu with status 1.
    pub pvpanic: bool,
    /// The guest's initial clock (`-rtc base=`, e.g. `2020-01-01T00:00:00`); the host's
    /// time when `None`.
    pub rtc_base: Option<String>,
    /// Exit qemu when the guest reboots (`-no-reboot`) instead of rebooting it.
    pub no_reboot: bool,
    /// How the guest's network is fenced in.
    pub network: VmNetwork,
    /// SMBIOS strings (`-smbios type=1,...`, `type=3,asset=...`).
    pub smbios: Smbios,
    /// ISO images attached as IDE CD-ROMs (`/dev/sr0`, ...): config drives.
    pub cdroms: Vec<PathBuf>,
    /// Serve `169.254.169.254:80` to the guest from the host. The user network
    /// moves to [`METADATA_NET`]: boot with [`VmSpec::first_boot_ip`].
    pub metadata: Option<MetadataService>,
    /// Boot through UEFI firmware from the first disk (its boot loader picks
    /// the kernel and its command line: `kernel`, `initrd` and `append` are
    /// not used).
    pub firmware: Option<Firmware>,
    /// Further qemu arguments, appended last.
    pub extra_args: Vec<String>,
}

impl VmSpec {
    /// A VM booting `kernel` and `initrd`, with the API on `127.0.0.1:api_port`,
    /// 512 MiB, pvpanic, no disk.
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>, api_port: u16) -> Self {
        VmSpec {
            qemu: PathBuf::from(QEMU),
            kernel: kernel.into(),
            initrd: initrd.into(),
            memory_mib: 512,
            api_port,
            disks: Vec::new(),
            append: Vec::new(),
            pvpanic: true,
            rtc_base: None,
            no_reboot: true,
            network: VmNetwork::Restricted,
            smbios: Smbios::default(),
            cdroms: Vec::new(),
            metadata: None,
            firmware: None,
            extra_args: Vec::new(),
        }
    }

    /// A VM that boots `disk` (a Bronze disk image, or an overlay of one)
    /// through `firmware`, like a machine: a guest reboot restarts it in the
    /// same qemu process (an upgrade reboots), and a kernel panic reboots it
    /// too (no pvpanic), so a failing boot runs its entry's tries down.
    pub fn from_disk_image(disk: Disk, firmware: Firmware, api_port: u16) -> Self {
        let mut spec = VmSpec::new("", "", api_port);
        spec.firmware = Some(firmware);
        spec.disks.push(disk);
        spec.no_reboot = false;
        spec.pvpanic = false;
        spec
    }

    /// The VM of a built image: its kernel, initramfs and raw state disk.
    pub fn from_layout(layout: &ImageLayout, api_port: u16) -> Self {
        let mut spec = VmSpec::new(layout.vmlinux(), layout.initrd(), api_port);
        spec.disks.push(Disk { path: layout.state_disk(), format: DiskFormat::Raw });
        spec
    }

    /// The VM `cargo xtask vm` runs: the image behaving like a machine. A guest
    /// reboot (`bronzectl reboot`) restarts it in the same qemu process with the
    /// same disk; qemu exits only on power-off, a guest kernel panic (pvpanic), or
    /// when it is stopped. The first boot gets qemu user networking's fixed guest
    /// address, so the forwarded API is reachable before any config.
    pub fn machine(layout: &ImageLayout, api_port: u16, append: impl IntoIterator<Item = String>) -> Self {
        let mut spec = Self::from_layout(layout, api_port);
        spec.no_reboot = false;
        spec.append = std::iter::once(spec.first_boot_ip().to_string()).chain(append).collect();
        spec
    }

    /// The `bronze.ip=` a first boot needs on this VM's user network:
    /// [`FIRST_BOOT_IP`], or [`METADATA_FIRST_BOOT_IP`] with a metadata service.
    pub fn first_boot_ip(&self) -> &'static str {
        if self.metadata.is_some() { METADATA_FIRST_BOOT_IP } else { FIRST_BOOT_IP }
    }

    /// The `-nic user,...` value.
    fn nic(&self) -> String {
        // restrict=on: the guest reaches no network at all; only the forwards
        // below get in (the API from the host's loopback, the metadata address
        // to one host port). In a namespace, the namespace is the fence.
        let restrict = match self.network {
            VmNetwork::Restricted => "restrict=on,",
            VmNetwork::Namespace(_) => "",
        };
        match &self.metadata {
            None => {
                format!("user,model=virtio-net-pci,{restrict}hostfwd=tcp:127.0.0.1:{}-:{GUEST_API_PORT}", self.api_port)
            }
            // Off the default network, hostfwd needs the guest address spelled
            // out (vm-boot.md: without it the API never answered).
            Some(service) => format!(
                "user,model=virtio-net-pci,{restrict}net={METADATA_NET},host={METADATA_GATEWAY},\
                 dhcpstart={METADATA_GUEST},hostfwd=tcp:127.0.0.1:{}-{METADATA_GUEST}:{GUEST_API_PORT},guestfwd={}",
                self.api_port,
                escape_option(&service.guestfwd())
            ),
        }
    }

    /// The kernel command line: [`BASE_CMDLINE`] and then [`VmSpec::append`].
    pub fn kernel_cmdline(&self) -> String {
        std::iter::once(BASE_CMDLINE).chain(self.append.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    }

    /// qemu's arguments (without the program).
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            // The paravirtual /dev/kvm of the development machines hangs a stock kernel.
            "-accel", "tcg", "-m",
        ]
        .map(String::from)
        .into();
        args.push(self.memory_mib.to_string());
        // Only the devices named below: without this, qemu adds an empty IDE
        // CD-ROM drive (and a floppy, a parallel port, VGA), which the kernel
        // probes at boot and a node never uses. A config drive is added
        // explicitly ([`VmSpec::cdroms`]).
        args.push("-nodefaults".into());
        // The console and qemu's monitor share stdio (Ctrl-A C switches, Ctrl-A X
        // quits). `signal=on`, unlike `-serial mon:stdio`, keeps Ctrl-C a signal to
        // qemu: a Bronze guest has no shell to send it to, so Ctrl-C stops the VM.
        args.extend(
            [
                "-nographic",
                "-chardev",
                "stdio,id=console,mux=on,signal=on",
                "-serial",
                "chardev:console",
                "-mon",
                "chardev=console,mode=readline",
            ]
            .map(String::from),
        );
        if self.no_reboot {
            args.push("-no-reboot".into());
        }
        match &self.firmware {
            None => {
                args.extend(["-kernel".into(), path_arg(&self.kernel), "-initrd".into(), path_arg(&self.initrd)]);
                args.extend(["-append".into(), self.kernel_cmdline()]);
            }
            Some(firmware) => args.extend([
                "-drive".into(),
                format!("if=pflash,format=raw,unit=0,readonly=on,file={}", escape_option(&path_arg(&firmware.code))),
                "-drive".into(),
                format!("if=pflash,format=raw,unit=1,file={}", escape_option(&path_arg(&firmware.vars))),
            ]),
        }
        args.extend(["-nic".into(), self.nic()]);
        // No option ROM on the NIC: the firmware would load and start iPXE
        // (and print its Ctrl-B prompt) for a network boot no VM does: qemu
        // loads the kernel, or the firmware boots the first disk.
        args.extend(["-global".into(), "virtio-net-pci.romfile=".into()]);
        for (i, disk) in self.disks.iter().enumerate() {
            let (file, format) = (escape_option(&path_arg(&disk.path)), disk.format.as_str());
            if self.firmware.is_some() {
                // The firmware boots the first disk, not the NIC's PXE ROM.
                args.extend(["-drive".into(), format!("file={file},format={format},if=none,id=disk{i}")]);
                let boot = if i == 0 { ",bootindex=0" } else { "" };
                args.extend(["-device".into(), format!("virtio-blk-pci,drive=disk{i}{boot}")]);
            } else {
                args.extend(["-drive".into(), format!("file={file},if=virtio,format={format}")]);
            }
        }
        for iso in &self.cdroms {
            args.extend([
                "-drive".into(),
                format!("file={},media=cdrom,if=ide,format=raw,readonly=on", escape_option(&path_arg(iso))),
            ]);
        }
        args.extend(self.smbios.args());
        // Host entropy, so the guest's crng is ready at once (keys are made at boot).
        args.extend(["-device", "virtio-rng-pci"].map(String::from));
        if self.pvpanic {
            args.extend(["-device", "pvpanic-pci", "-action", "panic=exit-failure"].map(String::from));
        }
        if let Some(base) = &self.rtc_base {
            args.extend(["-rtc".into(), format!("base={base}")]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// The qemu command, stdin from /dev/null (set another for an interactive console).
    pub fn command(&self) -> Command {
        let mut command = match &self.network {
            VmNetwork::Restricted => Command::new(&self.qemu),
            VmNetwork::Namespace(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(&self.qemu);
                command
            }
        };
        command.args(self.args()).stdin(Stdio::null());
        command
    }
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// qemu option values end at a comma; a literal comma is written twice.
fn escape_option(value: &str) -> String {
    value.replace(',', ",,")
}

/// A TCP port on 127.0.0.1 nothing is bound to, for [`VmSpec::api_port`] or a
/// test's server. See [`free_loopback_port`].
pub fn free_port() -> std::io::Result<u16> {
    free_loopback_port(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map(drop))
}

/// A UDP port on 127.0.0.1 nothing is bound to. See [`free_loopback_port`].
pub fn free_udp_port() -> std::io::Result<u16> {
    free_loopback_port(|port| std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).map(drop))
}

/// A loopback port `bind` can take, for a caller that binds it later (qemu's
/// host forwarding, a node's API, chronyd).
///
/// Asking the kernel for port 0 is not enough there: that port comes from the
/// ephemeral range, and until the caller binds it, any outgoing connection on
/// the machine may take it as its source port (CI saw qemu fail to forward a
/// port that way). So ports come from below the ephemeral range, which the
/// kernel never hands out by itself, each once per process (tests in one
/// binary run in parallel), starting at a point that depends on the process id
/// (so consecutive test binaries do not retry each other's ports), and only
/// ports `bind` takes right now.
fn free_loopback_port(bindable: impl Fn(u16) -> std::io::Result<()>) -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .min(65_536);
    if ephemeral_low < LOW + 1_000 {
        // No room below the ephemeral range: the kernel's choice, racy as it is.
        return Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port());
    }
    let span = ephemeral_low - LOW;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + offset) % span) as u16;
        if bindable(port).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free loopback port below the ephemeral range"))
}

/// `line` without ANSI escape sequences (CSI `ESC [ ... final`, and two-byte `ESC x`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        // CSI: parameters and intermediates up to a final byte in @..~; any other
        // escape is two characters long.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The SPKI sha256 fingerprint a node in maintenance mode logs
/// (`... fingerprint=<64 hex digits>`), if `line` is that log line.
pub fn maintenance_fingerprint(line: &str) -> Option<String> {
    let line = strip_ansi(line);
    let (_, rest) = line.split_once("fingerprint=")?;
    let hex: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    (hex.len() == 64).then_some(hex)
}

/// A running qemu whose console (serial and monitor, plus qemu's own stderr) is
/// written to a file. Killed by PID on [`Vm::kill`] and on drop.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    pid: u32,
    exit: Option<ExitStatus>,
    console: PathBuf,
    reader: File,
    /// Console bytes read but not yet consumed by a wait (a partial line at most,
    /// between waits).
    pending: Vec<u8>,
}

impl Vm {
    /// Starts qemu for `spec` with stdin from /dev/null, the console going to
    /// `console_log` (truncated).
    pub fn spawn(spec: &VmSpec, console_log: &Path) -> Result<Vm> {
        Self::spawn_with_stdin(spec, console_log, Stdio::null())
    }

    /// Like [`Vm::spawn`] with another stdin (the terminal, for an interactive console:
    /// qemu's monitor escape is Ctrl-A, Ctrl-A X quits).
    pub fn spawn_with_stdin(spec: &VmSpec, console_log: &Path, stdin: Stdio) -> Result<Vm> {
        let out = File::create(console_log).map_err(|e| Error::io("create", console_log, e))?;
        let err = out.try_clone().map_err(|e| Error::io("duplicate the handle of", console_log, e))?;
        let reader = File::open(console_log).map_err(|e| Error::io("open", console_log, e))?;
        let mut command = spec.command();
        command.stdin(stdin).stdout(out).stderr(err);
        let child = command.spawn().map_err(|e| {
            crate::cmd::spawn_error(
                &command,
                e,
                "install qemu-system-x86 from bookworm-backports, or run `cargo xtask vm` once",
            )
        })?;
        let pid = child.id();
        Ok(Vm { child, pid, exit: None, console: console_log.to_path_buf(), reader, pending: Vec::new() })
    }

    /// qemu's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The console log file.
    pub fn console_path(&self) -> &Path {
        &self.console
    }

    /// Everything the console has printed so far.
    pub fn console(&self) -> Result<String> {
        let bytes = std::fs::read(&self.console).map_err(|e| Error::io("read", &self.console, e))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Waits until a console line contains `pattern` and returns that line (without
    /// its line ending and terminal colour codes: bronzed colours its log when its
    /// stderr is a terminal, and /dev/console is one). Lines before it are consumed:
    /// the next wait starts after it. Fails at `deadline`, or as soon as qemu exits
    /// without printing it.
    pub fn wait_for_line(&mut self, pattern: &str, deadline: Instant) -> Result<String> {
        self.wait_for(pattern, deadline, |line| line.contains(pattern))
    }

    /// Like [`Vm::wait_for_line`] with a predicate; `what` describes it in errors.
    pub fn wait_for(&mut self, what: &str, deadline: Instant, mut matches: impl FnMut(&str) -> bool) -> Result<String> {
        let started = Instant::now();
        loop {
            // Look at the exit status before reading, so that everything qemu wrote
            // before exiting is read below.
            let exited = self.try_wait()?;
            self.read_new()?;
            while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.pending.drain(..=end).collect();
                let line = strip_ansi(String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n']));
                if matches(&line) {
                    return Ok(line);
                }
            }
            if let Some(status) = exited {
                let partial = strip_ansi(String::from_utf8_lossy(&self.pending).trim_end());
                self.pending.clear();
                if !partial.is_empty() && matches(&partial) {
                    return Ok(partial);
                }
                return Err(Error::VmExited {
                    pattern: what.to_string(),
                    status,
                    log: self.console.clone(),
                    tail: self.tail(20),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::ConsoleTimeout {
                    pattern: what.to_string(),
                    waited: started.elapsed(),
                    log: self.console.clone(),
                    tail: self.tail(20),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// The exit status, if qemu has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().map_err(|e| Error::io("wait for qemu of", &self.console, e))?;
        }
        Ok(self.exit)
    }

    /// Waits for qemu to exit by itself (a poweroff) until `deadline`; `None` if it
    /// is still running then.
    pub fn wait_exit(&mut self, deadline: Instant) -> Result<Option<ExitStatus>> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills qemu (SIGKILL to its PID) unless it has exited, and reaps it. Safe to
    /// call more than once; returns how it ended.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        // The child is not reaped yet, so the PID cannot have been reused.
        self.child.kill().map_err(|e| Error::io("kill qemu of", &self.console, e))?;
        let status = self.child.wait().map_err(|e| Error::io("wait for qemu of", &self.console, e))?;
        self.exit = Some(status);
        Ok(status)
    }

    /// Reads what the console file gained since the last read into `pending`.
    fn read_new(&mut self) -> Result<()> {
        self.reader.read_to_end(&mut self.pending).map_err(|e| Error::io("read", &self.console, e))?;
        Ok(())
    }

    /// The last `lines` lines of the console, for error messages.
    fn tail(&self, lines: usize) -> String {
        let text = self.console().unwrap_or_default();
        let all: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_match_the_checked_command_line() {
        let mut spec = VmSpec::new("/i/vmlinux", "/i/initrd.gz", 50123);
        spec.disks.push(Disk { path: "/i/state.img".into(), format: DiskFormat::Raw });
        spec.append.push("bronze.debug=1".into());
        assert_eq!(
            spec.args().join(" "),
            "-accel tcg -m 512 -nodefaults -nographic -chardev stdio,id=console,mux=on,signal=on -serial chardev:console \
             -mon chardev=console,mode=readline -no-reboot \
             -kernel /i/vmlinux -initrd /i/initrd.gz -append console=ttyS0 panic=-1 bronze.debug=1 \
             -nic user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:50123-:50000 \
             -global virtio-net-pci.romfile= \
             -drive file=/i/state.img,if=virtio,format=raw \
             -device virtio-rng-pci -device pvpanic-pci -action panic=exit-failure"
        );
        // The command line is one argument, whatever it contains.
        let args = spec.args();
        let append = args.iter().position(|a| a == "-append").unwrap();
        assert_eq!(args[append + 1], "console=ttyS0 panic=-1 bronze.debug=1");
    }

    #[test]
    fn options_are_escaped_and_optional_parts_follow_the_spec() {
        let mut spec = VmSpec::new("k", "i", 1);
        spec.pvpanic = false;
        spec.rtc_base = Some("2020-01-01T00:00:00".into());
        spec.disks.push(Disk { path: "/tmp/a,b.qcow2".into(), format: DiskFormat::Qcow2 });
        spec.extra_args = vec!["-smp".into(), "2".into()];
        let args = spec.args();
        assert!(args.contains(&"file=/tmp/a,,b.qcow2,if=virtio,format=qcow2".to_string()));
        assert!(!args.iter().any(|a| a.contains("pvpanic")));
        assert_eq!(args[args.len() - 4..], ["-rtc", "base=2020-01-01T00:00:00", "-smp", "2"]);
        // The network is restricted and only forwarded from loopback.
        let nic = &args[args.iter().position(|a| a == "-nic").unwrap() + 1];
        assert!(nic.contains(",restrict=on,") && nic.contains("hostfwd=tcp:127.0.0.1:1-:50000"), "{nic}");
        assert_eq!(spec.command().get_program(), "qemu-system-x86_64");
    }

    #[test]
    fn only_a_namespace_lifts_the_restriction() {
        let mut spec = VmSpec::new("k", "i", 7);
        spec.network = VmNetwork::Namespace("bronze-test".into());
        let args = spec.args();
        let nic = &args[args.iter().position(|a| a == "-nic").unwrap() + 1];
        assert_eq!(nic, "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:7-:50000");
        let command = spec.command();
        assert_eq!(command.get_program(), "ip");
        let run: Vec<_> = command.get_args().take(4).map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(run, ["netns", "exec", "bronze-test", "qemu-system-x86_64"]);
    }

    #[test]
    fn a_cloud_vm_has_smbios_strings_a_cdrom_and_the_metadata_address() {
        let mut spec = VmSpec::new("k", "i", 7);
        spec.smbios = Smbios {
            manufacturer: Some("Amazon EC2".into()),
            product: Some("t3.micro".into()),
            serial: Some("ec2e1916-9099-7caf-fd21-012345abcdef".into()),
            uuid: Some("ec2e1916-9099-7caf-fd21-012345abcdef".into()),
            asset_tag: Some("i-0123,x".into()),
            ..Smbios::default()
        };
        spec.cdroms.push("/tmp/seed.iso".into());
        spec.metadata = Some(MetadataService::SingleStream(8111));
        let args = spec.args();
        let after =
            |flag: &str| -> Vec<&str> { args.windows(2).filter(|w| w[0] == flag).map(|w| w[1].as_str()).collect() };
        assert_eq!(
            after("-smbios"),
            [
                "type=1,manufacturer=Amazon EC2,product=t3.micro,serial=ec2e1916-9099-7caf-fd21-012345abcdef,\
                 uuid=ec2e1916-9099-7caf-fd21-012345abcdef",
                "type=3,asset=i-0123,,x",
            ]
        );
        assert_eq!(after("-drive"), ["file=/tmp/seed.iso,media=cdrom,if=ide,format=raw,readonly=on"]);
        // The user network contains 169.254.169.254; the API forward names the
        // guest address on it, and the first boot address matches.
        assert_eq!(
            after("-nic"),
            ["user,model=virtio-net-pci,restrict=on,net=169.254.169.0/24,host=169.254.169.2,\
              dhcpstart=169.254.169.15,hostfwd=tcp:127.0.0.1:7-169.254.169.15:50000,\
              guestfwd=tcp:169.254.169.254:80-tcp:127.0.0.1:8111"]
        );
        assert_eq!(spec.first_boot_ip(), "bronze.ip=eth0:169.254.169.15/24:169.254.169.2");
        assert_eq!(VmSpec::new("k", "i", 7).first_boot_ip(), FIRST_BOOT_IP);
        // Nothing of it by default.
        let plain = VmSpec::new("k", "i", 7).args();
        assert!(!plain.iter().any(|a| a == "-smbios" || a.contains("cdrom") || a.contains("guestfwd")), "{plain:?}");
        // An empty type 1 is left out; type 3 alone is fine.
        let tag_only = Smbios { asset_tag: Some("OracleCloud.com".into()), ..Smbios::default() };
        assert_eq!(tag_only.args(), ["-smbios", "type=3,asset=OracleCloud.com"]);
    }

    #[test]
    fn free_ports_are_bindable_distinct_and_below_the_ephemeral_range() {
        let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let tcp: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let udp: Vec<u16> = (0..50).map(|_| free_udp_port().unwrap()).collect();
        let mut all: Vec<u16> = tcp.iter().chain(&udp).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 100, "a port handed out twice: {tcp:?} {udp:?}");
        assert!(all.iter().all(|&p| (10_000..ephemeral_low).contains(&p)), "{all:?} vs {ephemeral_low}");
        // Each is bindable when handed out (nothing here holds them).
        for port in tcp {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
        // A port bind refuses is skipped.
        let busy_if_even =
            |p: u16| if p.is_multiple_of(2) { Err(std::io::ErrorKind::AddrInUse.into()) } else { Ok(()) };
        for _ in 0..4 {
            assert_eq!(free_loopback_port(busy_if_even).unwrap() % 2, 1);
        }
    }

    #[test]
    fn the_metadata_relay_carries_each_connection_both_ways() {
        use std::io::Write;
        use std::os::unix::net::UnixStream;
        // An HTTP-ish server on loopback that answers one request.
        let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = server.local_addr().unwrap().port();
        let serve = std::thread::spawn(move || {
            let (mut conn, _) = server.accept().unwrap();
            let mut request = Vec::new();
            conn.read_to_end(&mut request).unwrap();
            conn.write_all(b"HTTP/1.0 200 OK\r\n\r\ngot ").unwrap();
            conn.write_all(&request).unwrap();
        });
        // The relay as slirp runs it: its stdin and stdout are the guest's
        // connection (here one end of a socket pair).
        let fwd = MetadataService::Relay(port).guestfwd();
        let (head, script) = fwd.split_once(" -c '").unwrap();
        assert_eq!(head, "tcp:169.254.169.254:80-cmd:python3");
        let (script, arg) = script.rsplit_once("' ").unwrap();
        assert_eq!(arg, port.to_string());
        let (mut guest, relay_end) = UnixStream::pair().unwrap();
        let mut relay = Command::new("python3")
            .args(["-c", script, arg])
            .stdin(std::os::fd::OwnedFd::from(relay_end.try_clone().unwrap()))
            .stdout(std::os::fd::OwnedFd::from(relay_end))
            .spawn()
            .unwrap();
        guest.write_all(b"GET /latest/ HTTP/1.0\r\n\r\n").unwrap();
        guest.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        guest.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "HTTP/1.0 200 OK\r\n\r\ngot GET /latest/ HTTP/1.0\r\n\r\n");
        serve.join().unwrap();
        assert!(relay.wait().unwrap().success());

        // Nothing listening: the connection closes without a byte (no
        // traceback on the guest's socket, which is also the relay's stderr).
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
        let (mut guest, relay_end) = UnixStream::pair().unwrap();
        let mut relay = Command::new("python3")
            .args(["-c", script, &closed.to_string()])
            .stdin(std::os::fd::OwnedFd::from(relay_end.try_clone().unwrap()))
            .stdout(std::os::fd::OwnedFd::from(relay_end.try_clone().unwrap()))
            .stderr(std::os::fd::OwnedFd::from(relay_end))
            .spawn()
            .unwrap();
        guest.write_all(b"GET /latest/ HTTP/1.0\r\n\r\n").unwrap();
        assert!(relay.wait().unwrap().success());
        // Closed (or reset: the request was never read), never answered.
        let mut answer = Vec::new();
        if let Err(e) = guest.read_to_end(&mut answer) {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        }
        assert_eq!(String::from_utf8_lossy(&answer), "");
    }

    #[test]
    fn a_firmware_vm_boots_its_first_disk_and_reboots_on_panic() {
        let firmware = Firmware { code: "/fw/code.fd".into(), vars: "/vm/vars.fd".into() };
        let disk = Disk { path: "/vm/disk.qcow2".into(), format: DiskFormat::Qcow2 };
        let spec = VmSpec::from_disk_image(disk, firmware, 7);
        let args = spec.args();
        let after =
            |flag: &str| -> Vec<&str> { args.windows(2).filter(|w| w[0] == flag).map(|w| w[1].as_str()).collect() };
        assert_eq!(
            after("-drive"),
            [
                "if=pflash,format=raw,unit=0,readonly=on,file=/fw/code.fd",
                "if=pflash,format=raw,unit=1,file=/vm/vars.fd",
                "file=/vm/disk.qcow2,format=qcow2,if=none,id=disk0",
            ]
        );
        assert_eq!(after("-device")[0], "virtio-blk-pci,drive=disk0,bootindex=0");
        // No kernel from qemu; reboots stay in qemu; a panic reboots the guest.
        assert!(!args.iter().any(|a| a == "-kernel" || a == "-append" || a == "-no-reboot"), "{args:?}");
        assert!(!args.iter().any(|a| a.contains("pvpanic")), "{args:?}");
    }

    #[test]
    fn the_operators_vm_reboots_like_a_machine() {
        let layout = ImageLayout::new(Path::new("/t"));
        let spec = VmSpec::machine(&layout, 50000, ["RUST_LOG=debug".to_string()]);
        let args = spec.args();
        // qemu resets the guest on reboot instead of exiting (same process, same disk)...
        assert!(!args.iter().any(|a| a == "-no-reboot"), "{args:?}");
        assert_eq!(spec.disks, [Disk { path: layout.state_disk(), format: DiskFormat::Raw }]);
        // ...while a guest panic still ends qemu with a failure.
        assert!(args.windows(2).any(|w| w == ["-action", "panic=exit-failure"]), "{args:?}");
        assert_eq!(spec.kernel_cmdline(), format!("{BASE_CMDLINE} {FIRST_BOOT_IP} RUST_LOG=debug"));
    }

    #[test]
    fn colour_codes_are_stripped_and_the_fingerprint_found() {
        let line = "\u{1b}[2m2026-11-27T13:48:58Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m maintenance mode: apply with \
                    `bronzectl --insecure --cert-fingerprint d1cc apply-config` \u{1b}[3mfingerprint\u{1b}[0m\u{1b}[2m=\u{1b}[0m\
                    d1cc9bfcea1cedaa328b05e332b04a3c401cee1dc91a03bc18027896dc183551\r";
        assert!(strip_ansi(line).starts_with("2026-11-27T13:48:58Z  INFO maintenance mode"));
        assert_eq!(
            maintenance_fingerprint(line).as_deref(),
            Some("d1cc9bfcea1cedaa328b05e332b04a3c401cee1dc91a03bc18027896dc183551")
        );
        assert_eq!(maintenance_fingerprint("fingerprint=abc"), None);
        assert_eq!(strip_ansi("plain \u{1b}"), "plain ");
    }

    /// A stand-in for qemu: a shell script printing console lines, then exiting or hanging.
    fn fake_qemu(dir: &Path, script: &str) -> VmSpec {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("fake-qemu");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut spec = VmSpec::new("k", "i", 1);
        spec.qemu = path;
        spec
    }

    #[test]
    fn console_lines_are_awaited_in_order_and_exit_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let spec = fake_qemu(
            dir.path(),
            r"printf 'boot\r\n\033[32mREADY\033[0m one\r\n'; sleep 0.2; printf 'READY two\r\npartial'; exit 3",
        );
        let log = dir.path().join("console.log");
        let mut vm = Vm::spawn(&spec, &log).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(vm.wait_for_line("READY", deadline).unwrap(), "READY one");
        assert_eq!(vm.wait_for_line("READY", deadline).unwrap(), "READY two");
        assert_eq!(vm.wait_for_line("partial", deadline).unwrap(), "partial");
        let err = vm.wait_for_line("never", deadline).unwrap_err();
        assert!(matches!(err, Error::VmExited { .. }), "{err}");
        assert!(err.to_string().contains("exit status: 3"), "{err}");
        assert_eq!(vm.kill().unwrap().code(), Some(3));
        assert!(vm.console().unwrap().starts_with("boot\r\n"));
    }

    #[test]
    fn timeouts_and_kill_by_pid() {
        let dir = tempfile::tempdir().unwrap();
        let spec = fake_qemu(dir.path(), "echo starting; exec sleep 60");
        let mut vm = Vm::spawn(&spec, &dir.path().join("console.log")).unwrap();
        let pid = vm.pid();
        let err = vm.wait_for_line("READY", Instant::now() + Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, Error::ConsoleTimeout { .. }), "{err}");
        assert!(err.to_string().ends_with("last lines:\nstarting"), "{err}");
        drop(vm);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "qemu {pid} survived the drop");
    }
}
