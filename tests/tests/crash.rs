//! Crash safety: SIGKILL bronzed at random moments during 200+ applies; the
//! stored config is always exactly the last acknowledged one or the one in
//! flight, never a mix, never empty.

use bronze_api::v1 as pb;
use bronze_tests::{Node, NodeOptions, Pki};
use rand::Rng;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_applies_leaves_old_or_new() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");
    let docs: Vec<String> = (0..220).map(|i| pki.node_config(&format!("host-{i}"))).collect();
    let start =
        |config: Option<String>| NodeOptions { config, state_dir: Some(state_dir.clone()), ..Default::default() };
    let mut node = Node::start_with(start(Some(docs[0].clone()))).await;
    let auth = pki.auth(&["os:admin"]);
    let mut acked = docs[0].clone().into_bytes();
    let mut kills = 0;
    let mut rng = rand::rng();

    for doc in &docs[1..] {
        let mut client = node.client(&auth).await;
        let req = pb::ApplyConfigurationRequest { data: doc.clone().into_bytes(), ..Default::default() };
        let call = tokio::spawn(async move { client.machine.apply_configuration(req).await });
        if rng.random_range(0..8) == 0 {
            tokio::time::sleep(Duration::from_micros(rng.random_range(0..4000))).await;
            node.kill();
            kills += 1;
            let answered = call.await.unwrap().is_ok();
            let stored = std::fs::read(state_dir.join("config.yaml")).expect("a stored config survives");
            assert!(stored == acked || stored == doc.as_bytes(), "stored config is neither the old nor the new one");
            if answered {
                assert_eq!(stored, doc.as_bytes(), "an acknowledged apply was lost");
            }
            acked = stored;
            node = Node::start_with(start(None)).await;
            // The node restarted from whatever was stored, and cleaned temp files.
            let leftovers: Vec<_> = std::fs::read_dir(&state_dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
                .collect();
            assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
        } else {
            call.await.unwrap().expect("apply");
            acked = doc.clone().into_bytes();
        }
    }
    assert!(kills >= 10, "only {kills} kills: the test did not exercise crashes");
    let mut client = node.client(&auth).await;
    let live = client.machine.get_configuration(pb::GetConfigurationRequest {}).await.unwrap().into_inner().data;
    assert_eq!(live, acked, "the node serves what is stored");
}
