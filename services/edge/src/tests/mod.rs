//! Tests of the whole edge: both dialects' check order through the router
//! without a socket ([`check_order`]), and [`crate::serve`] over one
//! ([`serve`]).

mod check_order;
mod serve;
