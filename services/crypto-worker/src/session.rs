//! One session thread's PKCS#11 session, opened on demand, and what is done
//! when a call on it fails: the only code that closes a session because of
//! a failure.
//!
//! Written against [`keymesh_pkcs11::Backend`], so the re-open and retry
//! behaviour is unit-tested with a fake below; the pool runs it on
//! [`keymesh_pkcs11::Hsm`]. Whether a failure means "session lost" is not
//! decided here but by [`keymesh_pkcs11::recovery`].

use std::sync::Arc;

use keymesh_pkcs11::{Backend, Recovery};

use crate::error::Error;
use crate::lane::SessionThread;

/// A lazily opened, logged-in session plus state `S` that lives and dies
/// with it (the pool keeps the session's health-check key there: a session
/// object, gone with the session).
pub struct SessionSlot<B: Backend, S: Default = ()> {
    backend: Arc<B>,
    open: Option<(B::Session, S)>,
}

impl<B: Backend, S: Default> std::fmt::Debug for SessionSlot<B, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSlot")
            .field("open", &self.open.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Backend, S: Default> SessionSlot<B, S> {
    /// A slot with no session yet: the first call opens one.
    pub fn new(backend: Arc<B>) -> Self {
        Self {
            backend,
            open: None,
        }
    }

    /// Open and log in a session unless one is open.
    pub fn ensure_open(&mut self) -> Result<(), Error> {
        if self.open.is_none() {
            let session = self.backend.open_session()?;
            tracing::debug!("HSM session opened and logged in");
            self.open = Some((session, S::default()));
        }
        Ok(())
    }

    /// Close the session (and drop its state); the next call opens and logs
    /// in a fresh one.
    pub fn close(&mut self) {
        if let Some((session, _)) = self.open.take() {
            self.backend.close_session(session);
        }
    }

    /// Run `op` once on the session, opening it first if needed. Nothing is
    /// retried: a failure goes to [`Self::after_failure`].
    pub fn attempt<T>(
        &mut self,
        op: &mut impl FnMut(&B::Session, &mut S) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.ensure_open()?;
        let (session, state) = self.open.as_mut().ok_or(Error::WorkerLost)?;
        op(session, state)
    }

    /// THE place that acts on a failed call's [`Recovery`]: when the
    /// session or its login is gone, close the session (the next call opens
    /// and logs in a fresh one) and run `on_lost` (the pool checks its
    /// keeper sessions, which the same event may have taken). Returns the
    /// decision so the caller knows whether its work may be retried.
    pub fn after_failure(&mut self, err: &Error, on_lost: impl FnOnce()) -> Recovery {
        let recovery = err.recovery();
        if recovery == Recovery::Reopen {
            tracing::warn!(error = %err, "HSM session lost; re-opening and logging in");
            self.close();
            on_lost();
        }
        recovery
    }

    /// Run `op`; if the session turned out lost, run it once more on a fresh
    /// logged-in session. A second loss is the answer, not a loop.
    pub fn run<T>(
        &mut self,
        mut op: impl FnMut(&B::Session, &mut S) -> Result<T, Error>,
        on_lost: impl FnOnce(),
    ) -> Result<T, Error> {
        let first = self.attempt(&mut op);
        if let Err(e) = &first
            && self.after_failure(e, on_lost) == Recovery::Reopen
        {
            return self.attempt(&mut op);
        }
        first
    }
}

/// A pool session thread owns one slot: opened at start, closed when drained.
impl<B: Backend, S: Default + Send + 'static> SessionThread for SessionSlot<B, S> {
    fn open(&mut self) -> Result<(), Error> {
        self.ensure_open()
    }

    fn close(&mut self) {
        SessionSlot::close(self);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::atomic::{AtomicU32, Ordering};

    use cryptoki::context::Function;
    use cryptoki::error::{Error as Pkcs11Error, RvError};
    use keymesh_pkcs11::Error as HsmError;

    use super::*;

    /// A backend whose sessions are numbers: counts opens and closes, and
    /// refuses to open while `fail_opens` is non-zero.
    #[derive(Debug, Default)]
    pub(crate) struct FakeBackend {
        pub opened: AtomicU32,
        pub closed: AtomicU32,
        pub fail_opens: AtomicU32,
    }

    impl Backend for FakeBackend {
        type Session = u32;

        fn open_session(&self) -> Result<u32, HsmError> {
            if self
                .fail_opens
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(HsmError::Hsm(Pkcs11Error::Pkcs11(
                    RvError::TokenNotPresent,
                    Function::OpenSession,
                )));
            }
            Ok(self.opened.fetch_add(1, Ordering::SeqCst) + 1)
        }

        fn close_session(&self, _session: u32) {
            self.closed.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn ckr(rv: RvError) -> Error {
        Error::hsm(Pkcs11Error::Pkcs11(rv, Function::Encrypt))
    }

    fn slot() -> (Arc<FakeBackend>, SessionSlot<FakeBackend, Option<u32>>) {
        let backend = Arc::new(FakeBackend::default());
        (Arc::clone(&backend), SessionSlot::new(backend))
    }

    #[test]
    fn a_lost_session_is_reopened_and_the_call_retried_once() {
        let (backend, mut slot) = slot();
        let mut lost_seen = 0;
        let mut calls = Vec::new();
        let r = slot.run(
            |session, state| {
                calls.push((*session, *state));
                *state = Some(*session);
                if *session == 1 {
                    Err(ckr(RvError::SessionHandleInvalid))
                } else {
                    Ok(*session)
                }
            },
            || lost_seen += 1,
        );
        assert_eq!(r.unwrap(), 2);
        // The per-session state went with the lost session.
        assert_eq!(calls, [(1, None), (2, None)]);
        assert_eq!(lost_seen, 1);
        assert_eq!(backend.opened.load(Ordering::SeqCst), 2);
        assert_eq!(backend.closed.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_second_loss_is_the_answer() {
        let (backend, mut slot) = slot();
        let mut calls = 0;
        let r: Result<(), Error> = slot.run(
            |_, _| {
                calls += 1;
                Err(ckr(RvError::UserNotLoggedIn))
            },
            || {},
        );
        assert_eq!(r.unwrap_err().recovery(), Recovery::Reopen);
        assert_eq!(calls, 2);
        assert_eq!(backend.opened.load(Ordering::SeqCst), 2);
        assert_eq!(backend.closed.load(Ordering::SeqCst), 1);
        // The second failure is only returned: the next job meets the
        // session again and recovers then, if it is really gone.
        let mut lost = 0;
        let r = slot.run(
            |s, _| match *s {
                2 => Err(ckr(RvError::SessionClosed)),
                s => Ok(s),
            },
            || lost += 1,
        );
        assert_eq!(r.unwrap(), 3);
        assert_eq!(lost, 1);
    }

    #[test]
    fn other_failures_keep_the_session() {
        let (backend, mut slot) = slot();
        for err in [
            ckr(RvError::KeyHandleInvalid),
            ckr(RvError::GeneralError),
            Error::from(HsmError::KeyNotFound { key_id: "k".into() }),
            Error::Busy,
        ] {
            let mut lost = false;
            let mut e = Some(err);
            let r: Result<(), Error> = slot.run(|_, _| Err(e.take().unwrap()), || lost = true);
            assert!(r.is_err());
            assert!(!lost);
        }
        assert_eq!(backend.opened.load(Ordering::SeqCst), 1);
        assert_eq!(backend.closed.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_failed_open_is_retried_by_the_next_call() {
        let (backend, mut slot) = slot();
        backend.fail_opens.store(1, Ordering::SeqCst);
        assert!(slot.ensure_open().is_err());
        assert_eq!(slot.run(|s, _| Ok(*s), || {}).unwrap(), 1);
    }
}
