//! PostgreSQL over TLS with server verification: a store URL with
//! `sslmode=verify-full&sslrootcert=<CA file>` connects only to a server
//! whose certificate chains to that CA and names the URL's host.
//!
//! The live tests need a server with `ssl = on` at `localhost:5432`
//! (`KEYMESH_TEST_POSTGRES_TLS_URL`, default
//! `postgres://postgres@localhost:5432/test`) and the CA of its certificate
//! (`KEYMESH_TEST_POSTGRES_CA`, default Debian's self-signed
//! `/etc/ssl/certs/ssl-cert-snakeoil.pem`, CN and SAN `localhost`); they are
//! skipped with a message when `KEYMESH_TEST_POSTGRES=skip`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _};

fn skipped() -> bool {
    std::env::var("KEYMESH_TEST_POSTGRES").as_deref() == Ok("skip")
}

fn base_url() -> String {
    std::env::var("KEYMESH_TEST_POSTGRES_TLS_URL")
        .unwrap_or_else(|_| "postgres://postgres@localhost:5432/test".to_owned())
}

fn server_ca() -> PathBuf {
    std::env::var_os("KEYMESH_TEST_POSTGRES_CA").map_or_else(
        || "/etc/ssl/certs/ssl-cert-snakeoil.pem".into(),
        PathBuf::from,
    )
}

fn verify_full(url: &str, ca: &Path) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}sslmode=verify-full&sslrootcert={}", ca.display())
}

/// A CA that did not sign the server's certificate.
fn foreign_ca(dir: &Path) -> PathBuf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let path = dir.join("foreign-ca.pem");
    std::fs::write(&path, cert.pem()).unwrap();
    path
}

#[test]
fn verify_full_url_names_mode_and_ca() {
    let opts = PgConnectOptions::from_str(
        "postgres://keymesh@db.example:5432/keymesh?sslmode=verify-full&sslrootcert=/etc/keymesh/pg-ca.pem",
    )
    .unwrap();
    assert!(matches!(opts.get_ssl_mode(), PgSslMode::VerifyFull));
    assert_eq!(opts.get_host(), "db.example");
    // The CA path survives a round trip through the URL sqlx rebuilds.
    let url = opts.to_url_lossy();
    assert!(url.as_str().contains("sslmode=verify-full"), "{url}");
    assert!(url.as_str().contains("sslrootcert="), "{url}");
}

#[tokio::test]
async fn verify_full_against_the_local_server() {
    if skipped() {
        eprintln!("KEYMESH_TEST_POSTGRES=skip: PostgreSQL TLS test skipped");
        return;
    }
    let ca = server_ca();
    assert!(
        ca.exists(),
        "{} missing: set KEYMESH_TEST_POSTGRES_CA to the server's CA \
         (or KEYMESH_TEST_POSTGRES=skip)",
        ca.display()
    );
    // A fresh database for the store's migrations, made over the plain link.
    let base = base_url();
    let name = format!("km_tls_{:016x}", RandomState::new().hash_one(0u8));
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let db_url = base.replacen("/test", &format!("/{name}"), 1);

    let outcome = async move {
        // The store opens (and migrates) over a verified TLS link ...
        let url = verify_full(&db_url, &ca);
        let store = keymesh_store::open(&url).await.unwrap();
        assert!(store.list_accounts().await.unwrap().is_empty());
        // ... and the server sees an encrypted connection.
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let ssl: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert!(ssl);
        conn.close().await.unwrap();

        // A CA that did not sign the server's certificate: refused.
        let dir = tempfile::tempdir().unwrap();
        let err = keymesh_store::open(&verify_full(&db_url, &foreign_ca(dir.path())))
            .await
            .unwrap_err();
        assert!(
            matches!(err, keymesh_store::StoreError::Backend(_)),
            "{err:?}"
        );
        // The right CA but a host the certificate does not name: refused.
        let by_ip = db_url.replacen("localhost", "127.0.0.1", 1);
        assert_ne!(by_ip, db_url, "the TLS test URL must name localhost");
        assert!(
            keymesh_store::open(&verify_full(&by_ip, &ca))
                .await
                .is_err()
        );
        // A CA file that does not exist: refused, never a silent plain link.
        let missing = dir.path().join("missing.pem");
        assert!(
            keymesh_store::open(&verify_full(&db_url, &missing))
                .await
                .is_err()
        );
    };
    let result = tokio::spawn(outcome).await;
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
