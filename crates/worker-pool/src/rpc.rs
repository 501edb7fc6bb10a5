//! Which worker RPCs may be retried, and after which failures: the one
//! retry classification ([`WorkerRpc::retry`]) and the evidence a failure
//! carries (transport failure, provably never sent).

/// Which failures a call may be retried after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// No effect in the HSM: a second attempt after a first that may have
    /// run only repeats work whose answer nobody saw. Retried on any
    /// evidence that the worker died, was unreachable or is unavailable.
    SideEffectFree,
    /// Changes HSM state (would create a token object, import a key): retried
    /// only when the first attempt provably never reached a worker.
    IfNeverSent,
}

/// Every RPC the edge sends a crypto-worker: its metric label and its
/// retry rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerRpc {
    /// `CryptoWorker.GetKeyMetadata`.
    XksGetKeyMetadata,
    /// `CryptoWorker.Encrypt`.
    XksEncrypt,
    /// `CryptoWorker.Decrypt`.
    XksDecrypt,
    /// `KeyVault.GenerateKey`.
    VaultGenerateKey,
    /// `KeyVault.Encrypt`.
    VaultEncrypt,
    /// `KeyVault.Decrypt`.
    VaultDecrypt,
    /// `KeyVault.ReEncrypt`.
    VaultReEncrypt,
    /// `KeyVault.GenerateDataKey`.
    VaultDataKey,
    /// `KeyVault.GenerateDataKeyPair`.
    VaultDataKeyPair,
    /// `KeyVault.GenerateRandom`.
    VaultRandom,
}

impl WorkerRpc {
    /// Label of the edge's per-operation worker metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::XksGetKeyMetadata => "GetKeyMetadata",
            Self::XksEncrypt => "Encrypt",
            Self::XksDecrypt => "Decrypt",
            Self::VaultGenerateKey => "kms_generate_key",
            Self::VaultEncrypt => "kms_encrypt",
            Self::VaultDecrypt => "kms_decrypt",
            Self::VaultReEncrypt => "kms_re_encrypt",
            Self::VaultDataKey => "kms_data_key",
            Self::VaultDataKeyPair => "kms_key_pair",
            Self::VaultRandom => "kms_random",
        }
    }

    /// THE retry classification. None of these RPCs leaves anything behind
    /// in the HSM: encrypt, re-encrypt, data keys and key pairs draw a fresh
    /// IV or fresh key material per attempt, so an attempt whose answer was
    /// lost produced a ciphertext or key nobody ever saw; decrypt, metadata
    /// and random are reads. GenerateKey creates only a session object (the
    /// unwrapped CMK, CKA_TOKEN=false, dropped with the session or the cache
    /// entry) and returns the key wrapped: the CMK exists only once the edge
    /// stores that blob, so a lost first answer leaves no key anyone can
    /// use. A future RPC that creates token objects or imports material
    /// must answer [`Retry::IfNeverSent`].
    pub fn retry(self) -> Retry {
        match self {
            Self::XksGetKeyMetadata
            | Self::XksEncrypt
            | Self::XksDecrypt
            | Self::VaultGenerateKey
            | Self::VaultEncrypt
            | Self::VaultDecrypt
            | Self::VaultReEncrypt
            | Self::VaultDataKey
            | Self::VaultDataKeyPair
            | Self::VaultRandom => Retry::SideEffectFree,
        }
    }

    /// Whether a call that failed with `status` may be sent again to
    /// another worker.
    pub fn may_retry(self, status: &tonic::Status) -> bool {
        match self.retry() {
            // A worker that answers UNAVAILABLE itself (with an ErrorInfo)
            // did not do the work either way.
            Retry::SideEffectFree => {
                is_transport_failure(status) || status.code() == tonic::Code::Unavailable
            }
            Retry::IfNeverSent => is_transport_failure(status) && never_sent(status),
        }
    }
}

/// Whether any error in `status`'s source chain satisfies `f`.
fn in_chain(
    status: &tonic::Status,
    f: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        if f(e) {
            return true;
        }
        cause = e.source();
    }
    false
}

/// hyper's HTTP/2 client reports `canceled` only for a request it never
/// handed to the connection ("connection was not ready", or "connection
/// closed" with the request given back undelivered): e.g. one queued while
/// a draining worker's GOAWAY arrived.
fn hyper_canceled(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_canceled)
}

/// RFC 9113 §6.8/§8.7: a stream above a GOAWAY's last-stream-id, or reset
/// with REFUSED_STREAM, was not processed by the server. h2 reports a remote
/// NO_ERROR GOAWAY on a stream only in that case (or when opening a stream
/// after the GOAWAY, which sends nothing): streams the worker accepted keep
/// running through its graceful drain, and a connection lost later fails
/// them with an I/O error instead.
fn h2_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<h2::Error>().is_some_and(|h| {
        h.is_remote()
            && ((h.is_go_away() && h.reason() == Some(h2::Reason::NO_ERROR))
                || (h.is_reset() && h.reason() == Some(h2::Reason::REFUSED_STREAM)))
    })
}

/// The worker died or could not be reached: the status carries no worker
/// `ErrorInfo` and says UNAVAILABLE, or was made by the edge's own transport
/// (tonic attaches the underlying error as `source`; a status received from a
/// worker has none). A deadline is not such evidence; a cancel only when
/// hyper says it never sent the request.
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    use tonic::Code;
    if !status.details().is_empty() {
        return false;
    }
    match status.code() {
        Code::DeadlineExceeded => false,
        Code::Cancelled => in_chain(status, hyper_canceled),
        Code::Unavailable => true,
        _ => {
            std::error::Error::source(status).is_some()
                && !in_chain(status, |e| e.is::<tonic::TimeoutExpired>())
        }
    }
}

/// The request provably never reached a worker's application: a failed
/// connection attempt (tonic: UNAVAILABLE with a `tonic::ConnectError` in the
/// source chain, the TCP connect failed before any byte of the request was
/// written), a request hyper never handed to the connection, or a stream the
/// worker refused unprocessed (see `h2_refused`). Anything else (a reset,
/// an I/O error, EOF) may have happened after the worker received it.
pub fn never_sent(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable => {
            in_chain(status, |e| e.is::<tonic::ConnectError>() || h2_refused(e))
        }
        tonic::Code::Cancelled => in_chain(status, hyper_canceled),
        _ => in_chain(status, h2_refused),
    }
}
