//! Sensor drivers over embedded-hal 1.0 buses, each a [`ReadValue`].
//!
//! - [`Tmp102`]: Texas Instruments TMP102 digital temperature sensor on I2C (register read).
//! - [`Mcp3008`]: Microchip MCP3008 8-channel 10-bit ADC on SPI (one channel per instance);
//!   the shape for any analogue sensor behind an ADC (4–20 mA loops via a shunt, thermistors,
//!   pressure transducers).
//! - [`FnSensor`]: any closure, for sensors the node reads some other way.

use embedded_hal::i2c::I2c;
use embedded_hal::spi::{Operation, SpiDevice};

use crate::node::ReadValue;

/// TMP102 on I2C: reads the temperature register (pointer 0x00) in 12-bit mode,
/// 0.0625 °C per LSB, two's complement, left-justified in two bytes.
pub struct Tmp102<I> {
    i2c: I,
    address: u8,
}

impl<I: I2c> Tmp102<I> {
    /// Address 0x48..=0x4B depending on the ADD0 pin.
    pub fn new(i2c: I, address: u8) -> Self {
        Tmp102 { i2c, address }
    }

    /// Temperature in °C.
    pub fn read_celsius(&mut self) -> Result<f32, I::Error> {
        let mut buf = [0u8; 2];
        self.i2c.write_read(self.address, &[0x00], &mut buf)?;
        let raw = i16::from_be_bytes(buf) >> 4;
        Ok(raw as f32 * 0.0625)
    }

    pub fn release(self) -> I {
        self.i2c
    }
}

impl<I: I2c> ReadValue for Tmp102<I> {
    type Error = I::Error;
    fn read_value(&mut self) -> Result<f32, I::Error> {
        self.read_celsius()
    }
}

/// One single-ended channel of an MCP3008 on SPI, scaled to volts: start bit, single-ended
/// flag and channel in the first two bytes, the 10-bit result in the last two received bytes.
pub struct Mcp3008<S> {
    spi: S,
    channel: u8,
    vref: f32,
}

impl<S: SpiDevice> Mcp3008<S> {
    /// `channel` 0..=7 (higher bits are ignored); `vref` the reference voltage.
    pub fn new(spi: S, channel: u8, vref: f32) -> Self {
        Mcp3008 { spi, channel: channel & 0x07, vref }
    }

    /// The raw 10-bit conversion result.
    pub fn read_raw(&mut self) -> Result<u16, S::Error> {
        let tx = [0x01, 0x80 | (self.channel << 4), 0x00];
        let mut rx = [0u8; 3];
        self.spi.transaction(&mut [Operation::Transfer(&mut rx, &tx)])?;
        Ok((u16::from(rx[1] & 0x03) << 8) | u16::from(rx[2]))
    }

    pub fn release(self) -> S {
        self.spi
    }
}

impl<S: SpiDevice> ReadValue for Mcp3008<S> {
    type Error = S::Error;
    fn read_value(&mut self) -> Result<f32, S::Error> {
        Ok(f32::from(self.read_raw()?) * self.vref / 1023.0)
    }
}

/// A sensor read by a closure.
pub struct FnSensor<F>(pub F);

impl<F: FnMut() -> Result<f32, E>, E> ReadValue for FnSensor<F> {
    type Error = E;
    fn read_value(&mut self) -> Result<f32, E> {
        (self.0)()
    }
}
