//! Several rate-limiter replicas behind one edge: each bucket key is owned by
//! one replica (rendezvous hashing), quotas stay enforced, and a replica lost
//! to kill -9 only moves its own keys. The edge runs fail-closed, so a request
//! whose bucket found no answering replica would be a 503: every 200 after the
//! kill proves the survivor answered for the dead replica's keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use keymesh_limiter_client::hrw;
use keymesh_tests::errors::assert_xks_error;
use keymesh_tests::xks::model::*;
use keymesh_tests::*;

/// Generous tenants besides TENANT_A, so the dead replica surely owned some
/// of the buckets that must keep being served (14 keys: 2^-14 that it owned
/// none, and the test reports the count).
const EXTRA: usize = 6;

fn extra(i: usize) -> String {
    format!("/lim-{i}/kms/xks/v1")
}

/// TENANT_B is the tiny one: 1/s, burst 3.
fn quotas() -> String {
    format!(
        "[default]\nrate_per_second = 100000\nburst = 100000\n\
         [[tenants]]\ntenant = \"{TENANT_B}\"\nrate_per_second = 1\nburst = 3\n"
    )
}

/// The replica index owning (tenant, operation), as the edge computes it.
fn owner(m: &Mesh, tenant: &str, operation: &str) -> usize {
    let seeds: Vec<u64> = m
        .limiter_addrs
        .iter()
        .map(|a| hrw::replica_seed(&format!("http://{a}")))
        .collect();
    usize::from(hrw::order(hrw::key_hash(tenant, operation), &seeds)[0])
}

/// Encrypt `n` times on `c`; the statuses.
async fn burst(c: &keymesh_xks_client::XksClient, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = c
            .encrypt(KEY_ED, &EncryptRequest::new(plaintext(16)))
            .await
            .unwrap();
        if r.status() == 429 {
            assert_xks_error(&r, Operation::Encrypt, 429, "ThrottlingException");
        }
        out.push(r.status());
    }
    out
}

#[tokio::test]
async fn two_replicas_share_buckets_and_survive_losing_one() {
    let mut keystores = vec![TENANT_A.to_owned(), TENANT_B.to_owned()];
    keystores.extend((0..EXTRA).map(extra));
    let m = Mesh::start(MeshOptions {
        limiters: 2,
        keystores,
        limiter_toml: Some(quotas()),
        limiter_failure_policy: "closed".into(),
        ..MeshOptions::default()
    })
    .unwrap();
    assert_eq!(m.limiter_addrs.len(), 2);
    assert!(m.edge_toml().contains("limiters = ["), "{}", m.edge_toml());

    // The tiny tenant is throttled with two replicas: its bucket lives on one.
    let thr = m.client(TENANT_B);
    let statuses = burst(&thr, 20).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (3..=5).contains(&ok),
        "burst 3 (+1/s refill) must allow about 3 of 20: {statuses:?}"
    );
    assert_eq!(ok + statuses.iter().filter(|s| **s == 429).count(), 20);

    // Kill the replica that does NOT own the tiny tenant's bucket, so its
    // throttling must stay enforced by the survivor throughout.
    let survivor = owner(&m, TENANT_B, "Encrypt");
    let victim = 1 - survivor;
    let mut generous: Vec<String> = vec![TENANT_A.to_owned()];
    generous.extend((0..EXTRA).map(extra));
    let moved: Vec<(String, &str)> = generous
        .iter()
        .flat_map(|t| {
            ["Encrypt", "GetKeyMetadata"]
                .into_iter()
                .map(move |op| (t.clone(), op))
        })
        .filter(|(t, op)| owner(&m, t, op) == victim)
        .collect();
    eprintln!(
        "survivor {survivor} ({}), victim {victim} ({}); {} generous buckets move",
        m.limiter_addrs[survivor],
        m.limiter_addrs[victim],
        moved.len()
    );
    assert!(!moved.is_empty(), "the victim owned no generous bucket");
    m.kill_limiter_replica(victim);

    // For at least two probe intervals (the edge probes every second), every
    // generous request is served and /readyz stays 200.
    let clients: Vec<_> = generous.iter().map(|t| m.client(t)).collect();
    let until = Instant::now() + Duration::from_millis(2500);
    let mut served = 0usize;
    while Instant::now() < until {
        for c in &clients {
            let r = c
                .encrypt(KEY_ED, &EncryptRequest::new(plaintext(16)))
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                200,
                "Encrypt after losing a limiter replica: {}",
                String::from_utf8_lossy(&r.body)
            );
            let r = c
                .get_key_metadata(KEY_ED, &GetKeyMetadataRequest::default())
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "GetKeyMetadata after losing a replica");
            served += 2;
        }
        assert_eq!(m.readyz(), 200, "one limiter replica still serves");
    }
    eprintln!("{served} requests served after the kill");

    // The tiny tenant is still throttled by the surviving owner (its bucket
    // was not reset: the burst was spent above, so at most the refill passes).
    let statuses = burst(&thr, 20).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.contains(&429) && ok <= 6,
        "throttling on the survivor must hold: {statuses:?}"
    );
}
