//! Linux as the TDX module sees it: kernel primitives and the host algorithms.
//!
//! Modules:
//! - `tdx::dpamt`: `tdx_pamt_get` / `tdx_pamt_put` in every published design.
pub mod tdx;
