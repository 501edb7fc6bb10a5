//! CSMS domain tests on a real SQLite store (a temporary file), the
//! [`FakeVault`] and a [`ManualClock`]: secrets, versions and stages,
//! quotas, scheduled deletion and the purge, without HTTP or an HSM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keymesh_store::{Conflict, QuotaKind, SecretQuotas, SecretState, Tag};
use zeroize::Zeroizing;

use super::secrets::{NewSecret, SecretUpdate};
use super::tags::TagChange;
use super::versions::NewVersion;
use super::{SYSCURRENT, SYSPREVIOUS, SecretValue};
use crate::KmsConfig;
use crate::error::Error;
use crate::world::{self, DAY_MS, NOW, P, World, deadline, world};

async fn world_with(secret_quotas: SecretQuotas) -> World {
    world::world_with(KmsConfig {
        secret_quotas,
        ..world::config()
    })
    .await
}

fn text(s: &str) -> SecretValue {
    SecretValue::Text(Zeroizing::new(s.to_owned()))
}

fn new_secret(name: &str, value: &str) -> NewSecret {
    NewSecret {
        name: name.to_owned(),
        kms_key_id: None,
        description: "d".into(),
        enterprise_project_id: "0".into(),
        value: text(value),
    }
}

fn version(value: &str) -> NewVersion {
    NewVersion {
        value: text(value),
        stages: None,
        expire_secs: None,
    }
}

async fn read(w: &World, name: &str, vid: Option<&str>) -> Result<String, Error> {
    let (_, _, v) = w.kms.secrets.read_version(P, name, vid, deadline()).await?;
    match v {
        SecretValue::Text(t) => Ok(t.as_str().to_owned()),
        SecretValue::Binary(_) => panic!("binary"),
    }
}

#[tokio::test]
async fn secret_create_show_update_delete() {
    let w = world().await;
    let s = &w.kms.secrets;
    let created = s
        .create(P, new_secret("db", "hunter2"), deadline())
        .await
        .unwrap();
    assert_eq!(created.state, SecretState::Enabled);
    assert_eq!(created.created_ms, NOW);
    // The values went under the project's csms/default key, created on use.
    let default = w
        .kms
        .keys
        .default_key(P, "csms/default", "", deadline())
        .await
        .unwrap();
    assert_eq!(created.kms_key_id, default);
    assert_eq!(read(&w, "db", None).await.unwrap(), "hunter2");
    assert_eq!(read(&w, "db", Some("v1")).await.unwrap(), "hunter2");

    let shown = s.get(P, "db").await.unwrap();
    assert_eq!(shown.secret_id, created.secret_id);
    assert!(matches!(
        s.get("other", "db").await,
        Err(Error::SecretNotFound)
    ));
    assert!(matches!(
        s.create(P, new_secret("db", "x"), deadline()).await,
        Err(Error::Conflict(Conflict::SecretName))
    ));

    w.clock.advance(1000);
    let updated = s
        .update(
            P,
            "db",
            SecretUpdate {
                kms_key_id: None,
                description: Some("new".into()),
            },
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(
        (updated.description.as_str(), updated.updated_ms),
        ("new", NOW + 1000)
    );
    let too_long = SecretUpdate {
        description: Some("x".repeat(2049)),
        ..SecretUpdate::default()
    };
    assert!(matches!(
        s.update(P, "db", too_long, deadline()).await,
        Err(Error::InvalidSecretDescription)
    ));
    let bad_key = SecretUpdate {
        kms_key_id: Some("not-a-key".into()),
        ..SecretUpdate::default()
    };
    assert!(matches!(
        s.update(P, "db", bad_key, deadline()).await,
        Err(Error::InvalidKeyId)
    ));
    let page = s.list(P, None, 10, None).await.unwrap();
    assert_eq!(page.items.len(), 1);

    s.delete(P, "db").await.unwrap();
    assert!(matches!(s.get(P, "db").await, Err(Error::SecretNotFound)));
    assert!(matches!(
        s.delete(P, "db").await,
        Err(Error::SecretNotFound)
    ));
}

#[tokio::test]
async fn scheduled_deletion_restore_and_purge() {
    let w = world().await;
    let s = &w.kms.secrets;
    s.create(P, new_secret("doomed", "v"), deadline())
        .await
        .unwrap();
    assert!(matches!(
        s.schedule_deletion(P, "doomed", 6).await,
        Err(Error::InvalidRecoveryWindow)
    ));
    assert!(matches!(
        s.restore(P, "doomed").await,
        Err(Error::SecretNotPendingDeletion)
    ));
    let pending = s.schedule_deletion(P, "doomed", 7).await.unwrap();
    assert_eq!(pending.state, SecretState::PendingDelete);
    assert_eq!(pending.scheduled_delete_ms, Some(NOW + 7 * DAY_MS));
    assert!(matches!(
        s.schedule_deletion(P, "doomed", 7).await,
        Err(Error::SecretAlreadyPendingDeletion)
    ));
    // Pending deletion: no values, no new versions, no tag changes.
    assert!(matches!(
        read(&w, "doomed", None).await,
        Err(Error::SecretPendingDeletion)
    ));
    assert!(matches!(
        s.add_version(P, "doomed", version("x"), deadline()).await,
        Err(Error::SecretPendingDeletion)
    ));
    let restored = s.restore(P, "doomed").await.unwrap();
    assert_eq!(
        (restored.state, restored.scheduled_delete_ms),
        (SecretState::Enabled, None)
    );

    s.schedule_deletion(P, "doomed", 7).await.unwrap();
    // Nothing is destroyed a millisecond early.
    w.clock.set(NOW + 7 * DAY_MS - 1);
    let purged = w.kms.purge_due(w.clock_now()).await.unwrap();
    assert!(purged.secrets.is_empty());
    assert!(s.get(P, "doomed").await.is_ok());
    w.clock.advance(1);
    let purged = w.kms.purge_due(w.clock_now()).await.unwrap();
    assert_eq!(purged.secrets.len(), 1);
    assert!(matches!(
        s.get(P, "doomed").await,
        Err(Error::SecretNotFound)
    ));
}

impl World {
    fn clock_now(&self) -> i64 {
        crate::clock::Clock::now_ms(&*self.clock)
    }
}

#[tokio::test]
async fn purge_destroys_keys_at_their_deadline() {
    let w = world().await;
    let s = &w.kms.secrets;
    s.create(P, new_secret("a", "v"), deadline()).await.unwrap();
    let key = s.get(P, "a").await.unwrap().kms_key_id;
    // A default key cannot be deleted: use a customer key.
    let k = w.kms.keys.new_key(
        P,
        crate::keys::NewKey {
            alias: "k".into(),
            description: String::new(),
            origin: crate::keys::Origin::Kms,
            enterprise_project_id: "0".into(),
        },
    );
    let k = w.kms.keys.insert(k, deadline()).await.unwrap();
    w.kms.keys.schedule_deletion(P, &k.key_id, 7).await.unwrap();
    w.clock.advance(7 * DAY_MS - 1);
    assert!(
        w.kms
            .purge_due(w.clock_now())
            .await
            .unwrap()
            .keys
            .is_empty()
    );
    w.clock.advance(1);
    let purged = w.kms.purge_due(w.clock_now()).await.unwrap();
    assert_eq!(purged.keys, vec![k.key_id.clone()]);
    assert!(matches!(
        w.kms.keys.get(P, &k.key_id).await,
        Err(Error::KeyNotFound)
    ));
    // The secret's own key is untouched.
    assert!(w.kms.keys.usable(P, &key).await.is_ok());
}

#[tokio::test]
async fn versions_move_syscurrent_to_sysprevious() {
    let w = world().await;
    let s = &w.kms.secrets;
    s.create(P, new_secret("db", "one"), deadline())
        .await
        .unwrap();
    w.clock.advance(1000);
    let v2 = s
        .add_version(P, "db", version("two"), deadline())
        .await
        .unwrap();
    assert_eq!(v2.version_id, "v2");
    assert_eq!(v2.stages, vec![SYSCURRENT.to_owned()]);
    assert_eq!(read(&w, "db", None).await.unwrap(), "two");
    let cur = s.get_stage(P, "db", SYSCURRENT).await.unwrap();
    let prev = s.get_stage(P, "db", SYSPREVIOUS).await.unwrap();
    assert_eq!(
        (cur.version_id.as_str(), prev.version_id.as_str()),
        ("v2", "v1")
    );

    // Moving SYSCURRENT back by hand hands SYSPREVIOUS to v2.
    s.put_stage(P, "db", SYSCURRENT, "v1").await.unwrap();
    let prev = s.get_stage(P, "db", SYSPREVIOUS).await.unwrap();
    assert_eq!(prev.version_id, "v2");
    assert!(matches!(
        s.put_stage(P, "db", "custom", "v9").await,
        Err(Error::ResourceNotFound)
    ));
    s.put_stage(P, "db", "custom", "v2").await.unwrap();
    s.delete_stage(P, "db", "custom").await.unwrap();
    assert!(matches!(
        s.get_stage(P, "db", "custom").await,
        Err(Error::ResourceNotFound)
    ));
    for protected in [SYSCURRENT, SYSPREVIOUS] {
        assert!(matches!(
            s.delete_stage(P, "db", protected).await,
            Err(Error::ProtectedStage)
        ));
    }

    let listed = s.list_versions(P, "db", None, 10).await.unwrap();
    assert_eq!(listed.items.len(), 2);
    assert!(matches!(
        read(&w, "db", Some("v7")).await,
        Err(Error::ResourceNotFound)
    ));
    // Expiry: from the current second to the end of year 9999.
    let now_secs = NOW / 1000 + 1;
    let v = s
        .update_version_expiry(P, "db", "v1", now_secs)
        .await
        .unwrap();
    assert_eq!(v.expire_ms, Some(now_secs * 1000));
    assert!(matches!(
        s.update_version_expiry(P, "db", "v1", now_secs - 2).await,
        Err(Error::InvalidExpireTime)
    ));
    assert!(matches!(
        s.update_version_expiry(P, "db", "v9", now_secs).await,
        Err(Error::ResourceNotFound)
    ));
}

#[test]
fn expire_time_range() {
    use super::versions::{MAX_EXPIRE_SECS, expire_ms};
    let now_ms = 1_700_000_000_500;
    assert_eq!(
        expire_ms(now_ms, 1_700_000_000).ok(),
        Some(1_700_000_000_000)
    );
    assert_eq!(
        expire_ms(now_ms, MAX_EXPIRE_SECS).ok(),
        Some(MAX_EXPIRE_SECS * 1000)
    );
    for bad in [
        -1,
        0,
        1_699_999_999,
        MAX_EXPIRE_SECS + 1,
        i64::MAX / 1000 + 1,
        i64::MAX,
        i64::MIN,
    ] {
        assert!(expire_ms(now_ms, bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn quotas_refuse_secrets_stages_and_tags() {
    let w = world_with(SecretQuotas {
        secrets_per_project: 1,
        versions_per_secret: 20,
        stages_per_secret: 3,
        tags_per_secret: 1,
    })
    .await;
    let s = &w.kms.secrets;
    let one = s
        .create(P, new_secret("one", "v"), deadline())
        .await
        .unwrap();
    assert!(matches!(
        s.create(P, new_secret("two", "v"), deadline()).await,
        Err(Error::Quota(QuotaKind::Secrets))
    ));
    s.add_version(P, "one", version("v2"), deadline())
        .await
        .unwrap();
    // SYSCURRENT, SYSPREVIOUS and one more fill the stage quota.
    s.put_stage(P, "one", "a", "v1").await.unwrap();
    assert!(matches!(
        s.put_stage(P, "one", "b", "v1").await,
        Err(Error::Quota(QuotaKind::Stages))
    ));
    let tag = |k: &str| Tag {
        key: k.to_owned(),
        value: "x".into(),
    };
    s.change_tags(P, &one.secret_id, TagChange::Put(vec![tag("k1")]))
        .await
        .unwrap();
    assert!(matches!(
        s.change_tags(P, &one.secret_id, TagChange::Put(vec![tag("k2")]))
            .await,
        Err(Error::Quota(QuotaKind::SecretTags))
    ));
    assert_eq!(s.tags(P, &one.secret_id).await.unwrap(), vec![tag("k1")]);
    assert!(matches!(
        s.change_tags(P, &one.secret_id, TagChange::Delete(vec!["nope".into()]))
            .await,
        Err(Error::ResourceNotFound)
    ));
    assert!(matches!(
        s.tags(P, "5f0e8c1a-1111-4222-8333-944455556666").await,
        Err(Error::ResourceNotFound)
    ));
}

#[tokio::test]
async fn backup_restores_in_the_same_project_only_once_gone() {
    let w = world().await;
    let s = &w.kms.secrets;
    let made = s
        .create(P, new_secret("db", "one"), deadline())
        .await
        .unwrap();
    s.add_version(P, "db", version("two"), deadline())
        .await
        .unwrap();
    let blob = s.backup(P, "db", deadline()).await.unwrap();
    // The secret still exists: CSMS.0101's cause.
    let doc = s.open_backup(P, &blob, deadline()).await.unwrap();
    assert!(matches!(
        s.restore_backup(P, doc).await,
        Err(Error::Conflict(Conflict::SecretName))
    ));
    s.delete(P, "db").await.unwrap();
    let doc = s.open_backup(P, &blob, deadline()).await.unwrap();
    let restored = s.restore_backup(P, doc).await.unwrap();
    assert_eq!(restored.secret_id, made.secret_id);
    assert_eq!(read(&w, "db", None).await.unwrap(), "two");
    assert_eq!(read(&w, "db", Some("v1")).await.unwrap(), "one");
    // Damaged or foreign blobs are refused.
    let mut bad = blob.clone();
    bad[60] ^= 1;
    assert!(matches!(
        s.open_backup(P, &bad, deadline()).await,
        Err(Error::InvalidBackup)
    ));
    assert!(matches!(
        s.open_backup(P, b"short", deadline()).await,
        Err(Error::InvalidBackup)
    ));
    assert!(s.open_backup("other", &blob, deadline()).await.is_err());
}
