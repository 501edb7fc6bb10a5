//! keymesh crypto-worker
