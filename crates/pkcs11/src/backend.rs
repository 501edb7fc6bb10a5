//! The seam between code that holds PKCS#11 sessions and the HSM behind
//! them: opening a logged-in session and closing it. The crypto-worker's
//! session threads are written against [`Backend`], so their re-open and
//! retry logic is unit-tested with a fake; [`Hsm`] is the real one.

use cryptoki::session::Session;

use crate::error::Error;
use crate::token::Hsm;

/// What a session holder needs from the HSM.
pub trait Backend: Send + Sync + 'static {
    /// One logged-in session.
    type Session: Send;

    /// A read-write session logged in as the user.
    fn open_session(&self) -> Result<Self::Session, Error>;

    /// Close `session`, best effort: it is usually already unusable, and a
    /// failing close changes nothing.
    fn close_session(&self, session: Self::Session);
}

impl Backend for Hsm {
    type Session = Session;

    fn open_session(&self) -> Result<Session, Error> {
        Hsm::open_session(self).map_err(Error::Hsm)
    }

    fn close_session(&self, session: Session) {
        let _ = session.close();
    }
}
