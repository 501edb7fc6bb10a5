//! keymesh edge (work in progress).
pub mod glob;
pub mod keystores;
