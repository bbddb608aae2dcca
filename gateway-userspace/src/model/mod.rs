//! The validated configuration the compiler works from: plain Rust values,
//! no YAML, no kernel types beyond the listener kind.
mod gateway;
mod traffic;

pub use gateway::*;
pub use traffic::*;
