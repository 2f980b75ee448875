//! `mockcloud --cloud aws --listen 169.254.169.254:80`: serves one mock
//! cloud metadata service (see `bronze_tests::mockcloud`) until killed,
//! logging one line per request to stderr. Tests run it inside a network
//! namespace or behind qemu's user network.

use std::net::SocketAddr;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let (Some(cloud), Some(listen)) = (value("--cloud"), value("--listen")) else {
        eprintln!("usage: mockcloud --cloud NAME --listen ADDR:PORT");
        return std::process::ExitCode::from(2);
    };
    let Some(mock) = bronze_tests::mockcloud::by_name(&cloud) else {
        eprintln!("mockcloud: unknown cloud {cloud:?}");
        return std::process::ExitCode::from(2);
    };
    let listen: SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mockcloud: --listen {listen:?}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let server = match bronze_tests::mockcloud::MockServer::start(listen, mock).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mockcloud: cannot listen on {listen}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        eprintln!("mockcloud: {cloud} listening on {}", server.addr);
        let mut seen = 0;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let hits = server.hits();
            for hit in &hits[seen..] {
                eprintln!("mockcloud: {hit}");
            }
            seen = hits.len();
        }
    })
}
