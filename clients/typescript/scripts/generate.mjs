// Generates the message classes of Keyway's contract with protoc-gen-es, from encoded
// FileDescriptorSets instead of .proto files, so no protoc is needed:
//
//   node scripts/generate.mjs --out src/gen contract.binpb orchestrator.binpb
//
// The sets are merged by file name (a file imported by several sets is generated once), and
// every file outside google/protobuf/ is generated, as protoc would for those files.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { create, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { CodeGeneratorRequestSchema } from "@bufbuild/protobuf/wkt";
import { protocGenEs } from "@bufbuild/protoc-gen-es/dist/cjs/src/protoc-gen-es-plugin.js";

/** The options protoc-gen-es is run with (`--es_opt`). */
export const PARAMETER = "target=ts,import_extension=js";

function usage(problem) {
  process.stderr.write(`generate.mjs: ${problem}\nusage: node scripts/generate.mjs --out DIR SET.binpb...\n`);
  process.exit(2);
}

const args = process.argv.slice(2);
const at = args.indexOf("--out");
if (at < 0 || at + 1 >= args.length) usage("--out DIR is required");
const out = args[at + 1];
const sets = args.filter((_, i) => i !== at && i !== at + 1);
if (sets.length === 0) usage("no descriptor set given");

const files = [];
const seen = new Set();
for (const path of sets) {
  let set;
  try {
    set = fromBinary(FileDescriptorSetSchema, readFileSync(path));
  } catch (e) {
    usage(`${path}: not an encoded FileDescriptorSet (${e.message})`);
  }
  for (const file of set.file) {
    if (seen.has(file.name)) continue;
    seen.add(file.name);
    files.push(file);
  }
}

const request = create(CodeGeneratorRequestSchema, {
  fileToGenerate: files.map((f) => f.name).filter((n) => !n.startsWith("google/protobuf/")),
  parameter: PARAMETER,
  protoFile: files,
});
const response = protocGenEs.run(request);
if (response.error) {
  process.stderr.write(`generate.mjs: protoc-gen-es failed: ${response.error}\n`);
  process.exit(1);
}
for (const file of response.file) {
  const dest = join(out, file.name);
  mkdirSync(dirname(dest), { recursive: true });
  writeFileSync(dest, file.content);
  process.stdout.write(`${file.name}\n`);
}
