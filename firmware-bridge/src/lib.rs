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
//! - [`host`] (feature `std`): a serial port over any `std::io::Write`, to run node code on a
//!   host (simulators, tests, benchmarks).
//!
//! Build for a microcontroller without `std`:
//! `cargo build -p firmware-bridge --target thumbv7em-none-eabihf --no-default-features`.
//!
//! # A node's main loop
//!
//! On the board, `i2c`, `uart` and `delay` come from the HAL (`embassy`, `stm32*-hal`,
//! `rp2040-hal`, …); here they are embedded-hal-mock stand-ins so the example runs on the host.
//!
//! ```
//! use firmware_bridge::drivers::Tmp102;
//! use firmware_bridge::node::{DelayClock, Node, NodeConfig};
//! # use embedded_hal_mock::eh1::{delay::NoopDelay, i2c};
//! # let mut i2c = i2c::Mock::new(&vec![i2c::Transaction::write_read(0x48, vec![0], vec![0x15, 0x80]); 8]);
//! # let (i2c_bus, delay) = (i2c.clone(), NoopDelay::new());
//! # let uart_tx = firmware_bridge::host::StdSerial::new(Vec::new());
//! let boot_id = 1; // e.g. a reset counter kept in flash
//! let mut sensor = Tmp102::new(i2c_bus, 0x48);
//! let clock = DelayClock::new(delay);
//! // 4 readings per frame, frames of at most 64 bytes on the wire.
//! let mut node: Node<_, _, 4, 64> = Node::new(NodeConfig { node_id: 3, boot_id }, uart_tx, clock);
//! for _ in 0..8 {
//!     // A failed sensor read or UART write is counted in node.stats() and never panics.
//!     let _ = node.sample(0, &mut sensor);
//!     node.clock().wait_ms(1000);
//! }
//! assert_eq!(node.stats().frames_sent, 2);
//! # i2c.done();
//! ```
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
#[cfg(feature = "std")]
pub mod host;
