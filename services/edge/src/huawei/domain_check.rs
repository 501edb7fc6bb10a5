//! Domain-key binding at start: before the Huawei dialects serve, the edge
//! asks the crypto-workers for the key check value (KCV) of the domain key
//! (KeyVault `GetDomainKeyCheck`, computed in their HSM) and compares it
//! with the one its store recorded. A different key under the label (a token
//! restored from the wrong backup, a key re-created after the token was
//! lost) would make every stored CMK and secret unreadable: the edge refuses
//! to start instead, naming both KCVs. A store with no record yet (a
//! deployment older than migration 0004) gets the HSM's KCV recorded here.
//!
//! Why the edge and not the worker: the edge is what holds the store; the
//! worker has no store access (it can pin the KCV itself with
//! `--domain-key-kcv`). Workers that join later (DNS) are not asked here;
//! pin their KCV with `--domain-key-kcv` (docs/SRE.md).

use std::time::Duration;

use keymesh_proto::crypto::v1::GetDomainKeyCheckRequest;
use keymesh_proto::crypto::v1::key_vault_client::KeyVaultClient;
use keymesh_store::Store;
use tokio::time::Instant;

use crate::mesh::WorkerPool;

/// How long the edge waits at start for a worker to answer the check (it
/// refuses to start after that: a domain key it cannot verify is not served).
pub const START_WAIT: Duration = Duration::from_secs(30);
/// One worker's answer budget.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// Between rounds while no worker answers.
const RETRY: Duration = Duration::from_millis(250);

/// What one worker said about the domain key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Kcv(String),
    /// No usable key under the label on its HSM.
    Missing,
}

async fn ask(channel: tonic::transport::Channel, label: &str) -> Option<Answer> {
    let mut req = tonic::Request::new(GetDomainKeyCheckRequest {
        label: label.to_owned(),
    });
    req.set_timeout(ASK_TIMEOUT);
    let answer = tokio::time::timeout(
        ASK_TIMEOUT,
        KeyVaultClient::new(channel).get_domain_key_check(req),
    )
    .await;
    match answer {
        Ok(Ok(r)) => Some(Answer::Kcv(r.into_inner().kcv)),
        Ok(Err(s)) if s.code() == tonic::Code::FailedPrecondition => Some(Answer::Missing),
        Ok(Err(s)) => {
            tracing::debug!(code = ?s.code(), error = %s.message(), "domain key check failed");
            None
        }
        Err(_) => None,
    }
}

/// Ask every known worker until at least one answers (or `wait` passes),
/// then judge the answers against the store; records the KCV on first use.
pub async fn verify(
    workers: &WorkerPool,
    label: &str,
    store: &dyn Store,
    wait: Duration,
) -> anyhow::Result<()> {
    let give_up = Instant::now() + wait;
    let answers = loop {
        let members = workers.members();
        let asked = futures_util::future::join_all(members.iter().map(|w| async {
            ask(w.channel(), label)
                .await
                .map(|a| (w.endpoint.clone(), a))
        }))
        .await;
        let answers: Vec<(String, Answer)> = asked.into_iter().flatten().collect();
        if !answers.is_empty() {
            break answers;
        }
        if Instant::now() >= give_up {
            anyhow::bail!(
                "no crypto-worker answered the domain key check for {label:?} within {wait:?}: \
                 the edge does not serve the Huawei dialects over a domain key it cannot verify"
            );
        }
        tokio::time::sleep(RETRY).await;
    };
    let recorded = store
        .domain_key_check(label)
        .await
        .map_err(|e| anyhow::Error::new(e).context("cannot read the domain key record"))?;
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
    )
    .unwrap_or(i64::MAX);
    let expected = match recorded {
        Some(r) => r.kcv,
        None => {
            let found = judge_unrecorded(label, &answers)?;
            let Some(kcv) = found else {
                let wrapped = store
                    .wrapped_under(label)
                    .await
                    .map_err(|e| anyhow::Error::new(e).context("cannot count wrapped keys"))?;
                if wrapped > 0 {
                    anyhow::bail!(
                        "the HSM has no domain key labelled {label:?}, but the store holds \
                         {wrapped} key version(s) wrapped under it: restore the token from its \
                         backup (docs/SRE.md)"
                    );
                }
                tracing::warn!(
                    domain_key = label,
                    "no domain key on the HSM yet: KeyVault requests fail until \
                     `keymeshctl domain-key init` creates it"
                );
                return Ok(());
            };
            let held = store
                .record_domain_key_check(label, &kcv, now)
                .await
                .map_err(|e| anyhow::Error::new(e).context("cannot record the domain key KCV"))?;
            tracing::info!(domain_key = label, kcv = %held.kcv, "domain key KCV recorded in the store");
            held.kcv
        }
    };
    judge(label, &expected, &answers)?;
    tracing::info!(domain_key = label, kcv = %expected, workers = answers.len(), "domain key matches the store");
    Ok(())
}

/// Every answer must be exactly the recorded KCV.
fn judge(label: &str, expected: &str, answers: &[(String, Answer)]) -> anyhow::Result<()> {
    for (worker, answer) in answers {
        match answer {
            Answer::Kcv(kcv) if kcv == expected => {}
            Answer::Kcv(kcv) => anyhow::bail!(
                "domain key {label:?} on the HSM of worker {worker} has KCV {kcv}, but the store \
                 recorded KCV {expected}: the token holds another key than the one the stored \
                 keys are wrapped under (restore the token, or point at the right store; see \
                 docs/SRE.md)"
            ),
            Answer::Missing => anyhow::bail!(
                "worker {worker} has no usable domain key labelled {label:?}, but the store \
                 recorded KCV {expected}: restore the token from its backup (docs/SRE.md)"
            ),
        }
    }
    Ok(())
}

/// With nothing recorded: the one KCV the workers agree on (`None` when none
/// has the key); workers that disagree stop the start.
fn judge_unrecorded(label: &str, answers: &[(String, Answer)]) -> anyhow::Result<Option<String>> {
    let mut found: Option<(&str, &str)> = None;
    for (worker, answer) in answers {
        if let Answer::Kcv(kcv) = answer {
            match found {
                Some((w, k)) if k != kcv => anyhow::bail!(
                    "workers disagree on domain key {label:?}: {w} has KCV {k}, {worker} has KCV \
                     {kcv}: they do not share one token"
                ),
                Some(_) => {}
                None => found = Some((worker, kcv)),
            }
        }
    }
    Ok(found.map(|(_, k)| k.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn a(w: &str, kcv: Option<&str>) -> (String, Answer) {
        (
            w.to_owned(),
            kcv.map_or(Answer::Missing, |k| Answer::Kcv(k.to_owned())),
        )
    }

    #[test]
    fn answers_against_the_record() {
        let dk = "keymesh-domain-v1";
        assert!(judge(dk, "aa", &[a("w1", Some("aa")), a("w2", Some("aa"))]).is_ok());
        let err = judge(dk, "aa", &[a("w1", Some("aa")), a("w2", Some("bb"))])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("KCV bb") && err.contains("KCV aa") && err.contains("w2"),
            "{err}"
        );
        let err = judge(dk, "aa", &[a("w1", None)]).unwrap_err().to_string();
        assert!(
            err.contains("no usable domain key") && err.contains("aa"),
            "{err}"
        );
    }

    #[test]
    fn unrecorded_needs_agreement() {
        let dk = "dk";
        assert_eq!(judge_unrecorded(dk, &[a("w1", None)]).unwrap(), None);
        assert_eq!(
            judge_unrecorded(dk, &[a("w1", None), a("w2", Some("aa"))]).unwrap(),
            Some("aa".to_owned())
        );
        let err = judge_unrecorded(dk, &[a("w1", Some("aa")), a("w2", Some("bb"))])
            .unwrap_err()
            .to_string();
        assert!(err.contains("disagree"), "{err}");
    }
}
