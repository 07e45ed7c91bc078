//! The harness against the real pymodbus simulator, socat and mbpoll.

use vigil_test_harness::*;

/// Unit 1 and unit 2 with different values in holding register 2.
fn units() -> String {
    let dev = |v: u16| {
        format!(
            r#"{{"setup": {{"co size": 20, "di size": 20, "hr size": 20, "ir size": 20, "shared blocks": true, "type exception": false,
              "defaults": {{"value": {{"bits": 0, "uint16": 0, "uint32": 0, "float32": 0.0, "float64": 0.0, "string": " "}},
                           "action": {{"bits": null, "uint16": null, "uint32": null, "float32": null, "float64": null, "string": null}}}}}},
              "invalid": [], "write": [[0, 19]], "bits": [], "uint16": [{{"addr": [0, 19], "value": {v}}}],
              "uint32": [], "float32": [], "float64": [], "string": [], "repeat": []}}"#
        )
    };
    format!(r#"{{"units": {{"1": {}, "2": {}}}}}"#, dev(1234), dev(4321))
}

#[test]
fn tcp_simulator_serves_units_and_restarts_on_the_same_port() {
    let mut sim = ModbusSim::start_tcp(&units()).unwrap();
    let link = MbLink::Tcp(sim.port());
    assert_eq!(mbpoll_read(link, 1, MbTable::Holding, 2, 2).unwrap(), vec![1234, 1234]);
    assert_eq!(mbpoll_read(link, 2, MbTable::Holding, 2, 1).unwrap(), vec![4321]);
    mbpoll_write_registers(sim.port(), 1, 3, &[7]).unwrap();
    assert_eq!(mbpoll_read(link, 1, MbTable::Holding, 2, 2).unwrap(), vec![1234, 7]);
    assert!(mbpoll_read(link, 9, MbTable::Holding, 2, 1).is_err(), "unit 9 does not exist");
    sim.stop().unwrap();
    assert!(mbpoll_read(link, 1, MbTable::Holding, 2, 1).is_err());
    sim.start_again().unwrap();
    assert_eq!(mbpoll_read(link, 1, MbTable::Holding, 3, 1).unwrap(), vec![1234], "fresh registers after a restart");
}

#[test]
fn rtu_simulator_on_a_socat_pty_pair_serves_two_units() {
    let pty = PtyPair::start().unwrap();
    let _sim = ModbusSim::start_rtu(&units(), &pty.b()).unwrap();
    let link = MbLink::Rtu(&pty.a());
    assert_eq!(mbpoll_read(link, 1, MbTable::Holding, 0, 1).unwrap(), vec![1234]);
    assert_eq!(mbpoll_read(link, 2, MbTable::Holding, 0, 1).unwrap(), vec![4321]);
}
