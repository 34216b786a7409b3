"""A protobuf-JSON oracle: Python's official `protobuf` package behind a line protocol.

Usage: python3 oracle.py DESCRIPTOR_SET...

Loads every encoded FileDescriptorSet given, then answers one JSON request per input line with
one JSON response line:

  {"op": "version"}                                   -> {"ok": true, "version": "..."}
  {"op": "json_roundtrip", "type": T, "json": S}      -> parse S as T (unknown fields ignored),
                                                         answer its JSON (proto field names)
  {"op": "binary_to_json", "type": T, "binary": B64}  -> decode the binary, answer its JSON
  {"op": "json_to_binary", "type": T, "json": S}      -> parse S, answer deterministic binary (B64)

Failures answer {"ok": false, "error": "..."}; the process keeps serving.
"""

import base64
import json
import sys

from google.protobuf import __version__ as protobuf_version
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory


def load(paths):
    pool = descriptor_pool.DescriptorPool()
    seen = set()
    for path in paths:
        with open(path, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
        for file in fds.file:
            if file.name in seen:
                continue
            seen.add(file.name)
            try:
                pool.Add(file)
            except TypeError:
                # Already known to the pool (the well-known types).
                pass
    return pool


def to_json(pool, message):
    # The pool resolves the type of an Any; the default pool knows only imported modules.
    return json_format.MessageToJson(
        message,
        preserving_proto_field_name=True,
        indent=None,
        ensure_ascii=False,
        descriptor_pool=pool,
    )


def parse(pool, text, message):
    json_format.Parse(text, message, ignore_unknown_fields=True, descriptor_pool=pool)


def answer(pool, request):
    op = request["op"]
    if op == "version":
        return {"ok": True, "version": "python protobuf " + protobuf_version}
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(request["type"]))
    message = cls()
    if op == "json_roundtrip":
        parse(pool, request["json"], message)
        return {"ok": True, "json": to_json(pool, message)}
    if op == "binary_to_json":
        message.ParseFromString(base64.b64decode(request["binary"]))
        return {"ok": True, "json": to_json(pool, message)}
    if op == "json_to_binary":
        parse(pool, request["json"], message)
        binary = message.SerializeToString(deterministic=True)
        return {"ok": True, "binary": base64.b64encode(binary).decode("ascii")}
    return {"ok": False, "error": "unknown op " + op}


def main():
    pool = load(sys.argv[1:])
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            response = answer(pool, json.loads(line))
        except Exception as e:  # every failure is an answer, not a crash
            response = {"ok": False, "error": type(e).__name__ + ": " + str(e)}
        sys.stdout.write(json.dumps(response, ensure_ascii=False) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
