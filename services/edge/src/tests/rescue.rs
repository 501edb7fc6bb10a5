//! The rescue step at work: a 5xx is logged once with its source chain and
//! the request id, and its cause reaches the audit line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use http::Method;

use super::check_order::{PREFIX, dir, request, sigv4, state, xks};
use crate::app::app;

/// Log output kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

#[tokio::test]
async fn a_worker_failure_is_logged_once_with_its_cause_and_audited() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let d = dir("rescue");
    let st = state(&d, "");
    let router = app(Arc::clone(&st), None);
    let path = format!("{PREFIX}/keys/k1/metadata");
    let body = br#"{"requestMetadata":{"kmsRequestId":"rescue-1","kmsOperation":"DescribeKey","awsPrincipalArn":"arn:aws:iam::1:root"}}"#;
    // The only worker refuses connections: 500 InternalException.
    let r = xks(
        &router,
        request(Method::POST, &path, body, &sigv4(&path, body)),
    )
    .await;
    assert_eq!(r, (500, "InternalException".into()));
    st.stop();

    let lines = logs.lines();
    let rescued: Vec<_> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "request failed")
        .collect();
    assert_eq!(rescued.len(), 1, "{lines:#?}");
    let fields = &rescued[0]["fields"];
    assert_eq!(fields["request_id"], "rescue-1");
    assert_eq!(fields["status"], 500);
    let cause = fields["cause"].as_str().unwrap();
    assert!(
        cause.starts_with("internal error: crypto-worker call failed"),
        "the whole chain: {cause}"
    );
    let audit: Vec<_> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "xks request")
        .collect();
    assert_eq!(audit.len(), 1, "{lines:#?}");
    assert_eq!(audit[0]["fields"]["cause"], cause);
    assert_eq!(audit[0]["fields"]["kms_request_id"], "rescue-1");
    let _ = std::fs::remove_dir_all(&d);
}
