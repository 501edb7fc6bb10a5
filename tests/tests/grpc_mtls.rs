//! Service mTLS end to end, on by default: workers and the limiter serve
//! gRPC only over mutual TLS and accept only the edge's identity; the edge
//! accepts only servers carrying the worker (or limiter) identity; the XKS
//! API works through it; the plaintext health-only port answers probes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keymesh_common::grpc_tls::{GrpcTls, GrpcTlsFiles, MeshTls, connector};
use keymesh_common::mesh_identity::{
    AllowedPeers, EDGE_IDENTITY, LIMITER_IDENTITY, PinnedServerVerifier, WORKER_IDENTITY,
};
use keymesh_tests::xks::model::*;
use keymesh_tests::*;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// What a gRPC port answers to a plaintext HTTP/2 preface: a plaintext
/// server sends a SETTINGS frame (type byte 0x04 at offset 3).
fn answers_plaintext_h2(addr: SocketAddr) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The preface plus an empty SETTINGS frame.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    if s.write_all(&hello).is_err() {
        return false;
    }
    let mut buf = [0u8; 9];
    let mut n = 0;
    while n < buf.len() {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n == buf.len() && buf[3] == 0x04
}

/// One health Check over a fresh channel made by `conn`.
async fn check_with<C>(addr: SocketAddr, conn: C) -> Result<ServingStatus, String>
where
    C: tower::Service<http::Uri, Error = std::io::Error> + Send + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Send + Unpin,
    C::Future: Send,
{
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(conn);
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest::default());
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(r)) => Ok(r.into_inner().status()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Health Check over mTLS presenting `cert`/`key`, expecting the server to
/// carry `server_identity` (so only the server's verdict on us can fail it).
async fn check_as(
    addr: SocketAddr,
    cert: &Path,
    key: &Path,
    ca: &Path,
    server_identity: &str,
) -> Result<ServingStatus, String> {
    let tls = GrpcTls::load(MeshTls {
        files: GrpcTlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: ca.to_path_buf(),
        },
        peers: AllowedPeers::one(server_identity).unwrap(),
    })
    .unwrap();
    check_with(addr, connector(tls)).await
}

/// Health Check over TLS without a client certificate.
async fn check_anonymous(
    addr: SocketAddr,
    ca: &Path,
    server_identity: &str,
) -> Result<ServingStatus, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut std::fs::read(ca).unwrap().as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedServerVerifier::new(
        Arc::new(roots),
        Arc::clone(&provider),
        AllowedPeers::one(server_identity).unwrap(),
    );
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let conn = tower::service_fn(move |uri: http::Uri| {
        let tls = tls.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect((
                uri.host().unwrap_or(""),
                uri.port_u16().unwrap_or(80),
            ))
            .await?;
            let name = rustls::pki_types::ServerName::try_from("keymesh").unwrap();
            let s = tls.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
        }
    });
    check_with(addr, conn).await
}

/// Plaintext health Check (the health-only port).
async fn check_plaintext(addr: SocketAddr) -> Result<ServingStatus, String> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner().status())
        .map_err(|e| e.to_string())
}

async fn xks_round_trip(m: &Mesh) {
    let c = m.client(TENANT_A);
    for n in [32usize, 4300] {
        let pt = plaintext(n);
        let aad = b"tenant=blue".to_vec();
        let req = EncryptRequest::new(pt.clone()).with_aad(aad.clone());
        let r = c.encrypt(KEY_ED, &req).await.unwrap();
        assert_eq!(r.status(), 200, "Encrypt: {:?}", r.json());
        let enc = r.parse::<EncryptResponse>().unwrap();
        let d = c
            .decrypt(KEY_ED, &DecryptRequest::from_encrypt(&enc, Some(aad)))
            .await
            .unwrap();
        assert_eq!(d.status(), 200, "Decrypt: {:?}", d.json());
        let d = d.parse::<DecryptResponse>().unwrap();
        assert!(d.plaintext == pt, "round trip of {n} bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xks_round_trip_over_service_mtls() {
    // Service mTLS is the harness default, as it is the services' default.
    let m = Mesh::start(MeshOptions {
        workers: 2,
        keystores: vec![TENANT_A.into()],
        ..MeshOptions::default()
    })
    .unwrap();
    assert!(m.grpc_pki.is_some());
    assert_eq!(m.readyz(), 200);

    // Plaintext gRPC is refused by every worker and the limiter, so the
    // round trip below can only have gone over mTLS.
    for a in m.worker_addrs.iter().chain(m.limiter_addrs.iter()) {
        assert!(!answers_plaintext_h2(*a), "{a} answered plaintext HTTP/2");
    }
    xks_round_trip(&m).await;
    assert_eq!(m.readyz(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_limiter_refuse_every_caller_but_the_edge() {
    let m = Mesh::start(MeshOptions {
        keystores: vec![TENANT_A.into()],
        health_listen: true,
        ..MeshOptions::default()
    })
    .unwrap();
    let g = m.grpc_pki.as_ref().unwrap();
    let (edge_cert, edge_key) = g.identity("edge");
    let (worker_cert, worker_key) = g.identity("crypto-worker");
    let (limiter_cert, limiter_key) = g.identity("rate-limiter");
    // The edge's identity, issued by a CA the services do not trust.
    let stranger_ca = pki::Ca::new("stranger mesh CA").unwrap();
    let stranger = stranger_ca.issue_mesh(EDGE_IDENTITY).unwrap();
    let stranger_cert = m.root().join("stranger.pem");
    let stranger_key = m.root().join("stranger.key");
    std::fs::write(&stranger_cert, &stranger.cert_pem).unwrap();
    std::fs::write(&stranger_key, &stranger.key_pem).unwrap();

    let servers = [
        ("worker", m.worker_addrs[0], WORKER_IDENTITY),
        ("limiter", m.limiter_addr, LIMITER_IDENTITY),
    ];
    for (name, addr, identity) in servers {
        // Positive control: the edge's certificate is served.
        assert_eq!(
            check_as(addr, &edge_cert, &edge_key, &g.ca_cert, identity).await,
            Ok(ServingStatus::Serving),
            "{name}: the edge identity must be accepted"
        );
        let refused: [(&str, PathBuf, PathBuf); 3] = [
            ("another CA", stranger_cert.clone(), stranger_key.clone()),
            ("a worker identity", worker_cert.clone(), worker_key.clone()),
            (
                "a limiter identity",
                limiter_cert.clone(),
                limiter_key.clone(),
            ),
        ];
        for (what, cert, key) in refused {
            let r = check_as(addr, &cert, &key, &g.ca_cert, identity).await;
            assert!(r.is_err(), "{name} accepted a client with {what}: {r:?}");
        }
        let r = check_anonymous(addr, &g.ca_cert, identity).await;
        assert!(r.is_err(), "{name} accepted a client without certificate");
        assert!(!answers_plaintext_h2(addr), "{name} answered plaintext");
    }

    // The health-only ports answer plaintext probes, and only health.
    let health = [
        ("worker", m.worker_health_addrs[0]),
        ("limiter", m.limiter_health_addr.unwrap()),
    ];
    for (name, addr) in health {
        assert_eq!(
            check_plaintext(addr).await,
            Ok(ServingStatus::Serving),
            "{name} health port"
        );
        let mut grpc = tonic::client::Grpc::new(
            Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_lazy(),
        );
        grpc.ready().await.unwrap();
        let path = if name == "worker" {
            "/keymesh.crypto.v1.CryptoWorker/Encrypt"
        } else {
            "/keymesh.ratelimit.v1.RateLimiter/Acquire"
        };
        let r: Result<tonic::Response<()>, _> = grpc
            .unary(
                tonic::Request::new(()),
                http::uri::PathAndQuery::from_static(path),
                Unit,
            )
            .await;
        assert_eq!(
            r.unwrap_err().code(),
            tonic::Code::Unimplemented,
            "{name} health port served {path}"
        );
    }

    // None of the refusals disturbed the edge's own hops.
    assert_eq!(m.readyz(), 200);
    xks_round_trip(&m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_refuses_a_worker_without_the_worker_identity() {
    let m = Mesh::start(MeshOptions {
        keystores: vec![TENANT_A.into()],
        ..MeshOptions::default()
    })
    .unwrap();
    let g = m.grpc_pki.as_ref().unwrap();
    let (worker_cert, worker_key) = g.identity("crypto-worker");
    let good_cert = std::fs::read(&worker_cert).unwrap();
    let good_key = std::fs::read(&worker_key).unwrap();
    let c = m.client(TENANT_A);
    let req = EncryptRequest::new(plaintext(32));

    for impostor in ["rate-limiter", "edge"] {
        // Worker 0 comes back with a certificate of the mesh CA carrying
        // another service's identity.
        m.kill_worker(0);
        let (cert, key) = g.identity(impostor);
        atomic_write(&worker_cert, &std::fs::read(cert).unwrap()).unwrap();
        atomic_write(&worker_key, &std::fs::read(key).unwrap()).unwrap();
        m.restart_worker(0).unwrap();

        poll("edge not ready without a genuine worker", WAIT, || {
            (m.readyz() != 200).then_some(())
        })
        .unwrap();
        let r = c.encrypt(KEY_ED, &req).await.unwrap();
        assert_ne!(
            r.status(),
            200,
            "Encrypt through a {impostor} posing as worker"
        );
        assert!(
            r.status() >= 500,
            "a dependency failure, not a client error: {}",
            r.status()
        );
        // The refusal is the identity pin (logged by the edge), not a crash.
        poll("the edge logs the refused identity", WAIT, || {
            m.log_files()
                .iter()
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("edge"))
                })
                .any(|p| {
                    std::fs::read_to_string(p)
                        .unwrap_or_default()
                        .contains("mesh peer refused")
                })
                .then_some(())
        })
        .unwrap();
        assert!(m.edge_alive());
    }

    // The genuine certificate back: the edge recovers, requests succeed.
    m.kill_worker(0);
    atomic_write(&worker_cert, &good_cert).unwrap();
    atomic_write(&worker_key, &good_key).unwrap();
    m.restart_worker(0).unwrap();
    m.wait_ready().unwrap();
    xks_round_trip(&m).await;
}

/// A codec for `()` both ways: enough to call an arbitrary method path.
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

/// Each service binary refuses to start without mesh TLS and without the
/// explicit opt-out, naming both in its error.
#[test]
fn services_refuse_to_start_without_mesh_tls() {
    let bins = Bins::locate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let edge_toml = dir.path().join("edge.toml");
    std::fs::write(
        &edge_toml,
        "listen = \"127.0.0.1:0\"\nworkers = [\"http://127.0.0.1:9\"]\n\
         limiter = \"http://127.0.0.1:9\"\nkeystores_file = \"k.json\"\n",
    )
    .unwrap();
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    let runs: [(&str, &Path, Vec<String>, &str); 3] = [
        (
            "crypto-worker",
            &bins.worker,
            vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--pin-file".into(),
                pin.display().to_string(),
            ],
            "--insecure-plaintext-grpc",
        ),
        (
            "rate-limiter",
            &bins.limiter,
            vec!["--listen".into(), "127.0.0.1:0".into()],
            "--insecure-plaintext-grpc",
        ),
        (
            "edge",
            &bins.edge,
            vec!["--config".into(), edge_toml.display().to_string()],
            "insecure_plaintext_grpc = true",
        ),
    ];
    for (name, bin, args, opt_out) in runs {
        let out = std::process::Command::new(bin)
            .args(&args)
            .env_remove("KEYMESH_INSECURE_PLAINTEXT_GRPC")
            .env_remove("KEYMESH_GRPC_TLS_CERT")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "{name} started without mesh TLS:\n{text}"
        );
        assert!(
            text.contains("grpc_tls") || text.contains("--grpc-tls-cert"),
            "{name}: {text}"
        );
        assert!(
            text.contains(opt_out),
            "{name} does not name {opt_out}: {text}"
        );
    }
}
