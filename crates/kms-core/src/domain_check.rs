//! Domain-key binding at start: before the Huawei dialects serve, the
//! vault's members (the crypto-workers) are asked for the key check value
//! (KCV) of the domain key, computed in their HSM, and it is compared with
//! the one the store recorded. A different key under the label (a token
//! restored from the wrong backup, a key re-created after the token was
//! lost) would make every stored CMK and secret unreadable: the start is
//! refused instead, naming both KCVs. A store with no record yet (a
//! deployment older than migration 0004) gets the HSM's KCV recorded here.
//!
//! Why the edge and not the worker: the edge is what holds the store; the
//! worker has no store access (it can pin the KCV itself with
//! `--domain-key-kcv`). Workers that join later (DNS) are not asked here;
//! pin their KCV with `--domain-key-kcv` (docs/SRE.md).

use std::time::Duration;

use keymesh_store::{DomainKeys, StoreError};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::vault::{KeyCheck, Vault};

/// How long the start waits for a worker to answer the check (it is
/// refused after that: a domain key that cannot be verified is not served).
pub const START_WAIT: Duration = Duration::from_secs(30);
/// Between rounds while no worker answers.
const RETRY: Duration = Duration::from_millis(250);

/// Why the domain key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum DomainKeyError {
    #[error(
        "no crypto-worker answered the domain key check for {label:?} within {wait:?}: \
         the edge does not serve the Huawei dialects over a domain key it cannot verify"
    )]
    NoAnswer { label: String, wait: Duration },
    #[error("cannot read the domain key record")]
    Read(#[source] StoreError),
    #[error("cannot count wrapped keys")]
    Count(#[source] StoreError),
    #[error("cannot record the domain key KCV")]
    Record(#[source] StoreError),
    #[error(
        "the HSM has no domain key labelled {label:?}, but the store holds \
         {wrapped} key version(s) wrapped under it: restore the token from its \
         backup (docs/SRE.md)"
    )]
    MissingWithKeys { label: String, wrapped: u64 },
    #[error(
        "domain key {label:?} on the HSM of worker {worker} has KCV {kcv}, but the store \
         recorded KCV {expected}: the token holds another key than the one the stored \
         keys are wrapped under (restore the token, or point at the right store; see \
         docs/SRE.md)"
    )]
    Mismatch {
        label: String,
        worker: String,
        kcv: String,
        expected: String,
    },
    #[error(
        "worker {worker} has no usable domain key labelled {label:?}, but the store \
         recorded KCV {expected}: restore the token from its backup (docs/SRE.md)"
    )]
    MissingRecorded {
        label: String,
        worker: String,
        expected: String,
    },
    #[error(
        "workers disagree on domain key {label:?}: {first} has KCV {first_kcv}, {other} has KCV \
         {other_kcv}: they do not share one token"
    )]
    Disagree {
        label: String,
        first: String,
        first_kcv: String,
        other: String,
        other_kcv: String,
    },
}

/// Ask the vault's members until at least one answers (or `wait` passes),
/// then judge the answers against the store; records the KCV on first use.
pub async fn verify(
    vault: &dyn Vault,
    store: &dyn DomainKeys,
    clock: &dyn Clock,
    label: &str,
    wait: Duration,
) -> Result<(), DomainKeyError> {
    let give_up = Instant::now() + wait;
    let answers = loop {
        let answers = vault.domain_key_checks(label).await;
        if !answers.is_empty() {
            break answers;
        }
        if Instant::now() >= give_up {
            return Err(DomainKeyError::NoAnswer {
                label: label.to_owned(),
                wait,
            });
        }
        tokio::time::sleep(RETRY).await;
    };
    let recorded = store
        .domain_key_check(label)
        .await
        .map_err(DomainKeyError::Read)?;
    let expected = match recorded {
        Some(r) => r.kcv,
        None => {
            let found = judge_unrecorded(label, &answers)?;
            let Some(kcv) = found else {
                let wrapped = store
                    .wrapped_under(label)
                    .await
                    .map_err(DomainKeyError::Count)?;
                if wrapped > 0 {
                    return Err(DomainKeyError::MissingWithKeys {
                        label: label.to_owned(),
                        wrapped,
                    });
                }
                tracing::warn!(
                    domain_key = label,
                    "no domain key on the HSM yet: KeyVault requests fail until \
                     `keymeshctl domain-key init` creates it"
                );
                return Ok(());
            };
            let held = store
                .record_domain_key_check(label, &kcv, clock.now_ms())
                .await
                .map_err(DomainKeyError::Record)?;
            tracing::info!(domain_key = label, kcv = %held.kcv, "domain key KCV recorded in the store");
            held.kcv
        }
    };
    judge(label, &expected, &answers)?;
    tracing::info!(domain_key = label, kcv = %expected, workers = answers.len(), "domain key matches the store");
    Ok(())
}

/// Every answer must be exactly the recorded KCV.
fn judge(
    label: &str,
    expected: &str,
    answers: &[(String, KeyCheck)],
) -> Result<(), DomainKeyError> {
    for (worker, answer) in answers {
        match answer {
            KeyCheck::Kcv(kcv) if kcv == expected => {}
            KeyCheck::Kcv(kcv) => {
                return Err(DomainKeyError::Mismatch {
                    label: label.to_owned(),
                    worker: worker.clone(),
                    kcv: kcv.clone(),
                    expected: expected.to_owned(),
                });
            }
            KeyCheck::Missing => {
                return Err(DomainKeyError::MissingRecorded {
                    label: label.to_owned(),
                    worker: worker.clone(),
                    expected: expected.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// With nothing recorded: the one KCV the workers agree on (`None` when none
/// has the key); workers that disagree stop the start.
fn judge_unrecorded(
    label: &str,
    answers: &[(String, KeyCheck)],
) -> Result<Option<String>, DomainKeyError> {
    let mut found: Option<(&str, &str)> = None;
    for (worker, answer) in answers {
        if let KeyCheck::Kcv(kcv) = answer {
            match found {
                Some((w, k)) if k != kcv => {
                    return Err(DomainKeyError::Disagree {
                        label: label.to_owned(),
                        first: w.to_owned(),
                        first_kcv: k.to_owned(),
                        other: worker.clone(),
                        other_kcv: kcv.clone(),
                    });
                }
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

    fn a(w: &str, kcv: Option<&str>) -> (String, KeyCheck) {
        (
            w.to_owned(),
            kcv.map_or(KeyCheck::Missing, |k| KeyCheck::Kcv(k.to_owned())),
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

    #[tokio::test]
    async fn records_on_first_start_then_holds_the_hsm_to_it() {
        use crate::clock::ManualClock;
        use crate::fake::{FAKE_DOMAIN_KEY, FAKE_KCV, FakeVault};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/dk.db", dir.path().display());
        let store = keymesh_store::open(&url).await.unwrap();
        let vault = FakeVault::new().unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let wait = Duration::from_millis(10);
        verify(&vault, store.as_ref(), &clock, FAKE_DOMAIN_KEY, wait)
            .await
            .unwrap();
        let held = store
            .domain_key_check(FAKE_DOMAIN_KEY)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (held.kcv.as_str(), held.recorded_ms),
            (FAKE_KCV, 1_700_000_000_000)
        );
        // Another key under the label now refuses the start.
        store
            .replace_domain_key_check(FAKE_DOMAIN_KEY, "0000000000000000", 1)
            .await
            .unwrap();
        let err = verify(&vault, store.as_ref(), &clock, FAKE_DOMAIN_KEY, wait)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(FAKE_KCV) && err.contains("0000000000000000"),
            "{err}"
        );
        // No key on the HSM and nothing wrapped yet: served, nothing recorded.
        verify(&vault, store.as_ref(), &clock, "other", wait)
            .await
            .unwrap();
        assert!(store.domain_key_check("other").await.unwrap().is_none());
    }
}
