//! The edge as a library, over a real socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::serve;

/// The edge as a library: served on a pre-bound port-0 listener, it
/// answers, and returns once its shutdown future resolves.
#[tokio::test]
async fn serve_answers_then_stops_on_shutdown() {
    let dir = std::env::temp_dir().join(format!("keymesh-serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keystores = dir.join("keystores.json");
    std::fs::write(&keystores, br#"{"keystores": []}"#).unwrap();
    let config: Config = toml::from_str(&format!(
        "workers = [\"http://127.0.0.1:9\"]\nlimiter = \"http://127.0.0.1:9\"\nkeystores_file = {:?}\n",
        keystores.display().to_string()
    ))
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve(config, listener, async {
        let _ = stopped.await;
    }));
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /livez HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(20), served)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
