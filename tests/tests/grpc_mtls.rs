//! Service mTLS end to end: workers and the limiter serve gRPC only over
//! mutual TLS (`--grpc-tls-*`), the edge dials them with `[grpc_tls]`, and
//! the XKS API works through it, health probes included.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use keymesh_tests::xks::model::*;
use keymesh_tests::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xks_round_trip_over_service_mtls() {
    let m = Mesh::start(MeshOptions {
        workers: 2,
        keystores: vec![TENANT_A.into()],
        grpc_mtls: true,
        ..MeshOptions::default()
    })
    .unwrap();
    assert_eq!(m.readyz(), 200);

    // Plaintext gRPC is refused by every worker and the limiter, so the
    // round trip below can only have gone over mTLS.
    for a in m.worker_addrs.iter().chain(m.limiter_addrs.iter()) {
        assert!(!answers_plaintext_h2(*a), "{a} answered plaintext HTTP/2");
    }

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
    assert_eq!(m.readyz(), 200);
}
