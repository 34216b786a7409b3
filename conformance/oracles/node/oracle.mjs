// A protobuf-JSON oracle: @bufbuild/protobuf behind the line protocol of
// ../python/oracle.py (one JSON request per line in, one JSON response per line out).
//
// Usage: node oracle.mjs DESCRIPTOR_SET...

import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import {
  create,
  createFileRegistry,
  fromBinary,
  fromJsonString,
  toBinary,
  toJsonString,
} from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

const version = JSON.parse(
  readFileSync(new URL("./node_modules/@bufbuild/protobuf/package.json", import.meta.url)),
).version;

// Merge the sets, keeping the first copy of each file.
const files = new Map();
for (const path of process.argv.slice(2)) {
  const set = fromBinary(FileDescriptorSetSchema, readFileSync(path));
  for (const file of set.file) {
    if (!files.has(file.name)) files.set(file.name, file);
  }
}
const registry = createFileRegistry(
  create(FileDescriptorSetSchema, { file: [...files.values()] }),
);

function message(type) {
  const desc = registry.getMessage(type);
  if (!desc) throw new Error(`unknown message type ${type}`);
  return desc;
}

const jsonWrite = { useProtoFieldName: true, registry };
const jsonRead = { ignoreUnknownFields: true, registry };

function answer(request) {
  switch (request.op) {
    case "version":
      return { ok: true, version: `@bufbuild/protobuf ${version}` };
    case "json_roundtrip": {
      const desc = message(request.type);
      const m = fromJsonString(desc, request.json, jsonRead);
      return { ok: true, json: toJsonString(desc, m, jsonWrite) };
    }
    case "binary_to_json": {
      const desc = message(request.type);
      const m = fromBinary(desc, Buffer.from(request.binary, "base64"));
      return { ok: true, json: toJsonString(desc, m, jsonWrite) };
    }
    case "json_to_binary": {
      const desc = message(request.type);
      const m = fromJsonString(desc, request.json, jsonRead);
      return { ok: true, binary: Buffer.from(toBinary(desc, m)).toString("base64") };
    }
    default:
      return { ok: false, error: `unknown op ${request.op}` };
  }
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let response;
  try {
    response = answer(JSON.parse(line));
  } catch (e) {
    response = { ok: false, error: `${e.name}: ${e.message}` };
  }
  process.stdout.write(JSON.stringify(response) + "\n");
}
