//! The fuzz targets' bodies, shared by the cargo-fuzz binaries (`fuzz_targets/`) and the
//! stable corpus replay test (`tests/fuzz_corpus.rs`, which includes `targets.rs` directly).
pub mod targets;
