//! Service mTLS: a tonic health server over `tls_incoming`, clients over
//! `connector`, certificates from rcgen, identity pinning both ways, a live
//! certificate rotation, the health-only listener and the mesh-TLS flags.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use keymesh_common::grpc_tls::{
    GrpcTls, GrpcTlsArgs, GrpcTlsFiles, MeshTls, connector, tls_incoming,
};
use keymesh_common::mesh_identity::{AllowedPeers, PinnedServerVerifier};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
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

    /// A mesh identity `spiffe://test/<cn>`, usable as server and as
    /// client. No DNS or IP SAN: clients dial 127.0.0.1, so a connection
    /// can only succeed through the identity pin, never a hostname match.
    fn leaf(&self, cn: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(uri(cn).try_into().unwrap())];
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

fn uri(cn: &str) -> String {
    format!("spiffe://test/{cn}")
}

/// `name`'s certificate from `ca`, trusting `trust`, accepting peers `peer`.
fn identity(dir: &Path, name: &str, ca: &Ca, trust: &Ca, peer: &str) -> MeshTls {
    identity_in(dir, name, name, ca, trust, peer)
}

/// [`identity`] written to files named `file` (two holders of one identity).
fn identity_in(dir: &Path, file: &str, name: &str, ca: &Ca, trust: &Ca, peer: &str) -> MeshTls {
    MeshTls {
        files: files(dir, file, name, ca, trust),
        peers: AllowedPeers::one(&uri(peer)).unwrap(),
    }
}

fn files(dir: &Path, file: &str, name: &str, ca: &Ca, trust: &Ca) -> GrpcTlsFiles {
    let (cert, key) = ca.leaf(name);
    let files = GrpcTlsFiles {
        cert: dir.join(format!("{file}.pem")),
        key: dir.join(format!("{file}.key")),
        ca: dir.join(format!("{file}-ca.pem")),
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
    check_with(addr, connector(Arc::clone(tls))).await
}

#[tokio::test]
async fn mtls_serves_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("mesh ca");
    let other = Ca::new("other ca");
    let server = GrpcTls::load(identity(dir.path(), "server", &ca, &ca, "client")).unwrap();
    let addr = serve(server).await;

    // Dialled by IP, verified by chain + pinned URI.
    let client = GrpcTls::load(identity(dir.path(), "client", &ca, &ca, "server")).unwrap();
    assert_eq!(check(addr, &client).await, Ok(ServingStatus::Serving));

    // A client expecting another server identity refuses this server.
    let picky = GrpcTls::load(identity_in(
        dir.path(),
        "picky",
        "client",
        &ca,
        &ca,
        "limiter",
    ))
    .unwrap();
    assert!(check(addr, &picky).await.is_err());

    // The right CA but the wrong identity (a server calling a server) is
    // refused by the server.
    let peer = GrpcTls::load(identity(dir.path(), "server2", &ca, &ca, "server")).unwrap();
    assert!(check(addr, &peer).await.is_err());

    // A certificate from another CA with the right identity is refused.
    let stranger = GrpcTls::load(identity_in(
        dir.path(),
        "stranger",
        "client",
        &other,
        &ca,
        "server",
    ))
    .unwrap();
    assert!(check(addr, &stranger).await.is_err());

    // No client certificate at all is refused.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    // It verifies the server as the mesh does, so only the missing client
    // certificate can fail the handshake.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pinned = PinnedServerVerifier::new(
        Arc::new(roots),
        Arc::clone(&provider),
        AllowedPeers::one(&uri("server")).unwrap(),
    );
    let mut anon = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pinned))
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
    let server_tls = identity(dir.path(), "server", &old_ca, &old_ca, "client");
    let client_tls = identity(dir.path(), "client", &old_ca, &old_ca, "server");
    let (server_files, client_files) = (server_tls.files.clone(), client_tls.files.clone());
    let server = GrpcTls::load(server_tls).unwrap();
    let _server_watch = server.spawn_watch(Duration::from_millis(100));
    let addr = serve(Arc::clone(&server)).await;
    let client = GrpcTls::load(client_tls).unwrap();
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

    let old_trust = identity_in(
        dir.path(),
        "old-trust",
        "client",
        &old_ca,
        &old_ca,
        "server",
    );
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

#[tokio::test]
async fn health_listener_is_plaintext_and_health_only() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    let served = keymesh_common::health_listener::spawn(listener, health);
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let status = |svc: &str| {
        let mut c = HealthClient::new(channel.clone());
        let req = HealthCheckRequest {
            service: svc.to_owned(),
        };
        async move { c.check(req).await.map(|r| r.into_inner().status()) }
    };
    assert_eq!(status("").await.unwrap(), ServingStatus::Serving);
    // NOT_SERVING from the shared reporter shows here (probes see a drain).
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    assert_eq!(status("").await.unwrap(), ServingStatus::NotServing);
    // Any other gRPC service is unimplemented on this port.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let r: Result<tonic::Response<()>, _> = grpc
        .unary(
            tonic::Request::new(()),
            http::uri::PathAndQuery::from_static("/keymesh.crypto.v1.CryptoWorker/Encrypt"),
            Unit,
        )
        .await;
    assert_eq!(r.unwrap_err().code(), tonic::Code::Unimplemented);
    served.stop().await.unwrap();
}

/// A codec for `()` both ways: enough to call an arbitrary path.
#[derive(Debug, Clone, Copy)]
struct Unit;

impl tonic::codec::Codec for Unit {
    type Encode = ();
    type Decode = ();
    type Encoder = Unit;
    type Decoder = Unit;
    fn encoder(&mut self) -> Unit {
        Unit
    }
    fn decoder(&mut self) -> Unit {
        Unit
    }
}

impl tonic::codec::Encoder for Unit {
    type Item = ();
    type Error = tonic::Status;
    fn encode(&mut self, _: (), _: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        Ok(())
    }
}

impl tonic::codec::Decoder for Unit {
    type Item = ();
    type Error = tonic::Status;
    fn decode(&mut self, _: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        Ok(Some(()))
    }
}

#[derive(Debug, clap::Parser)]
struct Flags {
    #[command(flatten)]
    tls: GrpcTlsArgs,
}

fn mesh_tls(args: &[&str]) -> Result<Option<MeshTls>, String> {
    let mut argv = vec!["svc"];
    argv.extend_from_slice(args);
    Flags::try_parse_from(argv).unwrap().tls.mesh_tls()
}

#[test]
fn mtls_is_required_unless_explicitly_insecure() {
    let err = mesh_tls(&[]).unwrap_err();
    assert!(
        err.contains("requires mutual TLS") && err.contains("--insecure-plaintext-grpc"),
        "{err}"
    );
    assert_eq!(mesh_tls(&["--insecure-plaintext-grpc"]), Ok(None));
    let files = [
        "--grpc-tls-cert",
        "c.pem",
        "--grpc-tls-key",
        "k.pem",
        "--grpc-tls-ca",
        "ca.pem",
    ];
    let tls = mesh_tls(&files).unwrap().unwrap();
    assert_eq!(tls.files.ca, PathBuf::from("ca.pem"));
    assert_eq!(tls.peers.to_string(), "spiffe://keymesh/edge");
    let mut both = files.to_vec();
    both.push("--insecure-plaintext-grpc");
    assert!(mesh_tls(&both).unwrap_err().contains("contradicts"));
    let mut peers = files.to_vec();
    peers.extend(["--grpc-allowed-peers", "spiffe://a/edge,edge.keymesh.svc"]);
    let tls = mesh_tls(&peers).unwrap().unwrap();
    assert_eq!(tls.peers.identities().len(), 2);
    let mut bad = files.to_vec();
    bad.extend(["--grpc-allowed-peers", "not a name"]);
    assert!(mesh_tls(&bad).unwrap_err().contains("--grpc-allowed-peers"));
    let err = mesh_tls(&["--grpc-tls-cert", "c.pem"]).unwrap_err();
    assert!(
        err.contains("missing --grpc-tls-key, --grpc-tls-ca"),
        "{err}"
    );
}
