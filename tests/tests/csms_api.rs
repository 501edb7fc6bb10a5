//! Huawei CSMS dialect end to end, through the real binaries, on both store
//! backends: a secret's lifecycle, exact value round trips (text and
//! binary, carrying the harness MARKER, which must never reach a log),
//! stage semantics, project isolation, and crash consistency: the edge is
//! killed with SIGKILL while clients create secrets and versions, and after
//! a restart every acknowledged write is readable and no secret is left
//! half-written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keymesh_tests::csms::CsmsClient;
use keymesh_tests::huawei::HuaweiStore;
use keymesh_tests::kms::KmsClient;
use keymesh_tests::{MARKER, Mesh, marker_text, plaintext, random_hex};
use serde_json::{Value, json};

fn a(m: &Mesh) -> CsmsClient {
    CsmsClient(KmsClient::aksk(m, &m.huawei().full_a))
}

fn b(m: &Mesh) -> CsmsClient {
    CsmsClient(KmsClient::aksk(m, &m.huawei().full_b))
}

fn name(prefix: &str) -> String {
    format!("{prefix}-{}", random_hex(6))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn lifecycle(m: &Mesh) {
    let c = a(m);
    let n = name("life");
    let text = marker_text(300);
    let before = now_secs();
    let r = c.create_text(&n, &text).await.ok();
    assert!(
        !r.text().contains(std::str::from_utf8(MARKER).unwrap()),
        "create echoes the value: {}",
        r.text()
    );
    let s = &r.json["secret"];
    assert_eq!(s["name"], n);
    assert_eq!(s["state"], "ENABLED");
    let id = s["id"].as_str().unwrap().to_owned();
    let created = s["create_time"].as_i64().expect("integer create_time");
    assert!(
        (before - 5..=now_secs() + 5).contains(&created),
        "create_time {created} is not epoch seconds"
    );
    assert!(s["scheduled_delete_time"].is_null());

    let shown = c.get(&format!("secrets/{n}")).await.ok();
    assert_eq!(shown.json["secret"]["id"], id.as_str());
    assert!(c.all_names().await.contains(&n));

    // v1 holds exactly the text.
    let v = c.version(&n, "v1").await.ok();
    assert_eq!(v.json["version"]["secret_string"], text.as_str());
    assert_eq!(v.json["version"]["version_metadata"]["id"], "v1");

    // A binary version: bytes in, the same bytes out.
    let mut raw = plaintext(1000);
    raw.extend((0u8..=255).collect::<Vec<_>>());
    let r = c
        .json(
            "POST",
            &format!("secrets/{n}/versions"),
            &json!({ "secret_binary": B64.encode(&raw) }),
        )
        .await
        .ok();
    assert_eq!(r.json["version_metadata"]["id"], "v2");
    let v = c.version(&n, "latest").await.ok();
    assert!(
        v.json["version"]
            .get("secret_string")
            .is_none_or(Value::is_null)
    );
    let got = B64
        .decode(v.json["version"]["secret_binary"].as_str().unwrap())
        .unwrap();
    assert_eq!(got, raw);
    // The old text is still there.
    assert_eq!(
        c.version(&n, "v1").await.ok().json["version"]["secret_string"],
        text.as_str()
    );

    // Update metadata.
    let r = c
        .json(
            "PUT",
            &format!("secrets/{n}"),
            &json!({ "description": "changed" }),
        )
        .await
        .ok();
    assert_eq!(r.json["secret"]["description"], "changed");

    // Scheduled deletion blocks values; restore brings them back.
    let r = c
        .json(
            "POST",
            &format!("secrets/{n}/scheduled-deleted-tasks/create"),
            &json!({ "recovery_window_in_days": 7 }),
        )
        .await
        .ok();
    assert_eq!(r.json["secret"]["state"], "PENDING_DELETE");
    let when = r.json["secret"]["scheduled_delete_time"].as_i64().unwrap();
    assert!((when - (now_secs() + 7 * 86400)).abs() < 120, "{when}");
    c.version(&n, "latest").await.assert_kms_error("CSMS.0103");
    c.call(
        "POST",
        &format!("secrets/{n}/scheduled-deleted-tasks/cancel"),
        Vec::new(),
    )
    .await
    .ok();
    c.version(&n, "latest").await.ok();

    // Backup, delete, restore from the blob: all versions come back.
    let blob = c
        .call("POST", &format!("secrets/{n}/backup"), Vec::new())
        .await
        .ok()
        .str("secret_blob");
    assert!(!blob.contains(std::str::from_utf8(MARKER).unwrap()));
    c.delete(&format!("secrets/{n}")).await.ok();
    c.get(&format!("secrets/{n}"))
        .await
        .assert_kms_error("CSMS.0106");
    c.json("POST", "secrets/restore", &json!({ "secret_blob": blob }))
        .await
        .ok();
    assert_eq!(
        c.version(&n, "v1").await.ok().json["version"]["secret_string"],
        text.as_str()
    );
    let got = B64
        .decode(
            c.version(&n, "v2").await.ok().json["version"]["secret_binary"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(got, raw);

    c.delete(&format!("secrets/{n}")).await.ok();
    assert!(!c.all_names().await.contains(&n));
    m.assert_no_plaintext_in_logs();
}

async fn stages(m: &Mesh) {
    let c = a(m);
    let n = name("stg");
    c.create_text(&n, &marker_text(10)).await.ok();
    let st = |pairs: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(v, s)| ((*v).to_owned(), s.iter().map(|x| (*x).to_owned()).collect()))
            .collect()
    };
    assert_eq!(c.stages(&n).await, st(&[("v1", &["SYSCURRENT"])]));
    c.add_text(&n, &marker_text(11)).await.ok();
    assert_eq!(
        c.stages(&n).await,
        st(&[("v1", &["SYSPREVIOUS"]), ("v2", &["SYSCURRENT"])])
    );
    c.add_text(&n, &marker_text(12)).await.ok();
    assert_eq!(
        c.stages(&n).await,
        st(&[
            ("v1", &[]),
            ("v2", &["SYSPREVIOUS"]),
            ("v3", &["SYSCURRENT"])
        ])
    );
    // A version with only a custom stage leaves SYSCURRENT where it is,
    // but is `latest`.
    let r = c
        .json(
            "POST",
            &format!("secrets/{n}/versions"),
            &json!({ "secret_string": "staged", "version_stages": ["NEXT"] }),
        )
        .await
        .ok();
    assert_eq!(r.json["version_metadata"]["id"], "v4");
    assert_eq!(
        c.get(&format!("secrets/{n}/stages/SYSCURRENT"))
            .await
            .ok()
            .json["stage"]["version_id"],
        "v3"
    );
    assert_eq!(
        c.version(&n, "latest").await.ok().json["version"]["secret_string"],
        "staged"
    );
    // Move a custom stage, then delete it; the system stages cannot be.
    let r = c
        .json(
            "PUT",
            &format!("secrets/{n}/stages/NEXT"),
            &json!({ "version_id": "v1" }),
        )
        .await
        .ok();
    assert_eq!(r.json["stage"]["version_id"], "v1");
    assert_eq!(r.json["stage"]["secret_name"], n.as_str());
    assert_eq!(c.stages(&n).await["v1"], vec!["NEXT".to_owned()]);
    c.delete(&format!("secrets/{n}/stages/NEXT")).await.ok();
    c.get(&format!("secrets/{n}/stages/NEXT"))
        .await
        .assert_kms_error("CSMS.0005");
    for sys in ["SYSCURRENT", "SYSPREVIOUS"] {
        c.delete(&format!("secrets/{n}/stages/{sys}"))
            .await
            .assert_kms_error("CSMS.0105");
    }
    // Moving SYSCURRENT back is a rollback of the current value.
    c.json(
        "PUT",
        &format!("secrets/{n}/stages/SYSCURRENT"),
        &json!({ "version_id": "v1" }),
    )
    .await
    .ok();
    assert!(c.stages(&n).await["v1"].contains(&"SYSCURRENT".to_owned()));
    m.assert_no_plaintext_in_logs();
}

async fn isolation(m: &Mesh) {
    let (ca, cb) = (a(m), b(m));
    let n = name("iso");
    let text = marker_text(64);
    let id = ca.create_text(&n, &text).await.ok().json["secret"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!cb.all_names().await.contains(&n));
    cb.get(&format!("secrets/{n}"))
        .await
        .assert_kms_error("CSMS.0106");
    cb.version(&n, "latest").await.assert_kms_error("CSMS.0106");
    cb.get(&format!("csms/{id}/tags"))
        .await
        .assert_kms_error("CSMS.0005");
    // B's credentials on A's path: no access.
    let cross = CsmsClient(KmsClient {
        project: m.huawei().full_a.project_id.clone(),
        ..cb.0.clone()
    });
    cross
        .version(&n, "latest")
        .await
        .assert_kms_error("CSMS.0302");
    // B's secret of the same name is a different secret.
    cb.create_text(&n, "bee").await.ok();
    assert_eq!(
        ca.version(&n, "latest").await.ok().json["version"]["secret_string"],
        text.as_str()
    );
    assert_eq!(
        cb.version(&n, "latest").await.ok().json["version"]["secret_string"],
        "bee"
    );
    m.assert_no_plaintext_in_logs();
}

/// What the writers were told succeeded: secret → (version → value).
type Acked = Arc<Mutex<BTreeMap<String, BTreeMap<String, String>>>>;

/// Create secrets and add versions until a request fails (the edge died).
async fn writer(c: CsmsClient, prefix: String, acked: Acked) {
    for i in 0.. {
        let n = format!("{prefix}-{i}");
        let v1 = format!("{}-{n}-v1", std::str::from_utf8(MARKER).unwrap());
        let body = json!({ "name": n, "secret_string": v1 });
        match c.try_json("POST", "secrets", &body).await {
            Ok(r) if r.status == 200 => {
                acked
                    .lock()
                    .unwrap()
                    .entry(n.clone())
                    .or_default()
                    .insert("v1".into(), v1);
            }
            _ => return,
        }
        for k in 2..=3 {
            let val = format!("{}-{n}-v{k}", std::str::from_utf8(MARKER).unwrap());
            let body = json!({ "secret_string": val });
            let path = format!("secrets/{n}/versions");
            match c.try_json("POST", &path, &body).await {
                Ok(r) if r.status == 200 => {
                    let id = r.json["version_metadata"]["id"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    acked.lock().unwrap().get_mut(&n).unwrap().insert(id, val);
                }
                _ => return,
            }
        }
    }
}

async fn crash_consistency(store: HuaweiStore) {
    let m = tokio::task::block_in_place(|| Mesh::start(store.options())).unwrap();
    let c = a(&m);
    let prefix = format!("crash-{}", random_hex(3));
    let acked: Acked = Arc::default();
    // Three crashes, each in the middle of a stream of writes.
    for round in 0..3 {
        let start = acked.lock().unwrap().len();
        let writers: Vec<_> = (0..4)
            .map(|t| {
                tokio::spawn(writer(
                    c.clone(),
                    format!("{prefix}-r{round}w{t}"),
                    Arc::clone(&acked),
                ))
            })
            .collect();
        // Let a fair number of writes land, then kill -9 the edge.
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < start + 12 {
            assert!(Instant::now() < deadline, "writers made no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::task::block_in_place(|| m.kill_edge());
        for w in writers {
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .expect("writer stuck after the edge died")
                .unwrap();
        }
        tokio::task::block_in_place(|| m.restart_edge()).unwrap();
    }

    // Every acknowledged secret and version is readable, exactly.
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    for (n, versions) in &acked {
        for (v, value) in versions {
            let r = c.version(n, v).await;
            assert_eq!(r.status, 200, "acknowledged {n}/{v} lost: {}", r.text());
            assert_eq!(r.json["version"]["secret_string"], value.as_str());
        }
    }
    // No secret is half-written: each one listed has a readable SYSCURRENT
    // and every listed version opens.
    let names: Vec<String> = c
        .all_names()
        .await
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    for n in acked.keys() {
        assert!(names.contains(n), "acknowledged secret {n} is not listed");
    }
    for n in &names {
        let cur = c.get(&format!("secrets/{n}/stages/SYSCURRENT")).await;
        assert_eq!(cur.status, 200, "{n} has no SYSCURRENT: {}", cur.text());
        let vid = cur.json["stage"]["version_id"].as_str().unwrap().to_owned();
        c.version(n, &vid).await.ok();
        for v in c.stages(n).await.keys() {
            let r = c.version(n, v).await;
            assert_eq!(r.status, 200, "{n}/{v} unreadable: {}", r.text());
            assert!(
                r.json["version"]["secret_string"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("{n}-{v}")),
                "{n}/{v} holds another value"
            );
        }
    }
    // And the restarted edge takes writes again.
    let n = format!("{prefix}-after");
    c.create_text(&n, &marker_text(20)).await.ok();
    c.add_text(&n, &marker_text(21)).await.ok();
    m.assert_no_plaintext_in_logs();
    // Drop stops the children (blocking) and scans the logs once more.
    tokio::task::block_in_place(move || drop(m));
}

macro_rules! suite {
    ($name:ident, $store:expr) => {
        mod $name {
            use super::*;

            fn mesh() -> &'static Mesh {
                $store.shared_mesh()
            }

            #[tokio::test]
            async fn secret_lifecycle() {
                lifecycle(mesh()).await;
            }

            #[tokio::test]
            async fn stage_semantics() {
                stages(mesh()).await;
            }

            #[tokio::test]
            async fn project_isolation() {
                isolation(mesh()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn edge_crash_leaves_nothing_half_written() {
                crash_consistency($store).await;
            }
        }
    };
}

suite!(sqlite, HuaweiStore::Sqlite);
suite!(postgres, HuaweiStore::Postgres);
