//! Tests of the whole edge: both dialects' check order through the router
//! without a socket ([`check_order`]), and [`crate::serve`] over one
//! ([`serve`]), and the rescue step's log and audit cause ([`rescue`]).

mod check_order;
mod rescue;
mod serve;
