//! `[ingest.modbus]`: Modbus TCP / RTU devices, their register maps and poll groups, and
//! Modbus write-back rules for alerts.
//!
//! Every field's doc comment is the user-facing documentation of its key (`config/vigil.toml`
//! shows them with examples). Addresses are the 0-based protocol addresses of the Modbus
//! PDU (reference `40001` is holding register address 0). Checks that need more than a type
//! ([`ModbusConfig::validate`]) report the dotted key of the offending entry.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Upper bound of every Modbus duration setting (ms): keeps tick and backoff arithmetic far from
/// overflow.
const DAY_MS: u64 = 86_400_000;

/// `[ingest.modbus]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// `[[ingest.modbus.devices]]`: one Modbus device (a unit id on a TCP connection or on a
    /// serial bus) each.
    #[serde(default)]
    pub devices: Vec<ModbusDevice>,
    /// `[[ingest.modbus.write_back]]`: coils or registers written when an alert is raised.
    /// Without rules the agent never writes to a device.
    #[serde(default)]
    pub write_back: Vec<WriteBackRule>,
}

/// `[[ingest.modbus.devices]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDevice {
    /// Device name: used in logs, metrics, DLQ records and by write-back rules. Unique.
    pub name: String,
    /// Modbus TCP: `host:port` of the device or gateway. Each TCP device has its own
    /// connection. Exactly one of `tcp` and `serial_port` must be set.
    #[serde(default)]
    pub tcp: Option<String>,
    /// Modbus RTU: the serial device (e.g. `/dev/ttyUSB0`). Devices with the same
    /// `serial_port` share one bus: their requests are sent one at a time, and their serial
    /// settings must agree.
    #[serde(default)]
    pub serial_port: Option<PathBuf>,
    /// RTU baud rate.
    #[serde(default = "defaults::baud_rate")]
    pub baud_rate: u32,
    /// RTU parity: `none`, `even` (the Modbus default) or `odd`.
    #[serde(default)]
    pub parity: Parity,
    /// RTU stop bits: 1 or 2.
    #[serde(default = "defaults::stop_bits")]
    pub stop_bits: u8,
    /// Modbus unit id (slave address), 0–247 (TCP devices often ignore it; 255 is common too).
    #[serde(default = "defaults::unit_id")]
    pub unit_id: u8,
    /// Poll interval in milliseconds of points without a `group`.
    #[serde(default = "defaults::poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How long one request waits for its reply, in milliseconds.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Further attempts of a request that got no (or a garbled) reply, before the poll fails.
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// After a poll in which the device did not answer at all, it is `down` and not polled
    /// for this long (ms); the pause doubles with every failed attempt, up to `backoff_max_ms`.
    #[serde(default = "defaults::backoff_min_ms")]
    pub backoff_min_ms: u64,
    /// Upper bound of the pause between attempts to reach a `down` device (ms).
    #[serde(default = "defaults::backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Merge adjacent points of one table and poll group into as few read requests as possible.
    #[serde(default = "defaults::yes")]
    pub coalesce: bool,
    /// Most registers one read request asks for (1–125; some devices fail well below 125).
    #[serde(default = "defaults::max_registers_per_request")]
    pub max_registers_per_request: u16,
    /// Most coils / discrete inputs one read request asks for (1–2000).
    #[serde(default = "defaults::max_bits_per_request")]
    pub max_bits_per_request: u16,
    /// Largest run of unmapped addresses a merged request may read over (and discard).
    #[serde(default = "defaults::max_gap")]
    pub max_gap: u16,
    /// Address ranges the device rejects: no request ever covers them, e.g.
    /// `[{ table = "holding", from = 100, to = 119 }]` (inclusive).
    #[serde(default)]
    pub gaps: Vec<GapRange>,
    /// `[[ingest.modbus.devices.poll_groups]]`: named poll intervals for points.
    #[serde(default)]
    pub poll_groups: Vec<PollGroup>,
    /// `[[ingest.modbus.devices.points]]`: the register map.
    #[serde(default)]
    pub points: Vec<ModbusPoint>,
}

/// Serial parity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    None,
    #[default]
    Even,
    Odd,
}

/// An inclusive address range of one table that must never be read.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GapRange {
    pub table: Table,
    pub from: u16,
    pub to: u16,
}

/// `[[ingest.modbus.devices.poll_groups]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PollGroup {
    /// Group name, referenced by points' `group`.
    pub name: String,
    /// Poll interval in milliseconds. Polls run on fixed ticks from the agent's start (no
    /// drift); a tick that passes while the previous poll is still running is skipped and
    /// counted (`vigil_modbus_missed_ticks`), never made up in a burst.
    pub interval_ms: u64,
}

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Read/write bits (function 1; written with 5).
    Coil,
    /// Read-only bits (function 2).
    Discrete,
    /// Read/write 16-bit registers (function 3; written with 6).
    Holding,
    /// Read-only 16-bit registers (function 4).
    Input,
}

impl Table {
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }

    /// Coils and discrete inputs hold bits; the others 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }
}

/// How a point's registers become a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    U16,
    I16,
    U32,
    I32,
    /// Values above 2^53 lose precision as readings are f64.
    U64,
    F32,
    F64,
    /// A coil or discrete input (0 or 1).
    Bool,
    /// One bit (`bit`, 0 = least significant) of a packed 16-bit register (0 or 1).
    Bit,
}

impl ValueType {
    /// Registers (or bits, for `bool`) the type occupies.
    pub fn width(self) -> u16 {
        match self {
            ValueType::U16 | ValueType::I16 | ValueType::Bool | ValueType::Bit => 1,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            ValueType::U64 | ValueType::F64 => 4,
        }
    }
}

/// Byte order inside each register, or register (word) order inside a multi-register value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Most significant first (the Modbus convention; "ABCD").
    #[default]
    Big,
    /// Least significant first (word order "CDAB", byte order "BADC").
    Little,
}

/// `[[ingest.modbus.devices.points]]`: one value in the register map, one entity.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusPoint {
    /// The entity id of the readings (e.g. `line1.press3.temp`).
    pub entity: String,
    /// `holding`, `input`, `coil` or `discrete`.
    pub table: Table,
    /// 0-based address of the (first) register or bit.
    pub address: u16,
    /// `u16`, `i16`, `u32`, `i32`, `u64`, `f32`, `f64` (registers), `bit` (one bit of a
    /// register) or `bool` (coils and discrete inputs).
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// Bit number 0–15 for `type = "bit"`.
    #[serde(default)]
    pub bit: Option<u8>,
    /// Register order of multi-register values: `big` (first register most significant) or
    /// `little`.
    #[serde(default)]
    pub word_order: Order,
    /// Byte order inside each register: `big` (the Modbus convention) or `little`.
    #[serde(default)]
    pub byte_order: Order,
    /// The reading is `raw * scale + offset`.
    #[serde(default = "defaults::scale")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    /// Engineering unit after scaling (e.g. `degC`, `bar`); shown by `vigil check-config`.
    #[serde(default)]
    pub unit: Option<String>,
    /// Poll group name; default: the device's `poll_interval_ms`.
    #[serde(default)]
    pub group: Option<String>,
}

/// `[[ingest.modbus.write_back]]`: when an alert is raised for `entity`, write `value` to
/// `address` of `table` on `device`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WriteBackRule {
    /// The entity whose alert triggers the write (`*` = any entity).
    pub entity: String,
    /// Device name (from `[[ingest.modbus.devices]]`).
    pub device: String,
    /// `coil` (function 5) or `holding` (function 6).
    pub table: Table,
    /// 0-based coil or register address.
    pub address: u16,
    /// Value written: 0 or 1 for a coil, 0–65535 for a register.
    pub value: u16,
    /// At most one write per this many seconds for this rule; alerts in between are not
    /// written (the refusal is audited).
    #[serde(default = "defaults::min_interval_s")]
    pub min_interval_s: u64,
}

impl ModbusConfig {
    /// Cross-field checks. Returns `(dotted key, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut names = HashSet::new();
        let mut buses: HashMap<&PathBuf, (u32, Parity, u8, usize)> = HashMap::new();
        for (i, d) in self.devices.iter().enumerate() {
            let key = |k: &str| format!("ingest.modbus.devices[{i}].{k}");
            let fail = |k: &str, m: String| Err((key(k), m));
            if d.name.is_empty() || !names.insert(d.name.as_str()) {
                return fail("name", format!("`{}` must be non-empty and unique", d.name));
            }
            match (&d.tcp, &d.serial_port) {
                (Some(_), Some(_)) | (None, None) => {
                    return fail("tcp", "set exactly one of `tcp` (host:port) and `serial_port`".into());
                }
                (Some(addr), None) => {
                    if addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
                        return fail("tcp", format!("`{addr}` is not host:port"));
                    }
                }
                (None, Some(port)) => {
                    if crate::ingest::serial::tty::speed(d.baud_rate).is_none() {
                        return fail("baud_rate", format!("{} is not a supported baud rate (1200 ... 4000000, standard rates)", d.baud_rate));
                    }
                    if !matches!(d.stop_bits, 1 | 2) {
                        return fail("stop_bits", "must be 1 or 2".into());
                    }
                    let settings = (d.baud_rate, d.parity, d.stop_bits, i);
                    if let Some(other) = buses.insert(port, settings) {
                        if (other.0, other.1, other.2) != (settings.0, settings.1, settings.2) {
                            return fail("baud_rate", format!("serial settings differ from devices[{}] on the same port {}", other.3, port.display()));
                        }
                    }
                }
            }
            if d.unit_id > 247 && d.unit_id != 255 {
                return fail("unit_id", "must be 0-247 (or 255 for TCP)".into());
            }
            if d.timeout_ms == 0 || d.timeout_ms > DAY_MS {
                return fail("timeout_ms", "must be between 1 and 86400000 (a day)".into());
            }
            if d.poll_interval_ms == 0 || d.poll_interval_ms > DAY_MS {
                return fail("poll_interval_ms", "must be between 1 and 86400000 (a day)".into());
            }
            if d.backoff_min_ms == 0 || d.backoff_min_ms > d.backoff_max_ms || d.backoff_max_ms > DAY_MS {
                return fail("backoff_min_ms", "must be > 0 and <= backoff_max_ms <= 86400000 (a day)".into());
            }
            if d.retries > 10 {
                return fail("retries", "must be 0-10".into());
            }
            if !(1..=125).contains(&d.max_registers_per_request) {
                return fail("max_registers_per_request", "must be 1-125".into());
            }
            if !(1..=2000).contains(&d.max_bits_per_request) {
                return fail("max_bits_per_request", "must be 1-2000".into());
            }
            for (g, gap) in d.gaps.iter().enumerate() {
                if gap.from > gap.to {
                    return fail(&format!("gaps[{g}]"), "`from` must be <= `to`".into());
                }
            }
            let mut groups = HashSet::new();
            for (g, group) in d.poll_groups.iter().enumerate() {
                if !groups.insert(group.name.as_str()) {
                    return fail(&format!("poll_groups[{g}].name"), format!("duplicate group `{}`", group.name));
                }
                if group.interval_ms == 0 || group.interval_ms > DAY_MS {
                    return fail(&format!("poll_groups[{g}].interval_ms"), "must be between 1 and 86400000 (a day)".into());
                }
            }
            if d.points.is_empty() {
                return fail("points", "a device needs at least one point".into());
            }
            for (p, point) in d.points.iter().enumerate() {
                let pkey = |k: &str| format!("points[{p}].{k}");
                point.check(d).map_err(|(k, m)| (key(&pkey(k)), m))?;
                if let Some(g) = &point.group {
                    if !groups.contains(g.as_str()) {
                        return fail(&pkey("group"), format!("no poll group `{g}` on this device"));
                    }
                }
            }
        }
        for (i, rule) in self.write_back.iter().enumerate() {
            let key = |k: &str| format!("ingest.modbus.write_back[{i}].{k}");
            if !self.devices.iter().any(|d| d.name == rule.device) {
                return Err((key("device"), format!("no Modbus device named `{}`", rule.device)));
            }
            match rule.table {
                Table::Coil if rule.value > 1 => return Err((key("value"), "a coil takes 0 or 1".into())),
                Table::Coil | Table::Holding => {}
                t => return Err((key("table"), format!("`{}` is read-only: use `coil` or `holding`", t.as_str()))),
            }
            if rule.entity.is_empty() {
                return Err((key("entity"), "must be an entity id or `*`".into()));
            }
        }
        Ok(())
    }
}

impl ModbusPoint {
    /// Checks one point against its device. Returns `(key inside the point, message)`.
    fn check(&self, device: &ModbusDevice) -> Result<(), (&'static str, String)> {
        if self.entity.is_empty() {
            return Err(("entity", "must not be empty".into()));
        }
        let t = self.value_type;
        if self.table.is_bits() != (t == ValueType::Bool) {
            let want = if self.table.is_bits() { "`bool`" } else { "a register type (u16 ... f64, bit)" };
            return Err(("type", format!("`{}` needs {want}", self.table.as_str())));
        }
        match (t, self.bit) {
            (ValueType::Bit, Some(b)) if b < 16 => {}
            (ValueType::Bit, _) => return Err(("bit", "`type = \"bit\"` needs `bit` = 0-15".into())),
            (_, Some(_)) => return Err(("bit", "only for `type = \"bit\"`".into())),
            _ => {}
        }
        if !self.scale.is_finite() || !self.offset.is_finite() || self.scale == 0.0 {
            return Err(("scale", "scale must be finite and non-zero, offset finite".into()));
        }
        let end = u32::from(self.address) + u32::from(t.width());
        if end > 65536 {
            return Err(("address", "the value runs past address 65535".into()));
        }
        let limit = if self.table.is_bits() { device.max_bits_per_request } else { device.max_registers_per_request };
        if t.width() > limit {
            return Err(("type", format!("needs {} registers, more than max_registers_per_request", t.width())));
        }
        for gap in device.gaps.iter().filter(|g| g.table == self.table) {
            if u32::from(self.address) <= u32::from(gap.to) && end > u32::from(gap.from) {
                return Err(("address", format!("inside the device's gap {}-{}", gap.from, gap.to)));
            }
        }
        Ok(())
    }
}

mod defaults {
    pub fn baud_rate() -> u32 {
        19200
    }
    pub fn stop_bits() -> u8 {
        1
    }
    pub fn unit_id() -> u8 {
        1
    }
    pub fn poll_interval_ms() -> u64 {
        1000
    }
    pub fn timeout_ms() -> u64 {
        1000
    }
    pub fn retries() -> u32 {
        2
    }
    pub fn backoff_min_ms() -> u64 {
        1000
    }
    pub fn backoff_max_ms() -> u64 {
        60_000
    }
    pub fn yes() -> bool {
        true
    }
    pub fn max_registers_per_request() -> u16 {
        125
    }
    pub fn max_bits_per_request() -> u16 {
        2000
    }
    pub fn max_gap() -> u16 {
        16
    }
    pub fn scale() -> f64 {
        1.0
    }
    pub fn min_interval_s() -> u64 {
        60
    }
}
