//! Domain tests on a real SQLite store (a temporary file: every pooled
//! connection must see the same database), the [`FakeVault`] and a
//! [`ManualClock`]: the business rules without HTTP or an HSM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use keymesh_store::{KeyFilter, KeyState, QuotaKind, Quotas, Tag};

use crate::KmsConfig;
use crate::blob::{Blob, Kind};
use crate::error::Error;
use crate::grants::NewGrant;
use crate::keys::{NewKey, Origin};
use crate::world::{self, DAY_MS, NOW, P, World, deadline, world};

async fn world_with(quotas: Quotas, cache_ttl: Duration) -> World {
    world::world_with(KmsConfig {
        quotas,
        cache_ttl,
        ..world::config()
    })
    .await
}

fn new_key(alias: &str, origin: Origin) -> NewKey {
    NewKey {
        alias: alias.to_owned(),
        description: String::new(),
        origin,
        enterprise_project_id: "0".into(),
    }
}

async fn key(w: &World, alias: &str) -> String {
    let k = w.kms.keys.new_key(P, new_key(alias, Origin::Kms));
    w.kms.keys.insert(k, deadline()).await.unwrap().key_id
}

#[tokio::test]
async fn created_keys_are_enabled_with_material_or_wait_for_import() {
    let w = world().await;
    let id = key(&w, "k1").await;
    let k = w.kms.keys.get(P, &id).await.unwrap();
    assert_eq!(
        (k.state, k.material_version, k.created_ms),
        (KeyState::Enabled, 1, NOW)
    );
    assert!(w.kms.keys.usable(P, &id).await.is_ok());

    let ext = w.kms.keys.new_key(P, new_key("k2", Origin::External));
    let ext = w.kms.keys.insert(ext, deadline()).await.unwrap();
    assert_eq!(ext.state, KeyState::PendingImport);
    assert!(matches!(
        w.kms.keys.usable(P, &ext.key_id).await,
        Err(Error::KeyNotEnabled)
    ));
    // Another project sees nothing.
    assert!(matches!(
        w.kms.keys.get("other", &id).await,
        Err(Error::KeyNotFound)
    ));
    // The key_alias attribute is unique per project.
    let dup = w.kms.keys.new_key(P, new_key("k1", Origin::Kms));
    assert!(matches!(
        w.kms.keys.insert(dup, deadline()).await,
        Err(Error::DuplicateAlias)
    ));
}

#[tokio::test]
async fn key_state_machine() {
    let w = world().await;
    let id = key(&w, "k1").await;
    let keys = &w.kms.keys;
    assert!(matches!(
        keys.enable(P, &id).await,
        Err(Error::KeyNotDisabled)
    ));
    assert_eq!(
        keys.disable(P, &id).await.unwrap().state,
        KeyState::Disabled
    );
    assert!(matches!(
        keys.disable(P, &id).await,
        Err(Error::KeyNotEnabled)
    ));
    assert_eq!(keys.enable(P, &id).await.unwrap().state, KeyState::Enabled);

    // Pending days are bounded: 7..=1096.
    for bad in [6, 1097, 0, -1] {
        assert!(matches!(
            keys.schedule_deletion(P, &id, bad).await,
            Err(Error::InvalidPendingDays)
        ));
    }
    let k = keys.schedule_deletion(P, &id, 7).await.unwrap();
    assert_eq!(k.state, KeyState::PendingDeletion);
    assert_eq!(k.deletion_ms, Some(NOW + 7 * DAY_MS));
    assert!(matches!(
        keys.schedule_deletion(P, &id, 30).await,
        Err(Error::AlreadyPendingDeletion)
    ));
    assert!(matches!(
        keys.enable(P, &id).await,
        Err(Error::KeyPendingDeletion)
    ));
    assert!(matches!(
        keys.disable(P, &id).await,
        Err(Error::KeyPendingDeletion)
    ));
    assert!(matches!(
        keys.update_alias(P, &id, "renamed").await,
        Err(Error::KeyPendingDeletion)
    ));
    // Cancelling leaves the key disabled.
    let k = keys.cancel_deletion(P, &id).await.unwrap();
    assert_eq!((k.state, k.deletion_ms), (KeyState::Disabled, None));
    assert!(matches!(
        keys.cancel_deletion(P, &id).await,
        Err(Error::NotPendingDeletion)
    ));

    // An external key without material goes back to PendingImport.
    let ext = keys.new_key(P, new_key("ext", Origin::External));
    let ext = keys.insert(ext, deadline()).await.unwrap().key_id;
    w.clock.advance(DAY_MS);
    let k = keys.schedule_deletion(P, &ext, 1096).await.unwrap();
    assert_eq!(k.deletion_ms, Some(NOW + DAY_MS + 1096 * DAY_MS));
    assert_eq!(
        keys.cancel_deletion(P, &ext).await.unwrap().state,
        KeyState::PendingImport
    );
    assert!(matches!(
        keys.enable(P, "0d0466b0-e727-4d9c-b35d-f84bb474a37f").await,
        Err(Error::KeyNotFound)
    ));
}

#[tokio::test]
async fn default_keys_are_created_once_and_protected() {
    let w = world().await;
    let keys = &w.kms.keys;
    let a = keys
        .default_key(P, "csms/default", "d", deadline())
        .await
        .unwrap();
    let b = keys
        .default_key(P, "csms/default", "d", deadline())
        .await
        .unwrap();
    assert_eq!(a, b);
    assert!(keys.get(P, &a).await.unwrap().default_key);
    assert!(matches!(keys.disable(P, &a).await, Err(Error::DefaultKey)));
    assert!(matches!(
        keys.schedule_deletion(P, &a, 7).await,
        Err(Error::DefaultKey)
    ));
    assert!(matches!(
        keys.update_description(P, &a, "x").await,
        Err(Error::DefaultKey)
    ));
    // Callers cannot claim a default alias.
    assert!(matches!(
        keys.update_alias(P, &key(&w, "k").await, "svc/default")
            .await,
        Err(Error::InvalidAlias)
    ));
    // Default keys are not counted against the key quota.
    assert_eq!(keys.usage(P).await.unwrap().keys, 1);
}

#[tokio::test]
async fn key_quota_and_listing() {
    let quotas = Quotas {
        keys_per_project: 2,
        ..Quotas::default()
    };
    let w = world_with(quotas, Duration::ZERO).await;
    key(&w, "a").await;
    let b = key(&w, "b").await;
    let third = w.kms.keys.new_key(P, new_key("c", Origin::Kms));
    assert!(matches!(
        w.kms.keys.insert(third, deadline()).await,
        Err(Error::Quota(QuotaKind::Keys))
    ));
    w.kms.keys.disable(P, &b).await.unwrap();
    let filter = KeyFilter {
        state: Some(KeyState::Disabled),
        ..KeyFilter::default()
    };
    let page = w.kms.keys.list(P, &filter, 0, 10).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.items[0].key_id, b);
}

#[tokio::test]
async fn aliases_are_unique_bounded_and_refused_on_keys_leaving() {
    let quotas = Quotas {
        aliases_per_key: 2,
        ..Quotas::default()
    };
    let w = world_with(quotas, Duration::ZERO).await;
    let k1 = key(&w, "k1").await;
    let k2 = key(&w, "k2").await;
    let al = &w.kms.aliases;
    let a = al.create(P, &k1, "alias/one").await.unwrap();
    assert_eq!((a.created_ms, a.key_id.as_str()), (NOW, k1.as_str()));
    assert!(matches!(
        al.create(P, &k2, "alias/one").await,
        Err(Error::DuplicateAlias)
    ));
    al.create(P, &k1, "alias/two").await.unwrap();
    assert!(matches!(
        al.create(P, &k1, "alias/three").await,
        Err(Error::Quota(QuotaKind::AliasesPerKey))
    ));
    for bad in ["", "a b", "x/default"] {
        assert!(matches!(
            al.create(P, &k1, bad).await,
            Err(Error::InvalidAlias)
        ));
    }
    assert_eq!(al.list(P, Some(&k1), 0, 10).await.unwrap().total, 2);
    assert!(matches!(
        al.list(P, Some("0d0466b0-e727-4d9c-b35d-f84bb474a37f"), 0, 10)
            .await,
        Err(Error::KeyNotFound)
    ));

    w.clock.advance(1000);
    let moved = al.associate(P, "alias/two", &k2).await.unwrap();
    assert_eq!(
        (moved.key_id.as_str(), moved.updated_ms),
        (k2.as_str(), NOW + 1000)
    );
    assert!(matches!(
        al.associate(P, "alias/none", &k2).await,
        Err(Error::AliasNotFound)
    ));
    // Deleting a name that is not the key's alias deletes nothing.
    assert!(matches!(
        al.delete(P, &k1, &["alias/one".into(), "alias/two".into()])
            .await,
        Err(Error::AliasNotFound)
    ));
    al.delete(P, &k1, &["alias/one".into()]).await.unwrap();
    assert_eq!(al.list(P, None, 0, 10).await.unwrap().total, 1);
    // More names than a key may hold.
    let many: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
    assert!(matches!(
        al.delete(P, &k1, &many).await,
        Err(Error::InvalidAlias)
    ));

    w.kms.keys.schedule_deletion(P, &k2, 7).await.unwrap();
    assert!(matches!(
        al.create(P, &k2, "alias/late").await,
        Err(Error::KeyPendingDeletion)
    ));
}

fn grant(key_id: &str, grantee: &str, retiring: &str) -> NewGrant {
    NewGrant {
        key_id: key_id.to_owned(),
        grantee_principal: grantee.to_owned(),
        grantee_principal_type: "user".into(),
        operations: vec!["encrypt-data".into()],
        name: String::new(),
        retiring_principal: retiring.to_owned(),
    }
}

#[tokio::test]
async fn grants_create_list_revoke_retire() {
    let quotas = Quotas {
        grants_per_key: 2,
        ..Quotas::default()
    };
    let w = world_with(quotas, Duration::ZERO).await;
    let k1 = key(&w, "k1").await;
    let k2 = key(&w, "k2").await;
    let gs = &w.kms.grants;
    let g1 = gs
        .create(P, "issuer", grant(&k1, "alice", "bob"))
        .await
        .unwrap();
    assert_eq!(
        (g1.issuing_principal.as_str(), g1.created_ms),
        ("issuer", NOW)
    );
    assert_eq!(g1.grant_id.len(), 64);
    let g2 = gs
        .create(P, "issuer", grant(&k1, "carol", ""))
        .await
        .unwrap();
    assert!(matches!(
        gs.create(P, "issuer", grant(&k1, "dave", "")).await,
        Err(Error::Quota(QuotaKind::GrantsPerKey))
    ));
    assert_eq!(gs.list(P, &k1, 0, 10).await.unwrap().total, 2);
    assert_eq!(gs.list_retirable(P, "bob", 0, 10).await.unwrap().total, 1);
    // A caller without an id sees none, even grants without a retirer.
    assert_eq!(gs.list_retirable(P, "", 0, 10).await.unwrap().total, 0);

    // Only the grant's principals retire it, and only on its own key.
    assert!(matches!(
        gs.retire(P, "mallory", &k1, &g1.grant_id).await,
        Err(Error::NotRetiringPrincipal)
    ));
    assert!(matches!(
        gs.retire(P, "bob", &k2, &g1.grant_id).await,
        Err(Error::GrantKeyMismatch)
    ));
    gs.retire(P, "bob", &k1, &g1.grant_id).await.unwrap();
    assert!(matches!(
        gs.retire(P, "bob", &k1, &g1.grant_id).await,
        Err(Error::GrantNotFound)
    ));
    assert!(matches!(
        gs.revoke(P, &k2, &g2.grant_id).await,
        Err(Error::GrantKeyMismatch)
    ));
    gs.revoke(P, &k1, &g2.grant_id).await.unwrap();
    assert!(matches!(
        gs.revoke(P, &k1, &g2.grant_id).await,
        Err(Error::GrantNotFound)
    ));

    // Disabled keys take grants; default keys and keys leaving do not.
    w.kms.keys.disable(P, &k2).await.unwrap();
    gs.create(P, "issuer", grant(&k2, "alice", ""))
        .await
        .unwrap();
    w.kms.keys.schedule_deletion(P, &k2, 7).await.unwrap();
    assert!(matches!(
        gs.create(P, "issuer", grant(&k2, "alice", "")).await,
        Err(Error::KeyPendingDeletion)
    ));
    let d = w
        .kms
        .keys
        .default_key(P, "kms/default", "", deadline())
        .await
        .unwrap();
    assert!(matches!(
        gs.create(P, "issuer", grant(&d, "alice", "")).await,
        Err(Error::DefaultKey)
    ));
}

#[tokio::test]
async fn tags_put_delete_show_and_refuse_keys_leaving() {
    let w = world().await;
    let k = key(&w, "k").await;
    let tags = &w.kms.tags;
    let t = |k: &str, v: &str| Tag {
        key: k.into(),
        value: v.into(),
    };
    tags.put(P, &k, &[t("env", "prod"), t("team", "a")])
        .await
        .unwrap();
    tags.put(P, &k, &[t("env", "dev")]).await.unwrap();
    let shown = tags.show(P, &k).await.unwrap();
    assert!(shown.contains(&t("env", "dev")) && shown.len() == 2);
    assert!(matches!(
        tags.delete(P, &k, &["nope".into()]).await,
        Err(Error::TagNotFound)
    ));
    tags.delete(P, &k, &["team".into()]).await.unwrap();
    assert_eq!(tags.project_tags(P).await.unwrap().len(), 1);
    w.kms.keys.schedule_deletion(P, &k, 7).await.unwrap();
    assert!(matches!(
        tags.put(P, &k, &[t("x", "")]).await,
        Err(Error::KeyPendingDeletion)
    ));
    // Still readable.
    assert_eq!(tags.show(P, &k).await.unwrap().len(), 1);
}

#[tokio::test]
async fn encrypt_decrypt_round_trip_and_binding() {
    let w = world().await;
    let k = key(&w, "k").await;
    let other = key(&w, "other").await;
    let c = &w.kms.crypto;
    let blob = c
        .encrypt(
            P,
            &k,
            Kind::Data,
            Bytes::from_static(b"hello"),
            b"ctx",
            deadline(),
        )
        .await
        .unwrap();
    let b = Blob::decode(&blob).unwrap();
    assert_eq!((b.key_id.as_str(), b.version), (k.as_str(), 1));
    let plain = c
        .decrypt(P, &b, Kind::Data, b"ctx", deadline())
        .await
        .unwrap();
    assert_eq!(&plain[..], b"hello");
    // The AAD, the kind and the project are bound in.
    for (aad, kind, project) in [(&b"other"[..], Kind::Data, P), (b"ctx", Kind::DataKey, P)] {
        assert!(matches!(
            c.decrypt(project, &b, kind, aad, deadline()).await,
            Err(Error::Ciphertext)
        ));
    }
    assert!(matches!(
        c.decrypt("other-project", &b, Kind::Data, b"ctx", deadline())
            .await,
        Err(Error::KeyNotFound)
    ));
    // A material version the key never had.
    let mut wrong = b.clone();
    wrong.version = 7;
    assert!(matches!(
        c.decrypt(P, &wrong, Kind::Data, b"ctx", deadline()).await,
        Err(Error::Ciphertext)
    ));

    // Re-encrypt moves it under another key without the caller seeing it.
    let (dest, moved) = c
        .re_encrypt(P, &b, Kind::Data, b"ctx", &other, b"new", deadline())
        .await
        .unwrap();
    assert_eq!(dest, other);
    let mb = Blob::decode(&moved).unwrap();
    assert_eq!(mb.key_id, other);
    let plain = c
        .decrypt(P, &mb, Kind::Data, b"new", deadline())
        .await
        .unwrap();
    assert_eq!(&plain[..], b"hello");

    // Data keys open as data keys only.
    let (dek, sealed) = c.data_key(P, &k, 32, b"", true, deadline()).await.unwrap();
    assert_eq!(dek.len(), 32);
    let sb = Blob::decode(&sealed).unwrap();
    assert_eq!(
        &c.decrypt(P, &sb, Kind::DataKey, b"", deadline())
            .await
            .unwrap()[..],
        &dek[..]
    );
    let (none, _) = c.data_key(P, &k, 16, b"", false, deadline()).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(c.random(24, deadline()).await.unwrap().len(), 24);
}

#[tokio::test]
async fn a_disabled_key_refuses_crypto_until_enabled() {
    // With the cache on: a state change through the domain is seen at once.
    let w = world_with(Quotas::default(), Duration::from_secs(60)).await;
    let k = key(&w, "k").await;
    let c = &w.kms.crypto;
    let blob = c
        .encrypt(P, &k, Kind::Data, Bytes::from_static(b"x"), b"", deadline())
        .await
        .unwrap();
    let b = Blob::decode(&blob).unwrap();
    w.kms.keys.disable(P, &k).await.unwrap();
    assert!(matches!(
        c.encrypt(P, &k, Kind::Data, Bytes::from_static(b"x"), b"", deadline())
            .await,
        Err(Error::KeyDisabled)
    ));
    assert!(matches!(
        c.decrypt(P, &b, Kind::Data, b"", deadline()).await,
        Err(Error::KeyDisabled)
    ));
    w.kms.keys.enable(P, &k).await.unwrap();
    assert!(c.decrypt(P, &b, Kind::Data, b"", deadline()).await.is_ok());
    w.kms.keys.schedule_deletion(P, &k, 7).await.unwrap();
    assert!(matches!(
        c.data_key(P, &k, 32, b"", true, deadline()).await,
        Err(Error::KeyPendingDeletion)
    ));
}
