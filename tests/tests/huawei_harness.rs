//! The Huawei side of the harness itself: a mesh with `MeshOptions::huawei`
//! comes up on either store, answers a signed-by-token request, and a
//! PostgreSQL mesh drops its database with it. (The dialect's behaviour is
//! tested with the official SDK in tests/python.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keymesh_tests::huawei::{HuaweiStore, PgDatabase, TokenSpec, pg_admin_url};
use keymesh_tests::{Mesh, MeshOptions, http_request};

fn start(store: HuaweiStore) -> Mesh {
    Mesh::start(MeshOptions {
        keystores: vec![keymesh_tests::TENANT_A.into()],
        ..store.options()
    })
    .unwrap_or_else(|e| panic!("mesh start failed: {e:#}"))
}

/// `POST /v1.0/{project}/kms/list-keys` with an X-Auth-Token.
fn list_keys_with_token(m: &Mesh, project: &str, token: &str) -> (u16, String) {
    http_request(
        m.edge_addr,
        "POST",
        &format!("/v1.0/{project}/kms/list-keys"),
        &[
            ("Content-Type", "application/json"),
            ("X-Auth-Token", token),
        ],
        b"{}",
    )
    .unwrap()
}

fn check_mesh(m: &Mesh) {
    let h = m.huawei();
    assert_eq!(h.endpoint, format!("http://{}", m.edge_addr));
    for a in [&h.full_a, &h.readonly_a, &h.full_b] {
        assert_eq!(a.project_id.len(), 32);
        assert!(
            a.project_id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
    assert_eq!(h.full_a.project_id, h.readonly_a.project_id);
    assert_ne!(h.full_a.project_id, h.full_b.project_id);
    assert_eq!(
        (h.full_a.role.as_str(), h.readonly_a.role.as_str()),
        ("full", "readonly")
    );
    assert!(m.edge_toml().contains("[huawei]"));

    let token = m.huawei_token(&TokenSpec::for_account(&h.full_a)).unwrap();
    let (status, body) = list_keys_with_token(m, &h.full_a.project_id, &token);
    assert_eq!(status, 200, "{body}");
    // The same token on project B's path is refused (URL and token differ).
    let (status, body) = list_keys_with_token(m, &h.full_b.project_id, &token);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("KMS.0321"), "{body}");
    // XKS is still served next to it.
    assert_eq!(m.readyz(), 200);
}

#[test]
fn sqlite_mesh() {
    let m = start(HuaweiStore::Sqlite);
    assert!(m.huawei().store_url.starts_with("sqlite:///"));
    check_mesh(&m);
}

#[test]
fn postgres_mesh_drops_its_database() {
    let m = start(HuaweiStore::Postgres);
    let url = m.huawei().store_url.clone();
    assert!(url.starts_with("postgres://"), "{url}");
    check_mesh(&m);
    let name = url.rsplit('/').next().unwrap().to_owned();
    assert!(name.starts_with("km_e2e_"), "{name}");
    drop(m);
    // Creating a database of the same name succeeds only if it is gone;
    // the guard drops it again.
    let probe = PgDatabase::create_named(&pg_admin_url(), &name).unwrap();
    assert_eq!(probe.name, name);
}
