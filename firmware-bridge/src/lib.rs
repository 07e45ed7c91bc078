//! Serial link between small sensor nodes (microcontrollers) and the Vigil gateway.
//!
//! Both ends of the link live here, so they cannot drift apart:
//!
//! - [`node`] (`no_std`, no allocator): a [`node::Node`] samples sensors through embedded-hal
//!   1.0 traits ([`drivers`]: an I2C temperature sensor, an SPI ADC, or any
//!   [`node::ReadValue`]), timestamps the readings on its own millisecond [`node::Clock`],
//!   batches them and writes frames to any `embedded_hal_nb::serial::Write<u8>`.
//! - [`wire`] and [`cobs`]: the frame format (CBOR body, CRC-32, COBS framing with `0x00`
//!   delimiters), shared by both ends. Pure functions, no I/O.
//! - [`gateway`] (feature `std`, on by default): a streaming decoder that resynchronises after
//!   garbage and rejects bad frames with a reason, and per-node gap/duplicate tracking. The
//!   agent's `serial` source (`vigil::ingest::serial`) does the port I/O around it.
//!
//! Build for a microcontroller without `std`:
//! `cargo build -p firmware-bridge --target thumbv7em-none-eabihf --no-default-features`.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

pub mod cobs;
pub mod drivers;
pub mod node;
pub mod wire;

#[cfg(feature = "std")]
pub mod gateway;
