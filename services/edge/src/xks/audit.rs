//! One audit line per XKS request (XKS-78/79): who, what, which key, outcome
//! and latency. Never plaintext, key material, secrets or signatures: only
//! the fields named here are ever logged.

use std::time::Duration;

#[derive(Debug, Default, Clone)]
pub struct Audit {
    pub kms_request_id: Option<String>,
    pub kms_operation: Option<String>,
    pub principal: Option<String>,
    pub kms_key_arn: Option<String>,
    pub access_key_id: Option<String>,
    /// The policy statement that denied the request (XKS-75).
    pub denied_by: Option<String>,
    /// Internal cause of a 5xx, for operators; never sent to the caller.
    pub cause: Option<String>,
}

impl Audit {
    #[allow(clippy::too_many_arguments)]
    pub fn log(
        &self,
        uri_path: &str,
        operation: &str,
        key_id: &str,
        status: u16,
        outcome: &str,
        latency: Duration,
    ) {
        tracing::info!(
            target: "keymesh::audit",
            kms_request_id = self.kms_request_id.as_deref().unwrap_or(""),
            uri_path,
            operation,
            key_id,
            kms_operation = self.kms_operation.as_deref().unwrap_or(""),
            principal = self.principal.as_deref().unwrap_or(""),
            kms_key_arn = self.kms_key_arn.as_deref().unwrap_or(""),
            access_key_id = self.access_key_id.as_deref().unwrap_or(""),
            status,
            outcome,
            denied_by = self.denied_by.as_deref().unwrap_or(""),
            cause = self.cause.as_deref().unwrap_or(""),
            latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            "xks request"
        );
    }
}
