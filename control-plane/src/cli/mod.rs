//! The commands besides `serve`: `run`, `bench`, `load`, `throughput` and `echo-upstream`.

pub mod bench;
pub mod echo_upstream;
pub mod loadgen;
pub mod run;
pub mod throughput;
