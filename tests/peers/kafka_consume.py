#!/usr/bin/env python3
"""Independent Kafka consumer for Vigil's tests (confluent-kafka / librdkafka, not Vigil's client).

Usage: kafka_consume.py [--ca PEM] [--avro-registry URL [--avro-user USER:PASSWORD] | --avro-schema AVSC]
                        BOOTSTRAP TIMEOUT_S MIN_RECORDS TOPIC [TOPIC...]

Reads every partition of every TOPIC from the beginning (explicit assignment, no consumer group:
tansu's group join is slow) until at least MIN_RECORDS records arrived in total and the topics
are drained, or TIMEOUT_S passes. With --ca PEM, connects over TLS trusting that CA. Prints one
JSON object per record on stdout:
{"topic", "partition", "offset", "key", "headers": {name: text}, "value_hex", "timestamp_ms"}.
Avro values (Confluent wire format) are decoded too, adding "schema_id" and "value" (the decoded
record; Avro bytes as padded base64 text, the form Vigil's JSON encoding uses):
  --avro-registry: Confluent's own AvroDeserializer with a SchemaRegistryClient (fetches the
                   writer schema by the id in each message), as a central team would;
  --avro-schema:   the framing checked by hand (magic byte 0) and the datum decoded with fastavro
                   against that schema file (no registry).
Exits 3 on timeout (after printing what it got), so the test sees the shortfall.
"""
import base64
import io
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition, OFFSET_BEGINNING


def plain(v):
    """A decoded Avro value as JSON-able data (bytes as base64 text)."""
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def avro_decoder(registry, user, schema_file):
    """A function message -> decoded value, or None when no Avro flag was given."""
    if registry:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer
        from confluent_kafka.serialization import MessageField, SerializationContext
        conf = {"url": registry}
        if user:
            conf["basic.auth.user.info"] = user
        deserializer = AvroDeserializer(SchemaRegistryClient(conf))
        return lambda m: deserializer(m.value(), SerializationContext(m.topic(), MessageField.VALUE))
    if schema_file:
        import fastavro
        with open(schema_file) as f:
            schema = fastavro.parse_schema(json.load(f))

        def decode(m):
            raw = m.value()
            if raw[0] != 0:
                raise ValueError(f"magic byte {raw[0]} is not 0")
            return fastavro.schemaless_reader(io.BytesIO(raw[5:]), schema)
        return decode
    return None


def main():
    args = sys.argv[1:]
    flags = {}
    while args and args[0].startswith("--"):
        flags[args[0]], args = args[1], args[2:]
    ca = flags.get("--ca")
    decode = avro_decoder(flags.get("--avro-registry"), flags.get("--avro-user"), flags.get("--avro-schema"))
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
        record = {
            "topic": m.topic(),
            "partition": m.partition(),
            "offset": m.offset(),
            "key": m.key().decode("utf-8", "replace") if m.key() is not None else None,
            "headers": headers,
            "value_hex": (m.value() or b"").hex(),
            "timestamp_ms": m.timestamp()[1],
        }
        if decode is not None:
            record["schema_id"] = int.from_bytes(m.value()[1:5], "big")
            record["value"] = plain(decode(m))
        print(json.dumps(record), flush=True)
        got += 1
    c.close()
    if got < min_records:
        print(f"timed out with {got} of {min_records} records", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
