// Child process for the http benchmark: a bare node:http server whose GET /body answers with a body of
// the given size (Content-Length set), made in memory from one repeated 1 MiB pattern with each chunk's
// index stamped in its first 8 bytes, so a lost, doubled or reordered chunk changes the checksum.
// Prints "READY <port>" once bound. SIGTERM shuts it down.
//
//   node dist/bench/http-body-server.js --bytes 1073741824 [--port 0]
import { createServer } from "node:http";
import { parseArgs } from "node:util";

export const BODY_PATH = "/body";
const CHUNK_BYTES = 1024 * 1024;

const pattern = Buffer.allocUnsafe(CHUNK_BYTES);
{
  // xorshift32: bytes that neither compress nor line up with any buffer size on the way.
  let x = 0x9e3779b9;
  for (let i = 0; i < CHUNK_BYTES; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    pattern[i] = x & 0xff;
  }
}

/** The body of `total` bytes, chunk by chunk: the benchmark hashes the same to check what arrived. */
export function* bodyChunks(total: number): Generator<Buffer> {
  for (let index = 0, offset = 0; offset < total; index++, offset += CHUNK_BYTES) {
    const chunk = Buffer.from(pattern.subarray(0, Math.min(CHUNK_BYTES, total - offset)));
    if (chunk.length >= 8) chunk.writeBigUInt64BE(BigInt(index), 0);
    yield chunk;
  }
}

function serve(total: number, port: number): void {
  const server = createServer((req, res) => {
    if (req.method !== "GET" || req.url !== BODY_PATH) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(total) });
    const chunks = bodyChunks(total);
    const pump = (): void => {
      for (let c = chunks.next(); !c.done; c = chunks.next()) {
        if (!res.write(c.value)) {
          res.once("drain", pump);
          return;
        }
      }
      res.end();
    };
    res.once("close", () => void chunks.return(undefined));
    pump();
  });
  server.listen(port, "127.0.0.1", () => {
    const addr = server.address();
    process.stdout.write(`READY ${typeof addr === "object" && addr !== null ? addr.port : 0}\n`);
  });
  const stop = (): void => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

// The benchmark imports bodyChunks from this file; only `node http-body-server.js` serves.
if (process.argv[1]?.endsWith("http-body-server.js")) {
  const { values } = parseArgs({
    options: { bytes: { type: "string" }, port: { type: "string", default: "0" } },
  });
  const total = Number(values.bytes);
  if (!Number.isSafeInteger(total) || total < 0) {
    process.stderr.write("--bytes: expected a number of bytes\n");
    process.exit(2);
  }
  serve(total, Number(values.port));
}
