//! The Bronze image pipeline as a library: everything `cargo xtask image` and
//! `cargo xtask vm` do, in pieces the end-to-end tests can call directly.
//!
//! - [`kernel`]: resolve, download and unpack Debian's kernel package; extract the
//!   uncompressed `vmlinux` (booted through PVH: no in-guest decompression).
//! - [`kbuild`], [`kconfig`]: Bronze's own kernel, built from Debian's
//!   `linux-source-6.1` and the fragment `images/kernel/bronze.config`, checked
//!   option by option, cached outside `target/`.
//! - [`kmod`]: read `.modinfo` from `.ko` files and order the modules of
//!   `images/modules.txt` so that dependencies load first.
//! - [`cpio`]: a newc archive writer and parser.
//! - [`initramfs`]: the image's file tree, written as a reproducible newc archive (stored as
//!   measured: uncompressed, or gzip).
//! - [`disk`]: the ext4 state disk, made without root.
//! - [`bootdisk`]: the bootable GPT disk image (EFI system partition with
//!   systemd-boot and boot slot `a`, and the state partition), made without root.
//! - [`layout`]: where the outputs live under `target/images/`, and the size report.
//! - [`vm`]: the qemu command line ([`vm::VmSpec`]) and a running VM with its serial
//!   console captured to a file ([`vm::Vm`]).
//!
//! The library never installs packages or builds `bronzed`: that is xtask's job. It
//! runs the host tools it needs (`apt-cache`, `apt-get download`, `dpkg -x`, `xz`,
//! `strip`, `mke2fs`, `mkfs.vfat`, `mcopy`, `sfdisk`, `qemu-system-x86_64`), and every error names the file or
//! command that failed.

#![forbid(unsafe_code)]

pub mod bootdisk;
pub mod cpio;
pub mod disk;
pub mod initramfs;
pub mod kbuild;
pub mod kconfig;
pub mod kernel;
pub mod kmod;
pub mod layout;
pub mod vm;

mod cmd;
mod error;

pub use cmd::find_tool;
pub use error::Error;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
