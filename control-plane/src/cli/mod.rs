//! The commands besides `serve`: `run`, `bench`, `load`, `throughput`, `echo-upstream`,
//! `admin` and `simulate-clients`.

pub mod admin;
pub mod bench;
pub mod echo_upstream;
pub mod loadgen;
pub mod run;
pub mod simulate;
pub mod throughput;
