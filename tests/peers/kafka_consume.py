#!/usr/bin/env python3
"""Independent Kafka consumer for Vigil's tests (confluent-kafka / librdkafka, not Vigil's client).

Usage: kafka_consume.py [--ca PEM] BOOTSTRAP TIMEOUT_S MIN_RECORDS TOPIC [TOPIC...]

Reads every partition of every TOPIC from the beginning (explicit assignment, no consumer group:
tansu's group join is slow) until at least MIN_RECORDS records arrived in total and the topics
are drained, or TIMEOUT_S passes. With --ca PEM, connects over TLS trusting that CA. Prints one JSON object per record on stdout:
{"topic", "partition", "offset", "key", "headers": {name: text}, "value_hex", "timestamp_ms"}.
Exits 3 on timeout (after printing what it got), so the test sees the shortfall.
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition, OFFSET_BEGINNING


def main():
    args = sys.argv[1:]
    ca = None
    if args[:1] == ["--ca"]:
        ca, args = args[1], args[2:]
    bootstrap, timeout_s, min_records = args[0], float(args[1]), int(args[2])
    topics = args[3:]
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": "vigil-test-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    }
    if ca:
        conf.update({"security.protocol": "SSL", "ssl.ca.location": ca})
    c = Consumer(conf)
    deadline = time.monotonic() + timeout_s
    parts = []
    for t in topics:
        while True:
            md = c.list_topics(t, timeout=5)
            tm = md.topics.get(t)
            if tm is not None and tm.error is None and tm.partitions:
                parts += [TopicPartition(t, p, OFFSET_BEGINNING) for p in sorted(tm.partitions)]
                break
            if time.monotonic() > deadline:
                print(f"topic {t} not found", file=sys.stderr)
                sys.exit(3)
            time.sleep(0.2)
    c.assign(parts)
    got = 0
    at_eof = set()
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            if got >= min_records and len(at_eof) == len(parts):
                break
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                at_eof.add((m.topic(), m.partition()))
                if got >= min_records and len(at_eof) == len(parts):
                    break
                continue
            print(f"consumer error: {m.error()}", file=sys.stderr)
            continue
        at_eof.discard((m.topic(), m.partition()))
        headers = {k: (v.decode("utf-8", "replace") if v is not None else None) for k, v in (m.headers() or [])}
        print(json.dumps({
            "topic": m.topic(),
            "partition": m.partition(),
            "offset": m.offset(),
            "key": m.key().decode("utf-8", "replace") if m.key() is not None else None,
            "headers": headers,
            "value_hex": (m.value() or b"").hex(),
            "timestamp_ms": m.timestamp()[1],
        }), flush=True)
        got += 1
    c.close()
    if got < min_records:
        print(f"timed out with {got} of {min_records} records", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
