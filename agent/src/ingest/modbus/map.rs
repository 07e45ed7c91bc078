//! The register map, pure: which read requests a poll group needs, and how their replies
//! become values. No I/O here; [`super::poll`] sends the requests.
//!
//! # Coalescing ([`plan`])
//!
//! Points of one table and one poll group are sorted by address and merged greedily into
//! [`ReadRequest`]s. A point joins the current request when
//! - coalescing is on,
//! - the request would still ask for at most `max_registers_per_request` registers
//!   (`max_bits_per_request` bits),
//! - the run of unmapped addresses it bridges is at most `max_gap`, and
//! - that run touches none of the device's configured `gaps` (addresses it rejects).
//!
//! Overlapping points (several bits of one packed register, one register read two ways) share
//! the request. With coalescing off every point is its own request (the benchmark's baseline).
//!
//! # Decoding ([`decode`])
//!
//! A multi-register value is assembled from its registers in `word_order` (big: first register
//! most significant), each register's two bytes in `byte_order` (big: high byte first), then
//! read as the point's type and scaled: `raw * scale + offset`. A reply shorter than what was
//! asked is a [`ReplyError`]. The value is then checked like every source's
//! (`ingest::decode::check_value`: a NaN or infinite float is `non_finite`, a magnitude beyond
//! `validation.max_abs_value` is `out_of_range`) by the poller.

use crate::config::modbus::{GapRange, ModbusDevice, ModbusPoint, Order, Table, ValueType};

/// One read request: `count` registers (or bits) of `table` from `address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub table: Table,
    pub address: u16,
    pub count: u16,
    /// Indexes into the device's `points` that this request covers.
    pub points: Vec<usize>,
}

impl ReadRequest {
    /// `holding 32+4`: where the request reads, for logs and DLQ records.
    pub fn describe(&self) -> String {
        format!("{} {}+{}", self.table.as_str(), self.address, self.count)
    }
}

/// Limits that shape the requests of one device.
#[derive(Debug, Clone)]
pub struct PlanLimits<'a> {
    pub coalesce: bool,
    pub max_registers: u16,
    pub max_bits: u16,
    pub max_gap: u16,
    pub gaps: &'a [GapRange],
}

impl<'a> PlanLimits<'a> {
    pub fn of(device: &'a ModbusDevice) -> PlanLimits<'a> {
        PlanLimits {
            coalesce: device.coalesce,
            max_registers: device.max_registers_per_request,
            max_bits: device.max_bits_per_request,
            max_gap: device.max_gap,
            gaps: &device.gaps,
        }
    }
}

/// The read requests for the points `selected` (indexes into `points`), ordered by table and
/// address. Every selected point is covered by exactly one request, which holds all of its
/// registers.
pub fn plan(points: &[ModbusPoint], selected: &[usize], limits: &PlanLimits<'_>) -> Vec<ReadRequest> {
    let mut order: Vec<usize> = selected.to_vec();
    order.sort_by_key(|&i| (points[i].table, points[i].address, points[i].value_type.width()));
    let mut out: Vec<ReadRequest> = Vec::new();
    for i in order {
        let p = &points[i];
        let (start, end) = (u32::from(p.address), u32::from(p.address) + u32::from(p.value_type.width()));
        if let Some(cur) = out.last_mut() {
            let cur_end = u32::from(cur.address) + u32::from(cur.count);
            let limit = u32::from(if p.table.is_bits() { limits.max_bits } else { limits.max_registers });
            let new_end = cur_end.max(end);
            let bridged_ok = start <= cur_end
                || (start - cur_end <= u32::from(limits.max_gap)
                    && !limits.gaps.iter().any(|g| g.table == p.table && u32::from(g.from) < start && u32::from(g.to) >= cur_end));
            if limits.coalesce && cur.table == p.table && new_end - u32::from(cur.address) <= limit && bridged_ok {
                // Fits: `new_end - address <= limit <= 2000`, so the count fits u16.
                cur.count = (new_end - u32::from(cur.address)) as u16;
                cur.points.push(i);
                continue;
            }
        }
        // `end - start` is the type's width (1..=4).
        out.push(ReadRequest { table: p.table, address: p.address, count: (end - start) as u16, points: vec![i] });
    }
    out
}

/// The reply to a read request, as tokio-modbus returns it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
}

/// A reply that does not fit its request (malformed).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplyError {
    #[error("asked for {asked} {kind}, got {got}")]
    Short { asked: u16, got: usize, kind: &'static str },
    #[error("asked for {asked}, got {got}")]
    WrongKind { asked: &'static str, got: &'static str },
}

/// Checks that `reply` fits `request` (length, kind). Bit replies may be padded to whole bytes.
pub fn check_reply(request: &ReadRequest, reply: &Reply) -> Result<(), ReplyError> {
    match (request.table.is_bits(), reply) {
        (false, Reply::Registers(w)) if w.len() == usize::from(request.count) => Ok(()),
        (false, Reply::Registers(w)) => Err(ReplyError::Short { asked: request.count, got: w.len(), kind: "registers" }),
        (true, Reply::Bits(b)) if b.len() >= usize::from(request.count) => Ok(()),
        (true, Reply::Bits(b)) => Err(ReplyError::Short { asked: request.count, got: b.len(), kind: "bits" }),
        (true, Reply::Registers(_)) => Err(ReplyError::WrongKind { asked: "bits", got: "registers" }),
        (false, Reply::Bits(_)) => Err(ReplyError::WrongKind { asked: "registers", got: "bits" }),
    }
}

/// The value of `point` inside a reply that [`check_reply`] accepted for `request`, scaled;
/// possibly NaN or infinite (a float register), which the caller's value check refuses.
pub fn decode(point: &ModbusPoint, request: &ReadRequest, reply: &Reply) -> f64 {
    // Points of a request start at or after its address (see `plan`).
    let offset = usize::from(point.address.saturating_sub(request.address));
    let raw = match reply {
        Reply::Bits(bits) => f64::from(u8::from(bits.get(offset).copied().unwrap_or(false))),
        Reply::Registers(words) => {
            let width = usize::from(point.value_type.width());
            let words = words.get(offset..offset + width).unwrap_or(&[]);
            raw_value(point, words)
        }
    };
    raw * point.scale + point.offset
}

/// The unscaled value of `words` (exactly the point's width; fewer only if the caller broke
/// the [`check_reply`] contract, which yields 0 for the missing registers).
fn raw_value(point: &ModbusPoint, words: &[u16]) -> f64 {
    let width = usize::from(point.value_type.width());
    let mut bytes = [0u8; 8];
    for i in 0..width {
        let w = words.get(i).copied().unwrap_or(0);
        let w = match point.byte_order {
            Order::Big => w,
            Order::Little => w.swap_bytes(),
        };
        let slot = match point.word_order {
            Order::Big => i,
            Order::Little => width - 1 - i,
        };
        bytes[slot * 2..slot * 2 + 2].copy_from_slice(&w.to_be_bytes());
    }
    let b2 = [bytes[0], bytes[1]];
    let b4 = [bytes[0], bytes[1], bytes[2], bytes[3]];
    match point.value_type {
        ValueType::U16 => f64::from(u16::from_be_bytes(b2)),
        ValueType::I16 => f64::from(i16::from_be_bytes(b2)),
        ValueType::U32 => f64::from(u32::from_be_bytes(b4)),
        ValueType::I32 => f64::from(i32::from_be_bytes(b4)),
        ValueType::F32 => f64::from(f32::from_be_bytes(b4)),
        ValueType::U64 => u64::from_be_bytes(bytes) as f64,
        ValueType::F64 => f64::from_be_bytes(bytes),
        ValueType::Bit => f64::from((u16::from_be_bytes(b2) >> point.bit.unwrap_or(0)) & 1),
        // A bool point on a register table is rejected by config validation.
        ValueType::Bool => f64::from(u8::from(u16::from_be_bytes(b2) != 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(table: Table, address: u16, value_type: ValueType) -> ModbusPoint {
        ModbusPoint {
            entity: format!("p{address}"),
            table,
            address,
            value_type,
            bit: None,
            word_order: Order::Big,
            byte_order: Order::Big,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            group: None,
        }
    }

    fn limits(coalesce: bool, max_registers: u16, max_gap: u16, gaps: &[GapRange]) -> PlanLimits<'_> {
        PlanLimits { coalesce, max_registers, max_bits: 2000, max_gap, gaps }
    }

    fn spans(reqs: &[ReadRequest]) -> Vec<(Table, u16, u16)> {
        reqs.iter().map(|r| (r.table, r.address, r.count)).collect()
    }

    #[test]
    fn adjacent_points_merge_and_tables_stay_apart() {
        let pts = vec![
            point(Table::Holding, 10, ValueType::F32),
            point(Table::Holding, 12, ValueType::U16),
            point(Table::Holding, 13, ValueType::F64),
            point(Table::Input, 14, ValueType::U16),
            point(Table::Coil, 0, ValueType::Bool),
            point(Table::Coil, 7, ValueType::Bool),
        ];
        let all: Vec<usize> = (0..pts.len()).collect();
        let reqs = plan(&pts, &all, &limits(true, 125, 16, &[]));
        assert_eq!(spans(&reqs), vec![(Table::Coil, 0, 8), (Table::Holding, 10, 7), (Table::Input, 14, 1)]);
        assert_eq!(reqs[1].points, vec![0, 1, 2]);
        let off = plan(&pts, &all, &limits(false, 125, 16, &[]));
        assert_eq!(off.len(), 6);
        assert!(off.iter().all(|r| r.points.len() == 1));
    }

    #[test]
    fn never_exceeds_max_registers_and_splits_at_the_limit() {
        let pts: Vec<ModbusPoint> = (0..100).map(|i| point(Table::Holding, i * 2, ValueType::U32)).collect();
        let all: Vec<usize> = (0..pts.len()).collect();
        for max in [2, 3, 10, 64, 125] {
            let reqs = plan(&pts, &all, &limits(true, max, 16, &[]));
            assert!(reqs.iter().all(|r| r.count <= max), "max {max}: {:?}", spans(&reqs));
            let covered: usize = reqs.iter().map(|r| r.points.len()).sum();
            assert_eq!(covered, 100);
            // Greedy packing: every request but the last is as full as whole values allow.
            let per = (max / 2).max(1) as usize;
            assert_eq!(reqs.len(), 100usize.div_ceil(per), "max {max}");
        }
    }

    #[test]
    fn gaps_are_bridged_only_up_to_max_gap_and_never_over_rejected_ranges() {
        let pts = vec![point(Table::Holding, 0, ValueType::U16), point(Table::Holding, 5, ValueType::U16), point(Table::Holding, 30, ValueType::U16)];
        let all = [0, 1, 2];
        assert_eq!(spans(&plan(&pts, &all, &limits(true, 125, 3, &[]))), vec![(Table::Holding, 0, 1), (Table::Holding, 5, 1), (Table::Holding, 30, 1)]);
        assert_eq!(spans(&plan(&pts, &all, &limits(true, 125, 4, &[]))), vec![(Table::Holding, 0, 6), (Table::Holding, 30, 1)]);
        assert_eq!(spans(&plan(&pts, &all, &limits(true, 125, 23, &[]))), vec![(Table::Holding, 0, 6), (Table::Holding, 30, 1)]);
        assert_eq!(spans(&plan(&pts, &all, &limits(true, 125, 24, &[]))), vec![(Table::Holding, 0, 31)]);
        assert_eq!(spans(&plan(&pts, &all, &limits(true, 125, 100, &[]))), vec![(Table::Holding, 0, 31)]);
        let rejected = [GapRange { table: Table::Holding, from: 20, to: 21 }];
        assert_eq!(spans(&plan(&pts, &all, &limits(true, 125, 100, &rejected))), vec![(Table::Holding, 0, 6), (Table::Holding, 30, 1)]);
        // A rejected range in another table does not matter.
        let other = [GapRange { table: Table::Input, from: 20, to: 21 }];
        assert_eq!(spans(&plan(&pts, &all, &limits(true, 125, 100, &other))), vec![(Table::Holding, 0, 31)]);
    }

    #[test]
    fn overlapping_bits_share_a_register() {
        let mut a = point(Table::Holding, 3, ValueType::Bit);
        a.bit = Some(0);
        let mut b = point(Table::Holding, 3, ValueType::Bit);
        b.bit = Some(15);
        let reqs = plan(&[a.clone(), b.clone()], &[0, 1], &limits(true, 125, 0, &[]));
        assert_eq!(spans(&reqs), vec![(Table::Holding, 3, 1)]);
        let reply = Reply::Registers(vec![0x8001]);
        assert_eq!(decode(&a, &reqs[0], &reply), 1.0);
        assert_eq!(decode(&b, &reqs[0], &reply), 1.0);
        let reply = Reply::Registers(vec![0x0002]);
        assert_eq!(decode(&a, &reqs[0], &reply), 0.0);
    }

    fn dec(ty: ValueType, word: Order, byte: Order, words: &[u16]) -> f64 {
        let mut p = point(Table::Holding, 0, ty);
        p.word_order = word;
        p.byte_order = byte;
        let req = ReadRequest { table: Table::Holding, address: 0, count: words.len() as u16, points: vec![0] };
        decode(&p, &req, &Reply::Registers(words.to_vec()))
    }

    #[test]
    fn every_type_and_order() {
        use Order::{Big as B, Little as L};
        assert_eq!(dec(ValueType::U16, B, B, &[0xFFFE]), 65534.0);
        assert_eq!(dec(ValueType::I16, B, B, &[0xFFFE]), -2.0);
        assert_eq!(dec(ValueType::I16, B, L, &[0xFEFF]), -2.0);
        assert_eq!(dec(ValueType::U32, B, B, &[0x0009, 0x6A29]), 617001.0);
        assert_eq!(dec(ValueType::U32, L, B, &[0x6A29, 0x0009]), 617001.0);
        assert_eq!(dec(ValueType::I32, B, B, &[0xFFFF, 0xFFFD]), -3.0);
        // 21.5f32 = 0x41AC0000: ABCD, CDAB, BADC, DCBA.
        assert_eq!(dec(ValueType::F32, B, B, &[0x41AC, 0x0000]), 21.5);
        assert_eq!(dec(ValueType::F32, L, B, &[0x0000, 0x41AC]), 21.5);
        assert_eq!(dec(ValueType::F32, B, L, &[0xAC41, 0x0000]), 21.5);
        assert_eq!(dec(ValueType::F32, L, L, &[0x0000, 0xAC41]), 21.5);
        let x = (-1234.5678f64).to_bits();
        let w = [(x >> 48) as u16, (x >> 32) as u16, (x >> 16) as u16, x as u16];
        assert_eq!(dec(ValueType::F64, B, B, &w), -1234.5678);
        assert_eq!(dec(ValueType::F64, L, B, &[w[3], w[2], w[1], w[0]]), -1234.5678);
        assert_eq!(dec(ValueType::U64, B, B, &[0, 0, 1, 2]), 65538.0);
        assert_eq!(dec(ValueType::U64, L, B, &[2, 1, 0, 0]), 65538.0);
    }

    #[test]
    fn scale_offset_and_position_inside_the_request() {
        let mut p = point(Table::Input, 12, ValueType::I16);
        p.scale = 0.1;
        p.offset = -40.0;
        let req = ReadRequest { table: Table::Input, address: 10, count: 4, points: vec![0] };
        let v = decode(&p, &req, &Reply::Registers(vec![1, 2, 655, 4]));
        assert!((v - 25.5).abs() < 1e-9, "{v}");
        let coil = point(Table::Coil, 9, ValueType::Bool);
        let req = ReadRequest { table: Table::Coil, address: 8, count: 2, points: vec![0] };
        // Bit replies come padded to whole bytes.
        let reply = Reply::Bits(vec![false, true, false, false, false, false, false, false]);
        assert_eq!(check_reply(&req, &reply), Ok(()));
        assert_eq!(decode(&coil, &req, &reply), 1.0);
    }

    #[test]
    fn short_or_wrong_replies_are_errors_and_nan_registers_decode_as_nan() {
        let req = ReadRequest { table: Table::Holding, address: 0, count: 2, points: vec![0] };
        assert!(matches!(check_reply(&req, &Reply::Registers(vec![1])), Err(ReplyError::Short { .. })));
        assert!(matches!(check_reply(&req, &Reply::Registers(vec![1, 2, 3])), Err(ReplyError::Short { .. })));
        assert!(matches!(check_reply(&req, &Reply::Bits(vec![true; 8])), Err(ReplyError::WrongKind { .. })));
        let bits = ReadRequest { table: Table::Coil, address: 0, count: 9, points: vec![0] };
        assert!(matches!(check_reply(&bits, &Reply::Bits(vec![true; 8])), Err(ReplyError::Short { .. })));
        let p = point(Table::Holding, 0, ValueType::F32);
        let nan = Reply::Registers(vec![0x7FC0, 0x0000]);
        assert!(decode(&p, &req, &nan).is_nan(), "a NaN register decodes as NaN; the poller's check_value dead-letters it");
    }
}
