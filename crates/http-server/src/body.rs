//! Bounded, budgeted body buffering, shared by both dialects' body-limit
//! layers: every signature check hashes the exact body bytes, so the body
//! is read in full first, but never more than the dialect's limit, never
//! past the deadline, and never more than the edge-wide budget of bytes
//! held for callers not yet authenticated ([`crate::abuse`]).

use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::abuse::PreAuthBudget;

/// The request body, buffered within `max_body_bytes`.
#[derive(Debug, Clone)]
pub struct RawBody(pub Bytes);

/// How much of an oversized body is read and discarded so an HTTP/1.1 client
/// that is still sending sees the answer instead of a reset connection.
const DRAIN_CAP: usize = 1 << 20;

/// First buffer of a declared body: one up to this size is buffered in one
/// allocation of its exact size.
const FIRST_BUFFER: usize = 64 << 10;
/// Growth factor beyond it: a 1 MiB body costs two reallocations, and the
/// allocator keeps little of the buffers it outgrew.
const GROWTH: usize = 4;

/// Why a body could not be buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// More than the allowed bytes, declared or sent.
    TooLarge,
    /// The edge-wide budget of bytes buffered before authentication is spent.
    OverBudget,
    /// The connection failed mid-body.
    Unreadable,
    /// The body did not arrive before the deadline.
    Late,
}

/// The `Content-Length` a request declares, when it parses.
pub fn declared_length(headers: &http::HeaderMap) -> Option<usize> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// A buffered body and the pre-authentication bytes it holds.
#[derive(Debug)]
pub struct Bounded {
    pub bytes: Bytes,
    pub held: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A body refused as too large may be left unread (a declared length over
/// the limit, or more than `DRAIN_CAP` sent): hyper then closes the HTTP/1.1
/// connection after the answer. Saying so in the answer stops a keep-alive
/// client from sending its next request into the closing socket. HTTP/2
/// forbids the header and resets just the stream, so it is left out there.
pub fn closes_connection(mut resp: Response, version: http::Version) -> Response {
    if version < http::Version::HTTP_2 {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// Buffer at most `max` bytes of `body` before `at` (shared by every
/// dialect's body-limit layer), counting the buffer against `budget` as it
/// grows. A declared length above `max` is refused at once: the client may
/// never send those bytes, and waiting for them would hold the connection
/// to the deadline. A body found oversized (or over budget) while reading is
/// released and the rest drained up to `DRAIN_CAP`, so an HTTP/1.1 client
/// still sending reads the refusal instead of a reset connection.
pub async fn read_bounded(
    mut body: axum::body::Body,
    max: usize,
    at: Instant,
    declared: Option<usize>,
    budget: &PreAuthBudget,
) -> Result<Bounded, BodyError> {
    if declared.is_some_and(|d| d > max) {
        return Err(BodyError::TooLarge);
    }
    // Grown as bytes arrive ([`FIRST_BUFFER`], then by [`GROWTH`]) up to
    // what the body can still need, each step taken from the budget before
    // it is allocated: the budget counts capacity, and a client that
    // declares a body but sends nothing holds nothing.
    let limit = declared.unwrap_or(max);
    // Without a declared length (HTTP/2 often sends none), the first frame
    // sizes the first buffer, so a one-frame body is buffered exactly.
    let first = if declared.is_some() { FIRST_BUFFER } else { 0 };
    let mut buf: Vec<u8> = Vec::new();
    let mut held = None;
    let mut seen = 0usize;
    let mut refused = None;
    let read = tokio::time::timeout_at(at, async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ())?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len());
            if refused.is_none() {
                if seen > max {
                    refused = Some(BodyError::TooLarge);
                } else if seen > buf.capacity() {
                    let cap = seen
                        .max(buf.capacity().saturating_mul(GROWTH))
                        .max(first)
                        .min(limit.max(seen));
                    if budget.take(&mut held, cap - buf.capacity()) {
                        buf.reserve_exact(cap - buf.len());
                    } else {
                        refused = Some(BodyError::OverBudget);
                    }
                }
                match refused {
                    None => buf.extend_from_slice(&data),
                    Some(_) => {
                        buf = Vec::new();
                        held = None;
                    }
                }
            }
            if refused.is_some() && seen > DRAIN_CAP {
                break;
            }
        }
        Ok::<(), ()>(())
    })
    .await;
    if let Some(e) = refused {
        return Err(e);
    }
    match read {
        Ok(Ok(())) => Ok(Bounded {
            bytes: Bytes::from(buf),
            held,
        }),
        Ok(Err(())) => Err(BodyError::Unreadable),
        Err(_) => Err(BodyError::Late),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::time::Duration;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    fn chunks(n: usize, size: usize) -> axum::body::Body {
        let frames = (0..n).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![7u8; size])));
        axum::body::Body::from_stream(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_declared_length_above_the_limit_is_refused_without_reading() {
        // A body that never sends a byte: only an up-front refusal returns.
        let never = axum::body::Body::from_stream(futures_util::stream::pending::<
            Result<Bytes, std::io::Error>,
        >());
        let budget = PreAuthBudget::new(1 << 20);
        let r = read_bounded(never, 1000, later(), Some(1_000_000_000), &budget).await;
        assert_eq!(r.err(), Some(BodyError::TooLarge));
    }

    #[tokio::test]
    async fn buffered_bytes_count_against_the_budget_until_dropped() {
        let budget = PreAuthBudget::new(1 << 20);
        let b = read_bounded(chunks(4, 1000), 65536, later(), Some(4000), &budget)
            .await
            .unwrap();
        assert_eq!(b.bytes.len(), 4000);
        // A declared body is buffered in one allocation of its size.
        assert_eq!(budget.available(), (1 << 20) - 4000);
        drop(b);
        assert_eq!(budget.available(), 1 << 20);
        // Undeclared: sized by the frames, never past the limit.
        let b = read_bounded(chunks(3, 10_000), 65536, later(), None, &budget)
            .await
            .unwrap();
        assert_eq!(b.bytes.len(), 30_000);
        assert!((1 << 20) - budget.available() <= 65536);
    }

    #[tokio::test]
    async fn a_spent_budget_refuses_and_keeps_nothing() {
        let budget = PreAuthBudget::new(1 << 20);
        let mut hog = None;
        assert!(budget.take(&mut hog, (1 << 20) - 100));
        let r = read_bounded(chunks(2, 1000), 65536, later(), Some(2000), &budget).await;
        assert_eq!(r.err(), Some(BodyError::OverBudget));
        assert_eq!(budget.available(), 100);
        drop(hog);
        let r = read_bounded(chunks(2, 1000), 65536, later(), Some(2000), &budget).await;
        assert_eq!(r.map(|b| b.bytes.len()).ok(), Some(2000));
    }

    #[tokio::test]
    async fn a_body_found_oversized_while_reading_is_refused() {
        let budget = PreAuthBudget::new(1 << 20);
        let r = read_bounded(chunks(10, 1000), 5000, later(), None, &budget).await;
        assert_eq!(r.err(), Some(BodyError::TooLarge));
        assert_eq!(budget.available(), 1 << 20);
    }
}
