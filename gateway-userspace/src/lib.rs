//! The gateway daemon's library: Istio config in, BPF maps and a proxy out.
//!
//! Pipeline: [`config::load_paths`] -> [`compile::plan`] ->
//! [`dataplane::Dataplane::apply`] and [`proxy::serve`], run by
//! [`daemon::run`]. See ARCHITECTURE.md.
#![deny(unsafe_code)]

pub mod admin;
pub mod compile;
pub mod config;
pub mod connection;
pub mod daemon;
pub mod dataplane;
pub mod discovery;
pub mod files;
pub mod fuzzing;
pub mod kubernetes;
pub mod log_pipe;
pub mod management;
pub mod model;
pub mod pidfile;
pub mod plan;
pub mod proxy;
pub mod readiness;
pub mod report;
pub mod stats;
pub mod watch;
