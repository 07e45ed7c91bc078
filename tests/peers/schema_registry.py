#!/usr/bin/env python3
"""A FAKE Confluent Schema Registry for Vigil's Avro tests — the subset of its REST API that a
producer and Confluent's deserializers use. It exists because no Confluent-compatible registry can
run on this machine: Confluent's and Apicurio's registries are Java applications from Maven (not a
registry this machine reaches), Karapace is not published on PyPI. Everything else in the Avro
tests is real: the Kafka broker (tansu), librdkafka and confluent-kafka's own AvroDeserializer and
SchemaRegistryClient (which talk HTTP to this server), and fastavro, which parses every schema
registered here (a schema fastavro refuses is answered 422, as a real registry does).

Usage: schema_registry.py PORT [--user USER:PASSWORD]

API (application/vnd.schemaregistry.v1+json):
  POST /subjects/{subject}/versions   {"schema": "...", "schemaType": "AVRO"} -> {"id": N}
                                      (the same schema again -> the same id; ids are global)
  GET  /schemas/ids/{id}              -> {"schema": "..."}
  GET  /subjects                      -> ["subject", ...]
  GET  /subjects/{subject}/versions   -> [1, 2, ...]
  GET  /subjects/{subject}/versions/latest -> {"subject", "version", "id", "schema"}
With --user, every request needs that HTTP basic authentication (401 otherwise).
Logs one line per request on stderr ("POST /subjects/x-value/versions 200").
"""
import base64
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import fastavro

LOCK = threading.Lock()
SCHEMAS = []          # id - 1 -> schema text
SUBJECTS = {}         # subject -> [id, ...] (version - 1 -> id)
AUTH = None


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        print(f"{self.command} {self.path} {status}", file=sys.stderr, flush=True)

    def error(self, status, message):
        self.answer(status, {"error_code": status, "message": message})

    def authorised(self):
        if AUTH is None:
            return True
        want = "Basic " + base64.b64encode(AUTH.encode()).decode()
        if self.headers.get("Authorization") == want:
            return True
        self.error(401, "Unauthorized")
        return False

    def parts(self):
        return [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]

    def do_POST(self):
        if not self.authorised():
            return
        p = self.parts()
        if len(p) != 3 or p[0] != "subjects" or p[2] != "versions":
            return self.error(404, "not found")
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            text = req["schema"]
            if req.get("schemaType", "AVRO") != "AVRO":
                return self.error(422, "only AVRO schemas")
            fastavro.parse_schema(json.loads(text))
        except Exception as e:  # noqa: BLE001 - any bad schema is the client's error
            return self.error(422, f"Invalid schema: {e}")
        with LOCK:
            canonical = json.loads(text)
            ids = [i + 1 for i, s in enumerate(SCHEMAS) if json.loads(s) == canonical]
            if ids:
                sid = ids[0]
            else:
                SCHEMAS.append(text)
                sid = len(SCHEMAS)
            versions = SUBJECTS.setdefault(p[1], [])
            if sid not in versions:
                versions.append(sid)
        self.answer(200, {"id": sid})

    def do_GET(self):
        if not self.authorised():
            return
        p = self.parts()
        with LOCK:
            if p[:2] == ["schemas", "ids"] and len(p) == 3 and p[2].isdigit() and 0 < int(p[2]) <= len(SCHEMAS):
                return self.answer(200, {"schema": SCHEMAS[int(p[2]) - 1]})
            if p == ["subjects"]:
                return self.answer(200, sorted(SUBJECTS))
            if len(p) >= 3 and p[0] == "subjects" and p[1] in SUBJECTS and p[2] == "versions":
                versions = SUBJECTS[p[1]]
                if len(p) == 3:
                    return self.answer(200, list(range(1, len(versions) + 1)))
                if len(p) == 4 and p[3] == "latest":
                    sid = versions[-1]
                    return self.answer(200, {"subject": p[1], "version": len(versions), "id": sid, "schema": SCHEMAS[sid - 1]})
        self.error(404, "not found")


def main():
    global AUTH
    port = int(sys.argv[1])
    if sys.argv[2:3] == ["--user"]:
        AUTH = sys.argv[3]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"fake schema registry listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
