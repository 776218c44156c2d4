// Post-processes the generated protobuf code: a decoded `bytes` field becomes a view of the
// received message instead of a copy of it. The generated `Buffer.from(reader.bytes())` copies
// every payload once more (a whole MiB per output chunk, then garbage); the view shares the
// buffer gRPC allocated for that one message, which lives exactly as long as the field.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";

const dir = process.argv[2] ?? "src/gen/switchboard/v1";
const COPY = "Buffer.from(reader.bytes())";
const VIEW = "((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength))(reader.bytes())";
for (const name of readdirSync(dir).filter((f) => f.endsWith(".ts"))) {
  const file = join(dir, name);
  const text = readFileSync(file, "utf8");
  if (text.includes(COPY)) writeFileSync(file, text.split(COPY).join(VIEW));
}
