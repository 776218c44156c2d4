// Child process for the http benchmark: a bare node:http server whose GET /body?bytes=N answers with a
// body of N bytes (Content-Length set), made in memory from one repeated 1 MiB pattern with each chunk's
// index stamped in its first 8 bytes, so a lost, doubled or reordered chunk changes the checksum.
// Prints "READY <port>" once bound. SIGTERM shuts it down.
//
//   node dist/bench/http-body-server.js [--port 0]
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

function serve(port: number): void {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    if (req.method !== "GET" || url.pathname !== BODY_PATH) {
      res.writeHead(404).end();
      return;
    }
    const total = Number(url.searchParams.get("bytes"));
    if (!Number.isSafeInteger(total) || total < 0) {
      res.writeHead(400).end("?bytes=N: expected a number of bytes\n");
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
  const { values } = parseArgs({ options: { port: { type: "string", default: "0" } } });
  serve(Number(values.port));
}
