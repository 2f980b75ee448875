//! `cargo xtask plugins`: build the `plugins/` workspace for wasm32-wasip2 and
//! lay out one bundle directory (`plugin.wasm` + `plugin.toml`) per plugin:
//! first-party ones in `target/plugins/<id>/` (the image packs that
//! directory), test fixtures in `target/plugin-fixtures/<id>/`.
//!
//! The plugins of each world are built in their own cargo run: the SDK has
//! one feature per world, and cargo would unify them across one run, leaving
//! every component with the other worlds' type imports.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target that makes rustc emit a component directly.
const WASM: &str = "wasm32-wasip2";

/// One written bundle.
#[derive(Debug)]
pub struct Bundle {
    /// The plugin id from its manifest, also the directory name.
    pub id: String,
    /// `target/plugins/<id>` or `target/plugin-fixtures/<id>`.
    pub dir: PathBuf,
    /// Size of `plugin.wasm` in bytes.
    pub wasm_size: u64,
    /// A test fixture, never put in the image.
    pub fixture: bool,
}

/// One plugin crate, as its two manifests describe it.
#[derive(Debug)]
struct PluginCrate {
    /// `plugin.toml`, copied into the bundle as it is.
    manifest: String,
    id: String,
    world: String,
    /// The cargo package, which names the built `.wasm`.
    package: String,
    /// Where the bundle goes: `target/plugins` or `target/plugin-fixtures`.
    out: PathBuf,
    fixture: bool,
}

/// Builds every plugin and fixture and rewrites both bundle directories
/// from scratch (so a removed or renamed plugin leaves nothing behind).
pub fn build(root: &Path, target: &Path) -> anyhow::Result<Vec<Bundle>> {
    ensure_wasm_target()?;
    let mut crates: Vec<PluginCrate> = Vec::new();
    for (sources, out, fixture) in [
        (root.join("plugins"), target.join("plugins"), false),
        (root.join("plugins/providers"), target.join("plugins"), false),
        (root.join("plugins/fixtures"), target.join("plugin-fixtures"), true),
    ] {
        if !sources.is_dir() {
            continue;
        }
        for dir in plugin_dirs(&sources)? {
            let krate = read_crate(&dir, &out, fixture)?;
            if let Some(other) = crates.iter().find(|c| c.id == krate.id) {
                bail!("plugins {:?} and {:?} have the same id {:?}", other.package, krate.package, krate.id);
            }
            crates.push(krate);
        }
    }

    let wasm_target = target.join("wasm");
    let mut worlds: Vec<&str> = crates.iter().map(|c| c.world.as_str()).collect();
    worlds.sort();
    worlds.dedup();
    for world in worlds {
        let mut cargo = crate::cargo();
        cargo
            .args(["build", "--release", "--target", WASM, "--manifest-path"])
            .arg(root.join("plugins/Cargo.toml"))
            .arg("--target-dir")
            .arg(&wasm_target);
        for krate in crates.iter().filter(|c| c.world == world) {
            cargo.args(["-p", &krate.package]);
        }
        crate::run(&mut cargo)?;
    }

    let built = wasm_target.join(WASM).join("release");
    for out in [target.join("plugins"), target.join("plugin-fixtures")] {
        if out.exists() {
            std::fs::remove_dir_all(&out).with_context(|| format!("cannot remove {}", out.display()))?;
        }
    }
    let bundles = crates.iter().map(|krate| write_bundle(krate, &built)).collect::<anyhow::Result<Vec<_>>>()?;
    for bundle in &bundles {
        println!(
            "{} {:<16} {:>7.1} KiB  {}",
            if bundle.fixture { "fixture" } else { "plugin " },
            bundle.id,
            bundle.wasm_size as f64 / 1024.0,
            bundle.dir.display()
        );
    }
    Ok(bundles)
}

/// The wasm target, like `ensure_musl_toolchain` (without rustup, assume it).
pub fn ensure_wasm_target() -> anyhow::Result<()> {
    match Command::new("rustup").args(["target", "add", WASM]).status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => bail!("`rustup target add {WASM}` failed: {status}"),
        Err(e) => {
            eprintln!("rustup not found ({e}); assuming the {WASM} target is installed");
            Ok(())
        }
    }
}

/// The direct subdirectories of `dir` that hold a plugin (a `plugin.toml`),
/// sorted so the output is stable.
fn plugin_dirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.join("plugin.toml").is_file() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Reads a plugin crate's `plugin.toml` and `Cargo.toml`.
fn read_crate(dir: &Path, out: &Path, fixture: bool) -> anyhow::Result<PluginCrate> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let manifest = read("plugin.toml")?;
    let cargo_toml = read("Cargo.toml")?;
    let missing = |what: &str, file: &str| format!("no {what} in {}", dir.join(file).display());
    Ok(PluginCrate {
        id: toml_string(&manifest, "", "id").with_context(|| missing("`id`", "plugin.toml"))?,
        world: toml_string(&manifest, "", "world").with_context(|| missing("`world`", "plugin.toml"))?,
        package: toml_string(&cargo_toml, "package", "name")
            .with_context(|| missing("[package] name", "Cargo.toml"))?,
        manifest,
        out: out.to_path_buf(),
        fixture,
    })
}

/// Copies one crate's component and manifest into `<out>/<id>/`.
fn write_bundle(krate: &PluginCrate, built: &Path) -> anyhow::Result<Bundle> {
    let wasm = built.join(format!("{}.wasm", krate.package.replace('-', "_")));
    let dir = krate.out.join(&krate.id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let wasm_size = std::fs::copy(&wasm, dir.join("plugin.wasm"))
        .with_context(|| format!("cannot copy {} (was {} built?)", wasm.display(), krate.package))?;
    std::fs::write(dir.join("plugin.toml"), &krate.manifest)
        .with_context(|| format!("cannot write {}", dir.join("plugin.toml").display()))?;
    Ok(Bundle { id: krate.id.clone(), dir, wasm_size, fixture: krate.fixture })
}

/// The string value of `key = "..."` in `[table]` ("" for the top level):
/// enough for plugin.toml's `id` and `world` and Cargo.toml's package name
/// without a TOML parser in xtask.
fn toml_string(text: &str, table: &str, key: &str) -> Option<String> {
    let mut current = "";
    for line in text.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            current = header.trim_end_matches(']').trim();
            continue;
        }
        if current != table {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        if k.trim() == key {
            let v = v.trim().strip_prefix('"')?;
            return v.split_once('"').map(|(value, _)| value.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::toml_string;

    #[test]
    fn finds_keys_by_table() {
        let text = "id = \"health-tcp\" # the id\n[package]\nname = \"x\"\n[config.id]\nid = \"no\"\n";
        assert_eq!(toml_string(text, "", "id").as_deref(), Some("health-tcp"));
        assert_eq!(toml_string(text, "package", "name").as_deref(), Some("x"));
        assert_eq!(toml_string(text, "", "name"), None);
    }
}
