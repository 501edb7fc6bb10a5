//! keymesh rate-limiter
