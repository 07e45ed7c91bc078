//! Serial link between small sensor nodes and the Vigil gateway.
//!
//! This crate will hold both sides of that link (issue 5): the `no_std` node encoder and the
//! gateway's streaming frame decoder. It is intentionally empty until then.
#![no_std]
