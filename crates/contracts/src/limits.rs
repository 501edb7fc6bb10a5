//! Limits both sides of a wire must agree on.

/// Most permits one `keymesh.ratelimit.v1.RateLimiter/Acquire` (one lease)
/// may ask for: the rate-limiter refuses more as INVALID_ARGUMENT, and the
/// edge's limiter client never asks for more (it clamps `limiter_max_lease`
/// to this).
pub const MAX_PERMITS: u32 = 10_000;
