//! Compiling plugins happens in a worker process under its own limits, on a
//! real `bronzed`: a large generated component installs while the node's
//! memory stays small, a compile over its limits is refused and changes
//! nothing, a component whose memory starts above the instance's limit is
//! refused at install, and an unusable AOT cache is compiled again in a
//! worker too.

use bronze_api::v1 as pb;
use bronze_bundle::{Bundle, Manifest};
use bronze_tests::plugins::{client, config_with_plugins, files_under, install, instance_yaml, run};
use bronze_tests::{Node, NodeOptions, Pki};
use bronzectl::client::NodeClient;
use std::time::{Duration, Instant};
use wasm_encoder::{
    CanonicalOption, CodeSection, ComponentBuilder, ComponentExportKind, ComponentValType, ConstExpr, DataSection,
    ExportKind, ExportSection, Function, FunctionSection, Instruction, MemorySection, MemoryType, Module, ModuleArg,
    PrimitiveValType, TypeSection, ValType,
};

const ADMIN: &[&str] = &["os:admin"];
/// Functions in the large component: about 2.4 MB of wasm, which took the
/// node to ≈690 MiB when it compiled in its own process.
const LARGE: u32 = 100_000;

/// Where `check` finds its answer: a `report` record laid out by the
/// canonical ABI (status, summary pointer and length, details pointer and
/// length), and the summary text.
const RETURN_AREA: i32 = 1024;
const SUMMARY: i32 = 2048;

/// A core module for the `health-check` world: `check` returns a healthy
/// report from static data; `functions` more functions only make it big
/// (each does arithmetic and calls the next, so none is trivial to
/// compile); its memory starts at `pages` pages of 64 KiB.
fn core_module(functions: u32, pages: u64, summary: &str) -> Module {
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I32]);
    types.ty().function([ValType::I32], [ValType::I32]);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    let mut code = CodeSection::new();
    let mut check = Function::new([]);
    check.instruction(&Instruction::I32Const(RETURN_AREA)).instruction(&Instruction::End);
    code.function(&check);
    for i in 0..functions {
        funcs.function(1);
        let mut f = Function::new([]);
        f.instruction(&Instruction::LocalGet(0))
            .instruction(&Instruction::I32Const(i as i32))
            .instruction(&Instruction::I32Add)
            .instruction(&Instruction::LocalGet(0))
            .instruction(&Instruction::I32Mul);
        if i + 1 < functions {
            f.instruction(&Instruction::Call(i + 2));
        }
        f.instruction(&Instruction::I32Const(0x5bd1e995))
            .instruction(&Instruction::I32Xor)
            .instruction(&Instruction::End);
        code.function(&f);
    }
    let mut memories = MemorySection::new();
    memories.memory(MemoryType { minimum: pages, maximum: None, memory64: false, shared: false, page_size_log2: None });
    let mut exports = ExportSection::new();
    exports.export("check", ExportKind::Func, 0).export("memory", ExportKind::Memory, 0);
    let mut record = vec![0u8; 4]; // status: healthy
    for word in [SUMMARY as u32, summary.len() as u32, SUMMARY as u32, 0] {
        record.extend_from_slice(&word.to_le_bytes());
    }
    let mut data = DataSection::new();
    data.active(0, &ConstExpr::i32_const(RETURN_AREA), record);
    data.active(0, &ConstExpr::i32_const(SUMMARY), summary.bytes());
    let mut module = Module::new();
    module.section(&types).section(&funcs).section(&memories).section(&exports).section(&code).section(&data);
    module
}

/// A plugin bundle (unsigned) of a generated `health-check` component:
/// [`core_module`] instantiated, its `check` lifted as the world's
/// `check: func() -> report` with `report` (and `status`) defined here as
/// `wit/plugin.wit` defines them.
fn generated(id: &str, functions: u32, pages: u64) -> Bundle {
    let string = || ComponentValType::Primitive(PrimitiveValType::String);
    let module = core_module(functions, pages, &format!("{functions} generated functions"));
    let mut component = ComponentBuilder::default();
    let module = component.core_module(None, &module);
    let instance = component.core_instantiate(None, module, std::iter::empty::<(&str, ModuleArg)>());
    let memory = component.core_alias_export(None, instance, "memory", ExportKind::Memory);
    let check = component.core_alias_export(None, instance, "check", ExportKind::Func);
    let (status, ty) = component.type_defined(None);
    ty.enum_type(["healthy", "degraded", "unhealthy", "unknown"]);
    let status = component.export("status", ComponentExportKind::Type, status, None);
    let (pair, ty) = component.type_defined(None);
    ty.tuple([string(), string()]);
    let (details, ty) = component.type_defined(None);
    ty.list(ComponentValType::Type(pair));
    let (report, ty) = component.type_defined(None);
    ty.record([
        ("status", ComponentValType::Type(status)),
        ("summary", string()),
        ("details", ComponentValType::Type(details)),
    ]);
    let report = component.export("report", ComponentExportKind::Type, report, None);
    let (signature, mut ty) = component.type_function(None);
    ty.params(std::iter::empty::<(&str, ComponentValType)>()).result(Some(ComponentValType::Type(report)));
    let lifted = component.lift_func(None, check, signature, [CanonicalOption::Memory(memory), CanonicalOption::UTF8]);
    component.export("check", ComponentExportKind::Func, lifted, None);
    let wasm = component.finish();
    let manifest_bytes = format!("id = \"{id}\"\nversion = \"0.1.0\"\nworld = \"health-check\"\n").into_bytes();
    let manifest = Manifest::parse(&manifest_bytes).expect("manifest");
    Bundle { manifest_bytes, manifest, wasm, signature: None }
}

/// Peak resident memory of a process so far (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kib * 1024
}

/// `machine.plugins` with unsigned plugins allowed, `compile` limits (a
/// YAML flow mapping, or empty) and the given instances.
fn plugins(compile: &str, instances: &str) -> String {
    let compile = if compile.is_empty() { String::new() } else { format!("compile: {{ {compile} }}\n    ") };
    format!("allowUnsigned: true\n    {compile}instances:{instances}")
}

async fn apply(c: &mut NodeClient, config: &str) {
    c.machine
        .apply_configuration(pb::ApplyConfigurationRequest { data: config.as_bytes().to_vec(), ..Default::default() })
        .await
        .expect("apply config");
}

/// The `artifact` row of every installed plugin once none is loading.
async fn artifacts(c: &NodeClient) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = client(c.channel.clone()).list(pb::PluginListRequest {}).await.unwrap().into_inner();
        let rows: Vec<(String, String)> = list.plugins.into_iter().map(|p| (p.id, p.artifact)).collect();
        if !rows.iter().any(|(_, a)| a == "loading") {
            return rows;
        }
        assert!(Instant::now() < deadline, "plugins still loading: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_large_component_compiles_in_a_worker_and_the_node_stays_small() {
    let pki = Pki::new();
    let big = generated("big", LARGE, 1);
    assert!(big.wasm.len() > 2_000_000, "the component is {} bytes", big.wasm.len());
    let instance = instance_yaml("big", "big", "", "", None);
    // It needs ≈610 MiB to compile: more than the default limit allows.
    let config = |compile: &str| config_with_plugins(&pki, "large", &plugins(compile, &instance));
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");
    let start = |config: Option<String>| {
        Node::start_with(NodeOptions { config, state_dir: Some(state_dir.clone()), ..Default::default() })
    };
    let mut node = start(Some(config("memoryLimit: 1GiB"))).await;
    let mut c = node.client(&pki.auth(ADMIN)).await;
    let before = peak_rss(node.pid());

    let installed = install(c.channel.clone(), &big).await.unwrap_or_else(|e| panic!("install: {e}\n{}", node.log()));
    let peak = peak_rss(node.pid());
    eprintln!(
        "installing {} bytes: compile {} ms, node peak RSS {} MiB before, {} MiB after",
        big.wasm.len(),
        installed.compile_ms,
        before >> 20,
        peak >> 20
    );
    assert!(peak < 150 << 20, "the node's peak RSS reached {} MiB compiling (it was {} MiB)", peak >> 20, before >> 20);
    let ran = run(&c, "big").await;
    assert_eq!(ran.outcome.as_ref().unwrap().kind, "ok", "{ran:?}");
    assert!(ran.result_json.contains(&format!("{LARGE} generated functions")), "{}", ran.result_json);

    // An unusable cache is compiled again, and again in a worker: under a
    // memory limit the component cannot compile in, it fails with that
    // limit's error while the node runs on.
    apply(&mut c, &config("memoryLimit: 64MiB")).await;
    node.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
    let cache = state_dir.join("plugins/cache");
    let artifact = std::fs::read_dir(&cache).unwrap().next().expect("one cached artifact").unwrap().path();
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&artifact, &bytes).unwrap();

    let node = start(None).await;
    let c = node.client(&pki.auth(ADMIN)).await;
    let rows = artifacts(&c).await;
    assert_eq!(
        rows,
        [(
            "big".to_string(),
            "failed: compiling plugin big exceeded its memory limit (64 MiB); machine.plugins.compile.memoryLimit sets it"
                .to_string()
        )],
        "{}",
        node.log()
    );
    assert!(node.log().contains("corrupted"), "{}", node.log());
    assert!(peak_rss(node.pid()) < 150 << 20, "peak RSS {} MiB", peak_rss(node.pid()) >> 20);
}

#[tokio::test]
async fn a_compile_over_its_limits_is_refused_and_changes_nothing() {
    let pki = Pki::new();
    let big = generated("big", LARGE, 1);
    let small = generated("small", 10, 1);
    let instances =
        format!("{}{}", instance_yaml("big", "big", "", "", None), instance_yaml("small", "small", "", "", None));
    let config = |compile: &str| config_with_plugins(&pki, "limits", &plugins(compile, &instances));
    let node = Node::start_configured(&config("memoryLimit: 64MiB")).await;
    let mut c = node.client(&pki.auth(ADMIN)).await;
    let before = files_under(&node.state_dir.join("plugins"));

    let err = install(c.channel.clone(), &big).await.expect_err("over the memory limit");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert_eq!(
        err.message(),
        "compiling plugin big exceeded its memory limit (64 MiB); machine.plugins.compile.memoryLimit sets it"
    );
    assert_eq!(files_under(&node.state_dir.join("plugins")), before);

    apply(&mut c, &config("cpuLimit: 1s")).await;
    let err = install(c.channel.clone(), &big).await.expect_err("over the CPU-time limit");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert_eq!(
        err.message(),
        "compiling plugin big exceeded its CPU-time limit (1 s); machine.plugins.compile.cpuLimit sets it"
    );
    assert_eq!(files_under(&node.state_dir.join("plugins")), before);

    // The node works on, under the same limits.
    install(c.channel.clone(), &small).await.unwrap_or_else(|e| panic!("install small: {e}\n{}", node.log()));
    assert_eq!(run(&c, "small").await.outcome.unwrap().kind, "ok");
}

#[tokio::test]
async fn a_component_whose_memory_starts_above_the_limit_is_refused_at_install() {
    let pki = Pki::new();
    // 1024 pages: its memory starts at 64 MiB.
    let roomy = generated("roomy", 10, 1024);
    let config = |limits: &str| {
        let mut instance = instance_yaml("roomy", "roomy", "", "", None);
        instance.push_str(limits);
        config_with_plugins(&pki, "memory", &plugins("", &instance))
    };
    let node = Node::start_configured(&config("")).await;
    let mut c = node.client(&pki.auth(ADMIN)).await;
    let before = files_under(&node.state_dir.join("plugins"));

    let err = install(c.channel.clone(), &roomy).await.expect_err("memory above the default limit");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert_eq!(
        err.message(),
        "roomy: instance roomy: machine.plugins.instances[0].limits.memory: plugin roomy needs 64 MiB of memory to start (its largest initial memory), more than this instance's limit of 32 MiB (from the default)"
    );
    assert_eq!(files_under(&node.state_dir.join("plugins")), before);

    apply(&mut c, &config("\n        limits: { memory: 96MiB }")).await;
    install(c.channel.clone(), &roomy).await.unwrap_or_else(|e| panic!("install with room: {e}"));
    assert_eq!(run(&c, "roomy").await.outcome.unwrap().kind, "ok");

    // Lowering the limit afterwards refuses the instance (not every call).
    apply(&mut c, &config("\n        limits: { memory: 48MiB }")).await;
    let err = client(c.channel.clone()).run(pb::PluginRunRequest { id: "roomy".into() }).await.unwrap_err();
    assert!(err.message().contains("needs 64 MiB of memory to start"), "{err}");
    assert!(err.message().contains("limit of 48 MiB (from machine.plugins.instances[0].limits.memory)"), "{err}");
}

/// The pids of `parent`'s children running `compile-worker`.
fn compile_workers(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The parent pid is the second field after the parenthesised name.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(parent) && cmdline.split(|b| *b == 0).any(|arg| arg == b"compile-worker")
        })
        .collect()
}

#[tokio::test]
async fn a_cancelled_install_stops_its_compile() {
    let pki = Pki::new();
    let big = generated("big", LARGE, 1);
    let instance = instance_yaml("big", "big", "", "", None);
    let node =
        Node::start_configured(&config_with_plugins(&pki, "cancel", &plugins("memoryLimit: 1GiB", &instance))).await;
    let c = node.client(&pki.auth(ADMIN)).await;
    let before = files_under(&node.state_dir.join("plugins"));
    let channel = c.channel.clone();
    let upload = tokio::spawn(async move { install(channel, &big).await });
    let deadline = Instant::now() + Duration::from_secs(30);
    let worker = loop {
        if let [pid] = compile_workers(node.pid())[..] {
            break pid;
        }
        assert!(Instant::now() < deadline, "no compile worker started:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The client goes away: the request is reset, the install dropped.
    upload.abort();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{worker}")).exists() {
        assert!(Instant::now() < deadline, "compile worker {worker} still runs after the install was cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(files_under(&node.state_dir.join("plugins")), before);
    // The next install is not held up by the cancelled one.
    let small = generated("small", 10, 1);
    let instances = format!("{instance}{}", instance_yaml("small", "small", "", "", None));
    let mut c = c;
    apply(&mut c, &config_with_plugins(&pki, "cancel", &plugins("", &instances))).await;
    install(c.channel.clone(), &small).await.unwrap_or_else(|e| panic!("install small: {e}\n{}", node.log()));
}
