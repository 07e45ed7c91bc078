"""Serves pymodbus simulator devices (pymodbus 3.16.1) on Modbus TCP or Modbus RTU.

Started by vigil-test-harness (`ModbusSim`). The datastore is pymodbus' own simulator
(`ModbusSimulatorContext`, the JSON device format of `pymodbus.simulator`, including the
`increment` action); the servers are pymodbus' `ModbusTcpServer` / `ModbusSerialServer`.
`pymodbus.simulator` itself serves one device per process; a serial line carries one server,
so several unit ids on one bus need several devices in one server, which is what this does.

    python modbus_sim.py --config sim.json (--tcp PORT | --serial PATH [--baud 19200 --parity N])

`sim.json`: {"units": {"1": <device>, "2": <device>}} with <device> as in the simulator's
`device_list`. Unit ids that are not listed get no reply (`ignore_missing_devices`), like a
silent RTU slave. Prints `modbus-sim ready` once the server listens.
"""

import argparse
import asyncio
import json
import logging
import sys

from pymodbus.datastore import ModbusServerContext, ModbusSimulatorContext
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--tcp", type=int)
    parser.add_argument("--serial")
    parser.add_argument("--baud", type=int, default=19200)
    parser.add_argument("--parity", default="N")
    parser.add_argument("--stopbits", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with open(args.config, encoding="utf-8") as f:
        config = json.load(f)
    devices = {int(k): ModbusSimulatorContext(v, None) for k, v in config["units"].items()}
    context = ModbusServerContext(devices=devices, single=False)
    if args.tcp is not None:
        server = ModbusTcpServer(context, framer=FramerType.SOCKET, address=("127.0.0.1", args.tcp),
                                 ignore_missing_devices=True)
    else:
        server = ModbusSerialServer(context, framer=FramerType.RTU, port=args.serial,
                                    baudrate=args.baud, parity=args.parity, stopbits=args.stopbits,
                                    bytesize=8, timeout=1, ignore_missing_devices=True)
    await server.serve_forever(background=True)
    print("modbus-sim ready", flush=True)
    await server.serving


if __name__ == "__main__":
    asyncio.run(main())
