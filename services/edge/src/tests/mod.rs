//! Tests of the whole edge: both dialects' check order through the router
//! without a socket ([`check_order`]), and [`crate::serve`] over one
//! ([`serve`]), the rescue step's log and audit cause ([`rescue`]), and
//! worker failures through the vault adapter to the wire table ([`vault`]).

mod check_order;
mod rescue;
mod serve;
mod vault;
