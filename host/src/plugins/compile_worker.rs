//! The compile worker: `bronzed compile-worker --input WASM --output CWASM`,
//! the node's own binary re-executed by [`super::compiler`] under memory and
//! CPU limits. It validates and compiles one component with the compiling
//! engine, writes the artifact atomically to `--output`, prints a
//! [`WorkerReport`] as one JSON line on stdout and exits.
//!
//! Failures are an exit code and one line on stderr: [`EXIT_INVALID`] (the
//! bytes are not an acceptable component; the line says why),
//! [`EXIT_OUT_OF_MEMORY`] (an allocation failed under the memory limit),
//! anything else is a fault. It runs no tokio, opens no socket and logs
//! nothing else.

use super::artifact::precompile;
use super::engine::{compiling_engine, fingerprint};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// The hidden subcommand of `bronzed` that runs a worker.
pub const COMMAND: &str = "compile-worker";

/// The component is not one the node accepts (stderr says why).
pub const EXIT_INVALID: u8 = 65;
/// Memory ran out under the worker's limit.
pub const EXIT_OUT_OF_MEMORY: u8 = 66;
/// Bad arguments, unreadable input, unwritable output, a panic.
pub const EXIT_FAULT: u8 = 70;

/// What a successful worker prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerReport {
    /// Hex sha256 of the artifact written to `--output`.
    pub cwasm_sha256: String,
    /// See [`super::artifact::Precompiled::memory_minimum`].
    pub memory_minimum: u64,
    /// The fingerprint of the engine that compiled it.
    pub fingerprint: String,
}

/// The worker's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerArgs {
    pub input: PathBuf,
    pub output: PathBuf,
}

impl WorkerArgs {
    /// The arguments after the subcommand, as the parent passes them.
    pub fn to_args(&self) -> Vec<OsString> {
        vec!["--input".into(), self.input.clone().into(), "--output".into(), self.output.clone().into()]
    }

    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<WorkerArgs, String> {
        let (mut input, mut output) = (None, None);
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let slot = match flag.to_str() {
                Some("--input") => &mut input,
                Some("--output") => &mut output,
                _ => {
                    return Err(format!(
                        "{COMMAND}: unexpected argument {flag:?}; expected --input WASM --output CWASM"
                    ));
                }
            };
            let value = args.next().ok_or_else(|| format!("{COMMAND}: {} needs a path", flag.to_string_lossy()))?;
            *slot = Some(PathBuf::from(value));
        }
        match (input, output) {
            (Some(input), Some(output)) => Ok(WorkerArgs { input, output }),
            _ => Err(format!("{COMMAND}: both --input WASM and --output CWASM are required")),
        }
    }
}

/// How a worker run failed, before it becomes an exit code.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Invalid(String),
    OutOfMemory(String),
    Fault(String),
}

/// The worker process's `main`: `args` are the arguments after
/// [`COMMAND`].
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    // One line on stderr per failure, written below; the default hook's
    // text would only repeat it.
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = match WorkerArgs::parse(args) {
        Ok(args) => std::panic::catch_unwind(|| run(&args)).unwrap_or_else(|panic| {
            let message = crate::controllers::payload_message(panic.as_ref());
            Err(out_of_memory_or(message, Failure::Fault))
        }),
        Err(usage) => Err(Failure::Fault(usage)),
    };
    match outcome {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_FAULT, &format!("cannot encode the report: {e}")),
        },
        Err(Failure::Invalid(message)) => fail(EXIT_INVALID, &message),
        Err(Failure::OutOfMemory(message)) => fail(EXIT_OUT_OF_MEMORY, &message),
        Err(Failure::Fault(message)) => fail(EXIT_FAULT, &message),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(code)
}

fn run(args: &WorkerArgs) -> Result<WorkerReport, Failure> {
    let wasm = std::fs::read(&args.input)
        .map_err(|e| out_of_memory_or(format!("cannot read {}: {e}", args.input.display()), Failure::Fault))?;
    let engine = compiling_engine()
        .map_err(|e| out_of_memory_or(format!("cannot create the compiling engine: {e:#}"), Failure::Fault))?;
    let compiled = precompile(&engine, &wasm).map_err(|e| out_of_memory_or(e, Failure::Invalid))?;
    drop(wasm);
    crate::statedir::write_file_atomic(&args.output, &compiled.cwasm)
        .map_err(|e| out_of_memory_or(format!("cannot write {}: {e}", args.output.display()), Failure::Fault))?;
    Ok(WorkerReport {
        cwasm_sha256: bronze_bundle::sha256_hex(&compiled.cwasm),
        memory_minimum: compiled.memory_minimum,
        fingerprint: fingerprint(&engine),
    })
}

/// Whether an error's text says memory ran out (under RLIMIT_DATA an
/// mmap or a thread's stack fails with ENOMEM), else `other(message)`.
fn out_of_memory_or(message: String, other: fn(String) -> Failure) -> Failure {
    if is_out_of_memory(&message) { Failure::OutOfMemory(message) } else { other(message) }
}

/// See [`out_of_memory_or`]; also recognises Rust's own allocation-failure
/// message, which the parent sees on stderr after an abort.
pub fn is_out_of_memory(text: &str) -> bool {
    ["memory allocation of", "Cannot allocate memory", "os error 12"].iter().any(|needle| text.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn arguments_round_trip_and_bad_ones_are_named() {
        let parsed = WorkerArgs { input: "/s/work/1.wasm".into(), output: "/s/work/1.cwasm".into() };
        assert_eq!(WorkerArgs::parse(parsed.to_args()).unwrap(), parsed);
        assert_eq!(
            WorkerArgs::parse(args(&["--input", "a", "--bogus", "b"])).unwrap_err(),
            "compile-worker: unexpected argument \"--bogus\"; expected --input WASM --output CWASM"
        );
        assert_eq!(WorkerArgs::parse(args(&["--input"])).unwrap_err(), "compile-worker: --input needs a path");
        assert_eq!(
            WorkerArgs::parse(args(&["--input", "a"])).unwrap_err(),
            "compile-worker: both --input WASM and --output CWASM are required"
        );
    }

    #[test]
    fn a_run_writes_the_artifact_and_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.wasm");
        let output = dir.path().join("out.cwasm");
        std::fs::write(&input, wasm_encoder::Component::new().finish()).unwrap();
        let report = run(&WorkerArgs { input: input.clone(), output: output.clone() }).unwrap();
        let written = std::fs::read(&output).unwrap();
        assert_eq!(report.cwasm_sha256, bronze_bundle::sha256_hex(&written));
        assert_eq!(report.memory_minimum, 0);
        assert_eq!(report.fingerprint, crate::plugins::engine::PluginEngine::new().unwrap().fingerprint());
        let line = serde_json::to_string(&report).unwrap();
        assert!(line.starts_with("{\"cwasmSha256\":"), "{line}");
        assert_eq!(serde_json::from_str::<WorkerReport>(&line).unwrap(), report);

        std::fs::write(&input, b"\0asm\x01\0\0\0").unwrap();
        let err = run(&WorkerArgs { input, output: dir.path().join("other.cwasm") }).unwrap_err();
        assert!(matches!(&err, Failure::Invalid(m) if m.contains("core WebAssembly module")), "{err:?}");
        assert!(!dir.path().join("other.cwasm").exists());
        let err = run(&WorkerArgs { input: dir.path().join("missing"), output }).unwrap_err();
        assert!(matches!(&err, Failure::Fault(m) if m.starts_with("cannot read")), "{err:?}");
    }

    #[test]
    fn memory_exhaustion_is_recognised_in_its_usual_words() {
        assert!(is_out_of_memory("memory allocation of 1048576 bytes failed"));
        assert!(is_out_of_memory("failed to mmap: Cannot allocate memory (os error 12)"));
        assert!(!is_out_of_memory("plugin.wasm is not a valid component: type mismatch"));
        assert_eq!(
            out_of_memory_or("x: os error 12".into(), Failure::Invalid),
            Failure::OutOfMemory("x: os error 12".into())
        );
        assert_eq!(out_of_memory_or("bad".into(), Failure::Invalid), Failure::Invalid("bad".into()));
    }
}
