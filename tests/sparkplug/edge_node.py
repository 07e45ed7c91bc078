"""An independent Sparkplug B edge node for tests/sparkplug.rs.

Builds payloads with Eclipse Tahu's Python helper (`sparkplug_b.py`: its own seq/bdSeq counters,
two's complement for signed integers) and the protoc-generated `sparkplug_b_pb2` from the
official sparkplug_b.proto, both as shipped in PyPI `mqtt-spb-wrapper` (pinned in
tests/peers/install.sh). None of the agent's code is involved.

  edge_node.py make DIR NOW_MS   writes DIR/<step>.bin (one payload per message, see STEPS)
  edge_node.py decode            reads one payload as hex on stdin, prints it as JSON
"""
import json
import sys

from google.protobuf.json_format import MessageToDict
from mqtt_spb_wrapper.spb_protobuf import sparkplug_b as spb
from mqtt_spb_wrapper.spb_protobuf.sparkplug_b_pb2 import Payload

T = spb.MetricDataType


def make(out, now):
    def write(name, payload):
        with open(f"{out}/{name}.bin", "wb") as f:
            f.write(payload.SerializeToString())

    # The will of a previous session (bdSeq 0, no seq): Tahu's helper numbers deaths 0, 1, ...
    # and its NBIRTH carries the bdSeq of the *next* death (`--bdSeq` is no decrement in
    # Python), so this one is stale for the NBIRTH below and the next one matches it.
    stale_death = spb.getNodeDeathPayload()
    # NBIRTH: seq 0, bdSeq, node metrics with aliases and the rebirth control.
    birth = spb.getNodeBirthPayload()
    birth.timestamp = now
    spb.addMetric(birth, "Node Control/Rebirth", None, T.Boolean, False, now)
    spb.addMetric(birth, "Line Speed", 1, T.Double, 1.5, now)
    spb.addMetric(birth, "Firmware", 2, T.String, "1.0.3", now)
    write("nbirth", birth)
    # DBIRTH (seq 1): a device with a signed integer, a float and a boolean.
    dbirth = spb.getDeviceBirthPayload()
    spb.addMetric(dbirth, "Hydraulics/Pressure", 10, T.Int32, -12, now)
    spb.addMetric(dbirth, "Temp", 11, T.Float, 20.5, now)
    spb.addMetric(dbirth, "Running", 12, T.Boolean, True, now)
    write("dbirth", dbirth)
    # NDATA (seq 2), DDATA (seq 3): by alias only, as real nodes send them.
    ndata = spb.getDdataPayload()
    spb.addMetric(ndata, None, 1, T.Double, 2.25, now + 1000)
    write("ndata", ndata)
    ddata = spb.getDdataPayload()
    spb.addMetric(ddata, None, 10, T.Int32, -7, now + 1000)
    spb.addMetric(ddata, None, 11, T.Float, 21.75, now + 1000)
    spb.addMetric(ddata, None, 12, T.Boolean, False, now + 1000)
    write("ddata", ddata)
    # Two messages lost on the way (seq 4, 5), then NDATA seq 6.
    spb.getSeqNum()
    spb.getSeqNum()
    gap = spb.getDdataPayload()
    spb.addMetric(gap, None, 1, T.Double, 3.0, now + 2000)
    write("ndata_after_gap", gap)
    write("ndeath_stale", stale_death)
    write("ndeath", spb.getNodeDeathPayload())


def decode():
    p = Payload()
    p.ParseFromString(bytes.fromhex(sys.stdin.read().strip()))
    print(json.dumps(MessageToDict(p, preserving_proto_field_name=True)))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]))
    else:
        decode()
