//! Trust in the Huawei dialect, end to end through the real binaries:
//! account secret keys are stored only sealed by the HSM (read behind the
//! services' back, on both store backends) while SDK-HMAC-SHA256 keeps
//! working; clear rows left by an older version are sealed when the edge
//! starts; X-Auth-Tokens are honoured only while their subject's account
//! exists with at least their role, are checked for issuer, not-before and
//! lifetime, and their signing key rotates without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keymesh_tests::huawei::{HuaweiAccount, HuaweiStore, TokenSpec};
use keymesh_tests::kms::{KmsAuth, KmsClient};
use keymesh_tests::{Mesh, http_request, poll_async, random_hex};
use serde_json::json;
use sqlx::Connection as _;

/// Within the edge's cache TTL (1 s) and key-file reload (100 ms), with room.
const CHANGE_SEEN: Duration = Duration::from_secs(15);

/// Every account row as stored: (access_key, secret_key column, sealed_secret).
async fn account_rows(m: &Mesh) -> Vec<(String, String, Option<Vec<u8>>)> {
    let h = m.huawei();
    let sql = "SELECT access_key, secret_key, sealed_secret FROM accounts ORDER BY access_key";
    match h.store {
        HuaweiStore::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&h.store_url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
        }
        HuaweiStore::Postgres => {
            let mut c = sqlx::PgConnection::connect(&h.store_url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
        }
    }
}

/// `needle` occurs in any file of the SQLite database (main file and WAL).
fn in_sqlite_files(m: &Mesh, needle: &[u8]) -> bool {
    let db = m.root().join("keymesh.db");
    ["", "-wal", "-journal"].iter().any(|suffix| {
        let path = format!("{}{suffix}", db.display());
        std::fs::read(path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    })
}

async fn list_keys_ok(m: &Mesh, account: &HuaweiAccount) {
    KmsClient::aksk(m, account)
        .post("list-keys", &json!({}))
        .await
        .ok();
}

async fn no_clear_secret_in_the_store(m: &Mesh) {
    let h = m.huawei();
    // One more account made after the services started, through the same CLI.
    let late = m
        .huawei_create_account(&h.full_a.project_id, &random_hex(8), "full")
        .unwrap();
    let accounts = [&h.full_a, &h.readonly_a, &h.full_b, &late];
    let rows = account_rows(m).await;
    assert!(rows.len() >= accounts.len());
    for (ak, clear, sealed) in &rows {
        assert_eq!(clear, "", "{ak}: clear secret_key column is not empty");
        let sealed = sealed
            .as_ref()
            .unwrap_or_else(|| panic!("{ak}: not sealed"));
        for a in accounts {
            assert!(
                !sealed
                    .windows(a.secret_key.len())
                    .any(|w| w == a.secret_key.as_bytes()),
                "{ak}: sealed blob holds an SK"
            );
        }
    }
    if h.store == HuaweiStore::Sqlite {
        for a in accounts {
            assert!(
                !in_sqlite_files(m, a.secret_key.as_bytes()),
                "an SK is in the database file"
            );
        }
    }
    // HMAC verification still works: the edge unseals through a worker.
    for a in accounts {
        list_keys_ok(m, a).await;
    }
    // A request signed with the wrong SK is still refused.
    let mut wrong = h.full_a.clone();
    wrong.secret_key = "x".repeat(40);
    let r = KmsClient::aksk(m, &wrong)
        .post("list-keys", &json!({}))
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
}

async fn code_of(client: &KmsClient, op: &str, body: serde_json::Value) -> (u16, String) {
    client.post(op, &body).await.code()
}

/// The token-revocation rules through the real edge.
async fn tokens_follow_accounts(m: &Mesh) {
    let h = m.huawei();
    let pa = h.full_a.project_id.clone();
    let token = |s: TokenSpec| m.huawei_token(&s).unwrap();

    // A user of its own, so deleting and downgrading disturbs no other test.
    let user = m
        .huawei_create_account(&pa, &random_hex(8), "full")
        .unwrap();
    let full = KmsClient::token(m, &pa, &token(TokenSpec::for_account(&user)));
    let key_id = full.create_key(&format!("tok-{}", random_hex(4))).await;

    // Downgraded to readonly: the `full` token may read but no longer write.
    m.huawei_ctl(&[
        "account",
        "set-role",
        "--access-key",
        &user.access_key,
        "--role",
        "readonly",
    ])
    .unwrap();
    poll_async("full token downgraded", CHANGE_SEEN, || async {
        let c = code_of(
            &full,
            "update-key-description",
            json!({"key_id": key_id, "key_description": "x"}),
        )
        .await;
        (c == (403, "KMS.0307".to_owned())).then_some(())
    })
    .await
    .unwrap();
    full.post("describe-key", &json!({ "key_id": key_id }))
        .await
        .ok();
    full.post("create-key", &json!({ "key_alias": "after-downgrade" }))
        .await
        .assert_kms_error("KMS.0307");

    // Deleted: the token is refused altogether.
    m.huawei_ctl(&["account", "delete", "--access-key", &user.access_key])
        .unwrap();
    poll_async(
        "token of a deleted account refused",
        CHANGE_SEEN,
        || async {
            let c = code_of(&full, "describe-key", json!({ "key_id": key_id })).await;
            (c == (403, "KMS.0302".to_owned())).then_some(())
        },
    )
    .await
    .unwrap();
    full.post("list-keys", &json!({}))
        .await
        .assert_kms_error("KMS.0302");
    // CSMS has one code for every token refusal.
    let KmsAuth::Token(deleted_token) = &full.auth else {
        unreachable!()
    };
    let (status, body) = http_request(
        m.edge_addr,
        "GET",
        &format!("/v1/{pa}/secrets"),
        &[("X-Auth-Token", deleted_token.as_str())],
        b"",
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"CSMS.0301\""), "{body}");

    // A token for a user that never had an account creates nothing.
    let ghost = KmsClient::token(
        m,
        &pa,
        &token(TokenSpec {
            project: pa.clone(),
            user: random_hex(8),
            role: Some("full".into()),
            ..TokenSpec::default()
        }),
    );
    ghost
        .post("create-key", &json!({ "key_alias": "ghost" }))
        .await
        .assert_kms_error("KMS.0302");
    // The same user name in another project (where it has an account) does
    // not make the token good in this one.
    let b_user_on_a = KmsClient::token(
        m,
        &pa,
        &token(TokenSpec {
            project: pa.clone(),
            ..TokenSpec::for_account(&h.full_b)
        }),
    );
    b_user_on_a
        .post("list-keys", &json!({}))
        .await
        .assert_kms_error("KMS.0302");

    // `full` claimed for the read-only user: reads only.
    let claims_full = KmsClient::token(
        m,
        &pa,
        &token(TokenSpec {
            role: Some("full".into()),
            ..TokenSpec::for_account(&h.readonly_a)
        }),
    );
    claims_full.post("list-keys", &json!({})).await.ok();
    claims_full
        .post("create-key", &json!({ "key_alias": "ro-claims-full" }))
        .await
        .assert_kms_error("KMS.0307");

    // Project A's token on project B's path.
    KmsClient::token(
        m,
        &h.full_b.project_id,
        &token(TokenSpec::for_account(&h.full_a)),
    )
    .post("list-keys", &json!({}))
    .await
    .assert_kms_error("KMS.0321");

    // Lifetime above the 24 h maximum, not yet valid, another issuer.
    let spec = TokenSpec::for_account(&h.full_a);
    for bad in [
        TokenSpec {
            ttl_secs: Some(86_401),
            ..spec.clone()
        },
        TokenSpec {
            not_before_secs: Some(3600),
            ..spec.clone()
        },
        TokenSpec {
            issuer: Some("not-keymesh".into()),
            ..spec.clone()
        },
    ] {
        KmsClient::token(m, &pa, &token(bad.clone()))
            .post("list-keys", &json!({}))
            .await
            .assert_kms_error("KMS.0302");
    }
    // Exactly the maximum is fine, and the account's own token still works.
    KmsClient::token(
        m,
        &pa,
        &token(TokenSpec {
            ttl_secs: Some(86_400),
            ..spec
        }),
    )
    .post("list-keys", &json!({}))
    .await
    .ok();
}

macro_rules! suite {
    ($name:ident, $store:expr) => {
        mod $name {
            use super::*;

            fn mesh() -> &'static Mesh {
                $store.shared_mesh()
            }

            #[tokio::test]
            async fn store_holds_no_clear_secret_key() {
                no_clear_secret_in_the_store(mesh()).await;
            }

            #[tokio::test]
            async fn tokens_are_revoked_with_their_account() {
                tokens_follow_accounts(mesh()).await;
            }
        }
    };
}

suite!(sqlite, HuaweiStore::Sqlite);
suite!(postgres, HuaweiStore::Postgres);

/// A row written before sealing existed is sealed when the edge starts, and
/// its SK keeps verifying before and after.
#[tokio::test]
async fn clear_rows_are_sealed_on_edge_start() {
    let m = Mesh::start(HuaweiStore::Sqlite.options()).unwrap();
    let h = m.huawei();
    let (ak, sk) = keymesh_huawei_auth::sdk_hmac::generate_credentials().unwrap();
    let legacy = HuaweiAccount {
        access_key: ak.clone(),
        secret_key: sk.to_string(),
        project_id: h.full_a.project_id.clone(),
        user_id: random_hex(8),
        role: "full".into(),
    };
    {
        let mut c = sqlx::SqliteConnection::connect(&h.store_url).await.unwrap();
        sqlx::query(
            "INSERT INTO accounts (access_key, secret_key, project_id, user_id, role, created_ms) \
             VALUES ($1, $2, $3, $4, 'full', 1)",
        )
        .bind(&legacy.access_key)
        .bind(&legacy.secret_key)
        .bind(&legacy.project_id)
        .bind(&legacy.user_id)
        .execute(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
    }
    // Until it is migrated, the clear row still verifies.
    list_keys_ok(&m, &legacy).await;

    m.restart_edge().unwrap();
    let rows = poll_async("legacy row sealed", CHANGE_SEEN, || async {
        let rows = account_rows(&m).await;
        rows.iter()
            .all(|(_, clear, sealed)| clear.is_empty() && sealed.is_some())
            .then_some(rows)
    })
    .await
    .unwrap();
    let (_, _, sealed) = rows.iter().find(|(a, _, _)| *a == ak).unwrap();
    let sealed = sealed.as_ref().unwrap();
    assert!(!sealed.windows(sk.len()).any(|w| w == sk.as_bytes()));
    // After a restart the sealed row verifies through a worker.
    m.restart_edge().unwrap();
    list_keys_ok(&m, &legacy).await;
    list_keys_ok(&m, &h.full_a).await;
}

/// Two public keys in the edge's file: both verify; the old one removed:
/// its tokens are refused; no restart.
#[tokio::test]
async fn token_signing_key_rotates_without_restart() {
    let m = Mesh::start(HuaweiStore::Sqlite.options()).unwrap();
    let h = m.huawei();
    let pa = h.full_a.project_id.clone();

    let dir = m.root().join("auth-token");
    let (new_private, new_public) = (dir.join("new-private.pem"), dir.join("new-public.pem"));
    let out = m
        .ctl(&[
            "auth-token",
            "keygen",
            "--private-key",
            new_private.to_str().unwrap(),
            "--public-key",
            new_public.to_str().unwrap(),
        ])
        .unwrap();
    assert!(out.lines().any(|l| l.starts_with("kid: ")), "{out}");
    let old_public_pem = std::fs::read_to_string(&h.token_public_key).unwrap();
    let new_public_pem = std::fs::read_to_string(&new_public).unwrap();

    let spec = TokenSpec::for_account(&h.full_a);
    let old_token = m.huawei_token(&spec).unwrap();
    let new_token = m
        .huawei_token(&TokenSpec {
            private_key: Some(new_private.clone()),
            ..spec.clone()
        })
        .unwrap();
    let old = KmsClient::token(&m, &pa, &old_token);
    let new = KmsClient::token(&m, &pa, &new_token);
    new.post("list-keys", &json!({}))
        .await
        .assert_kms_error("KMS.0302");

    // Rotation step 1: both keys trusted.
    write_atomically(
        &h.token_public_key,
        &format!("{old_public_pem}{new_public_pem}"),
    );
    poll_async("new key trusted", CHANGE_SEEN, || async {
        (new.post("list-keys", &json!({})).await.status == 200).then_some(())
    })
    .await
    .unwrap();
    old.post("list-keys", &json!({})).await.ok();

    // Step 2: the old key removed.
    write_atomically(&h.token_public_key, &new_public_pem);
    poll_async("old key refused", CHANGE_SEEN, || async {
        (old.post("list-keys", &json!({})).await.code() == (403, "KMS.0302".to_owned()))
            .then_some(())
    })
    .await
    .unwrap();
    new.post("list-keys", &json!({})).await.ok();
    assert!(m.edge_alive(), "the edge restarted");
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
