//! The AWS XKS proxy API (`/{prefix}/kms/xks/v1/...`): routes and handlers
//! ([`handlers`]), the one wire-error table ([`error`]), the tower stack
//! ([`layers`]), AAD binding ([`aad`]) and the audit line ([`audit`]).
//! SigV4 against each key store's credentials and the secondary-authorization
//! policy ([`keymesh_xks_auth::policy`], its patterns as
//! [`keymesh_contracts::glob`] reads them) are [`keymesh_xks_auth`], SigV4
//! failures mapped by [`error`]. Key stores
//! themselves are [`keymesh_contracts::keystores`], loaded by
//! [`crate::keystores`].

pub mod aad;
pub mod audit;
pub mod error;
pub mod handlers;
pub mod layers;
