//! Service mTLS: a tonic health server over `tls_incoming`, clients over
//! `connector`, certificates from rcgen, and a live certificate rotation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keymesh_common::grpc_tls::{GrpcTls, GrpcTlsFiles, connector, tls_incoming};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new(cn: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    /// A mesh identity: usable as server and as client, SANs for loopback.
    fn leaf(&self, cn: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Write via a rename, as a Secret update does, so the watcher never reads
/// a half-written file.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

fn identity(dir: &Path, name: &str, ca: &Ca, trust: &Ca) -> GrpcTlsFiles {
    let (cert, key) = ca.leaf(name);
    let files = GrpcTlsFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join(format!("{name}-ca.pem")),
    };
    write(&files.cert, &cert);
    write(&files.key, &key);
    write(&files.ca, &trust.pem);
    files
}

async fn serve(tls: Arc<GrpcTls>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        // The reporter must outlive the server, or the health service answers
        // from a closed watch channel.
        let _reporter = _reporter;
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tls_incoming(listener, tls))
            .await
            .unwrap();
    });
    addr
}

/// One health Check over a fresh channel (a new TCP + TLS connection).
async fn check_with<C>(addr: std::net::SocketAddr, conn: C) -> Result<ServingStatus, String>
where
    C: tower::Service<http::Uri, Error = std::io::Error> + Send + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Send + Unpin,
    C::Future: Send,
{
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector_lazy(conn);
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(Ok(r)) => Ok(r.into_inner().status()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

async fn check(addr: std::net::SocketAddr, tls: &Arc<GrpcTls>) -> Result<ServingStatus, String> {
    check_with(addr, connector(Arc::clone(tls), None)).await
}

#[tokio::test]
async fn mtls_serves_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("mesh ca");
    let other = Ca::new("other ca");
    let server = GrpcTls::load(identity(dir.path(), "server", &ca, &ca)).unwrap();
    let addr = serve(server).await;

    let client = GrpcTls::load(identity(dir.path(), "client", &ca, &ca)).unwrap();
    assert_eq!(check(addr, &client).await, Ok(ServingStatus::Serving));
    // An explicit server name that is a SAN works too; one that is not fails.
    assert_eq!(
        check_with(
            addr,
            connector(Arc::clone(&client), Some("localhost".into()))
        )
        .await,
        Ok(ServingStatus::Serving)
    );
    assert!(
        check_with(
            addr,
            connector(Arc::clone(&client), Some("evil.example".into()))
        )
        .await
        .is_err()
    );

    // A certificate from another CA (trusting the server's CA) is refused.
    let stranger = GrpcTls::load(identity(dir.path(), "stranger", &other, &ca)).unwrap();
    assert!(check(addr, &stranger).await.is_err());

    // No client certificate at all is refused.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut anon = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    anon.alpn_protocols = vec![b"h2".to_vec()];
    let anon = tokio_rustls::TlsConnector::from(Arc::new(anon));
    let anon_conn = tower::service_fn(move |uri: http::Uri| {
        let anon = anon.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect((
                uri.host().unwrap_or(""),
                uri.port_u16().unwrap_or(80),
            ))
            .await?;
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = anon.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    assert!(check_with(addr, anon_conn).await.is_err());

    // A plaintext client gets nowhere either.
    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        HealthClient::new(plain).check(HealthCheckRequest::default()),
    )
    .await;
    assert!(!matches!(r, Ok(Ok(_))));

    // The mesh client still works after the refusals (accepts never blocked).
    assert_eq!(check(addr, &client).await, Ok(ServingStatus::Serving));
}

#[tokio::test]
async fn certificates_reload_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new("old ca");
    let server_files = identity(dir.path(), "server", &old_ca, &old_ca);
    let client_files = identity(dir.path(), "client", &old_ca, &old_ca);
    let server = GrpcTls::load(server_files.clone()).unwrap();
    let _server_watch = server.spawn_watch(Duration::from_millis(100));
    let addr = serve(Arc::clone(&server)).await;
    let client = GrpcTls::load(client_files.clone()).unwrap();
    let _client_watch = client.spawn_watch(Duration::from_millis(100));
    assert_eq!(check(addr, &client).await, Ok(ServingStatus::Serving));

    // A file that does not parse is logged and the old config stays.
    let good_cert = std::fs::read_to_string(&server_files.cert).unwrap();
    write(&server_files.cert, "not a certificate");
    assert!(!server.reload());
    assert_eq!(check(addr, &client).await, Ok(ServingStatus::Serving));
    write(&server_files.cert, &good_cert);

    // Rotate the server to a certificate from a new CA (it keeps trusting
    // the old CA for clients) and the client to trusting the new CA.
    let new_ca = Ca::new("new ca");
    let (cert, key) = new_ca.leaf("server");
    write(&server_files.key, &key);
    write(&server_files.cert, &cert);
    write(&client_files.ca, &new_ca.pem);

    let old_trust = identity(dir.path(), "old-trust", &old_ca, &old_ca);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // Fresh clients each round: each makes a new connection.
        let new_ok = check(addr, &client).await == Ok(ServingStatus::Serving);
        let old = GrpcTls::load(old_trust.clone()).unwrap();
        let old_refused = check(addr, &old).await.is_err();
        if new_ok && old_refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotation not picked up: new CA ok = {new_ok}, old CA refused = {old_refused}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn files_all_or_none() {
    let names = ["--cert", "--key", "--ca"];
    assert_eq!(GrpcTlsFiles::from_parts(None, None, None, names), Ok(None));
    let p = |s: &str| Some(PathBuf::from(s));
    assert!(matches!(
        GrpcTlsFiles::from_parts(p("c"), p("k"), p("a"), names),
        Ok(Some(_))
    ));
    let err = GrpcTlsFiles::from_parts(p("c"), None, None, names).unwrap_err();
    assert!(err.contains("missing --key, --ca"), "{err}");
}
