//! The Huawei CSMS error table, end to end: provoke each CSMS code the edge
//! claims (plus the shared signature and dependency-timeout answers) on one
//! SQLite mesh and check that status, `error_code` and `error_msg` equal the
//! published row (`tests/fixtures/huawei-kms-csms.csv`), that the body has
//! no other field and that `X-Request-Id` is set. The set of observed codes
//! must equal [`PRODUCED`].
//!
//! Not provoked: CSMS.0001 (internal/store failure), CSMS.0102 (version ids
//! are assigned by the edge, never by the caller), CSMS.0104 (a stage that
//! exists simply moves), CSMS.0109 (keymesh has no DISABLED secrets).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use keymesh_tests::csms::CsmsClient;
use keymesh_tests::huawei::HuaweiStore;
use keymesh_tests::kms::{KmsAuth, KmsClient, ObservedCodes};
use keymesh_tests::{Mesh, WAIT, answered_within, random_hex};
use serde_json::{Value, json};

/// Every code this test must observe.
const PRODUCED: &[&str] = &[
    "APIGW.0301",
    "CSMS.0002",
    "CSMS.0003",
    "CSMS.0004",
    "CSMS.0005",
    "CSMS.0101",
    "CSMS.0103",
    "CSMS.0105",
    "CSMS.0106",
    "CSMS.0107",
    "CSMS.0108",
    "CSMS.0202",
    "CSMS.0203",
    "CSMS.0301",
    "CSMS.0302",
    "CSMS.0401",
    "KMS.0104",
];

fn mesh() -> &'static Mesh {
    HuaweiStore::Sqlite.shared_mesh()
}

fn name() -> String {
    format!("tbl-{}", random_hex(6))
}

async fn kms_key(c: &KmsClient) -> String {
    c.create_key(&name()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_claimed_code_matches_the_table() {
    let m = mesh();
    let h = m.huawei();
    let c = CsmsClient(KmsClient::aksk(m, &h.full_a));
    let k = KmsClient::aksk(m, &h.full_a);
    let mut s = ObservedCodes::default();
    let n = name();
    c.create_text(&n, "value").await.ok();

    // Routing, framing, JSON.
    s.expect("CSMS.0003", c.get("nothing-here").await, "unknown path");
    s.expect(
        "CSMS.0003",
        c.call("PUT", "secrets", "{}").await,
        "wrong method",
    );
    s.expect(
        "CSMS.0003",
        c.call("POST", &format!("secrets/{n}/rotate"), Vec::new())
            .await,
        "unserved",
    );
    s.expect(
        "CSMS.0004",
        c.call("POST", "secrets", "{").await,
        "bad JSON",
    );
    s.expect(
        "CSMS.0004",
        c.json(
            "POST",
            "secrets",
            &json!({ "name": name(), "secret_string": "x", "extra": 1 }),
        )
        .await,
        "unknown field",
    );
    s.expect(
        "CSMS.0004",
        c.json(
            "POST",
            "secrets",
            &json!({ "name": 7, "secret_string": "x" }),
        )
        .await,
        "wrong type",
    );
    let big = format!(
        "{{\"name\": \"{}\", \"secret_string\": \"{}\"}}",
        name(),
        "a".repeat(1 << 20)
    );
    s.expect(
        "CSMS.0004",
        c.call("POST", "secrets", big).await,
        "huge body",
    );

    // Values.
    for (what, body) in [
        ("bad name", json!({ "name": "a b", "secret_string": "x" })),
        (
            "both values",
            json!({ "name": name(), "secret_string": "x", "secret_binary": "eA==" }),
        ),
        ("no value", json!({ "name": name() })),
        (
            "too long",
            json!({ "name": name(), "secret_string": "a".repeat(32769) }),
        ),
        (
            "bad base64",
            json!({ "name": name(), "secret_binary": "!!" }),
        ),
        (
            "auto rotation",
            json!({ "name": name(), "secret_string": "x", "auto_rotation": true }),
        ),
        (
            "secret type",
            json!({ "name": name(), "secret_string": "x", "secret_type": "RDS-FG" }),
        ),
        (
            "events",
            json!({ "name": name(), "secret_string": "x", "event_subscriptions": ["e"] }),
        ),
    ] {
        s.expect("CSMS.0002", c.json("POST", "secrets", &body).await, what);
    }
    s.expect("CSMS.0002", c.get("secrets/a%2Fb").await, "encoded slash");
    let stages: Vec<String> = (0..13).map(|i| format!("S{i}")).collect();
    s.expect(
        "CSMS.0002",
        c.json(
            "POST",
            &format!("secrets/{n}/versions"),
            &json!({ "secret_string": "x", "version_stages": stages }),
        )
        .await,
        "13 stages",
    );
    s.expect(
        "CSMS.0002",
        c.json(
            "POST",
            &format!("secrets/{n}/scheduled-deleted-tasks/create"),
            &json!({ "recovery_window_in_days": 31 }),
        )
        .await,
        "window",
    );

    // Not found.
    s.expect(
        "CSMS.0106",
        c.get(&format!("secrets/{}", name())).await,
        "no secret",
    );
    s.expect("CSMS.0005", c.version(&n, "v9").await, "no version");
    s.expect(
        "CSMS.0005",
        c.get(&format!("secrets/{n}/stages/NOPE")).await,
        "no stage",
    );
    s.expect(
        "CSMS.0005",
        c.get("csms/0d0466b0-e727-4d9c-b35d-f84bb474a37f/tags")
            .await,
        "no secret id",
    );

    // Conflicts and states.
    s.expect("CSMS.0101", c.create_text(&n, "again").await, "duplicate");
    s.expect(
        "CSMS.0105",
        c.delete(&format!("secrets/{n}/stages/SYSCURRENT")).await,
        "system stage",
    );
    s.expect(
        "CSMS.0108",
        c.call(
            "POST",
            &format!("secrets/{n}/scheduled-deleted-tasks/cancel"),
            Vec::new(),
        )
        .await,
        "not pending",
    );
    let sched = format!("secrets/{n}/scheduled-deleted-tasks/create");
    c.json("POST", &sched, &json!({ "recovery_window_in_days": 7 }))
        .await
        .ok();
    s.expect(
        "CSMS.0107",
        c.json("POST", &sched, &json!({ "recovery_window_in_days": 7 }))
            .await,
        "scheduled twice",
    );
    s.expect("CSMS.0103", c.version(&n, "latest").await, "pending: read");
    s.expect(
        "CSMS.0103",
        c.add_text(&n, "x").await,
        "pending: new version",
    );
    s.expect(
        "CSMS.0103",
        c.json(
            "PUT",
            &format!("secrets/{n}"),
            &json!({ "description": "d" }),
        )
        .await,
        "pending: update",
    );

    // A mistyped field on a secret that does not exist (or is pending
    // deletion): the secret is reported first, as it always was.
    s.expect(
        "CSMS.0106",
        c.json(
            "PUT",
            &format!("secrets/{}", name()),
            &json!({ "kms_key_id": 7 }),
        )
        .await,
        "missing secret before a mistyped field",
    );
    s.expect(
        "CSMS.0103",
        c.json("PUT", &format!("secrets/{n}"), &json!({ "description": 7 }))
            .await,
        "pending secret before a mistyped field",
    );

    // Stage quota: 12 per secret, SYSCURRENT included.
    let q = name();
    c.create_text(&q, "x").await.ok();
    for i in 0..11 {
        c.json(
            "PUT",
            &format!("secrets/{q}/stages/S{i}"),
            &json!({ "version_id": "v1" }),
        )
        .await
        .ok();
    }
    s.expect(
        "CSMS.0203",
        c.json(
            "PUT",
            &format!("secrets/{q}/stages/S99"),
            &json!({ "version_id": "v1" }),
        )
        .await,
        "stage quota",
    );

    // The CMK: disabled, pending deletion, missing. Nothing is created.
    let key = kms_key(&k).await;
    k.post("disable-key", &json!({ "key_id": key })).await.ok();
    let dead = name();
    s.expect(
        "CSMS.0401",
        c.json(
            "POST",
            "secrets",
            &json!({ "name": dead, "secret_string": "x", "kms_key_id": key }),
        )
        .await,
        "disabled CMK",
    );
    let key2 = kms_key(&k).await;
    k.post(
        "schedule-key-deletion",
        &json!({ "key_id": key2, "pending_days": "7" }),
    )
    .await
    .ok();
    s.expect(
        "CSMS.0401",
        c.json(
            "POST",
            "secrets",
            &json!({ "name": dead, "secret_string": "x", "kms_key_id": key2 }),
        )
        .await,
        "CMK pending deletion",
    );
    s.expect(
        "CSMS.0106",
        c.get(&format!("secrets/{dead}")).await,
        "failed create left a secret",
    );

    // Authentication and authorisation.
    let ro = CsmsClient(KmsClient::aksk(m, &h.readonly_a));
    s.expect(
        "CSMS.0302",
        ro.create_text(&name(), "x").await,
        "read-only write",
    );
    let token = CsmsClient(KmsClient {
        auth: KmsAuth::Token("garbage".into()),
        ..c.0.clone()
    });
    s.expect("CSMS.0301", token.get("secrets").await, "bad token");
    let spoil = |hm: &mut HeaderMap| {
        let v = hm
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let last = v.chars().last().unwrap();
        let flipped = if last == '0' { '1' } else { '0' };
        let v = format!("{}{flipped}", &v[..v.len() - 1]);
        hm.insert("authorization", HeaderValue::from_str(&v).unwrap());
    };
    let r =
        c.0.send("GET", &c.path("secrets"), Vec::new(), |_| {}, spoil)
            .await
            .unwrap();
    s.expect("APIGW.0301", r, "bad signature");

    // Secret quota: 200 per project, filled in project B by batch import.
    let cb = CsmsClient(KmsClient::aksk(m, &h.full_b));
    let mut made = 0usize;
    while made < 200 {
        let batch: Vec<Value> = (0..50)
            .map(|_| json!({ "name": name(), "secret_string": "q" }))
            .collect();
        let r = cb
            .json("POST", "secrets/batch-import", &json!({ "secrets": batch }))
            .await
            .ok();
        made += r.json["success"].as_u64().unwrap() as usize;
        if r.json["failed"].as_u64().unwrap() > 0 {
            break;
        }
    }
    assert_eq!(made, 200, "the quota is 200 secrets per project");
    let over = name();
    s.expect(
        "CSMS.0202",
        cb.create_text(&over, "x").await,
        "secret quota",
    );
    cb.get(&format!("secrets/{over}"))
        .await
        .assert_kms_error("CSMS.0106");

    // A dependency that does not answer: the worker is stopped, so an
    // answer at all is the create running into its deadline (5 s); it
    // leaves nothing behind.
    let slow = name();
    m.signal_worker(0, "STOP").unwrap();
    let r = answered_within(
        "create with the worker stopped",
        WAIT,
        c.create_text(&slow, "x"),
    )
    .await;
    m.signal_worker(0, "CONT").unwrap();
    let r = r.unwrap();
    s.expect("KMS.0104", r, "dependency timeout");
    s.expect(
        "CSMS.0106",
        c.get(&format!("secrets/{slow}")).await,
        "timed-out create left a secret",
    );

    s.assert_exactly(PRODUCED);
    // Still serving after all of it (the worker may need a moment to be
    // considered healthy again: poll).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.create_text(&name(), "still-up").await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not serving: {}", r.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    m.assert_no_plaintext_in_logs();
}
