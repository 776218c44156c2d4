// The storage node: a small key-value HTTP server that keeps each value in a file of its data dir (written
// under a temporary name, synced, then renamed, so a crash never leaves half a value), answers /healthz and
// /metrics, and, only when started with test faults on, crashes or grows its memory on request. It is the
// program the agent's supervisor runs by default, and a realistic one: it holds a port, data and memory.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";

export interface StorageNodeOptions {
  /** 0: any free port (the bound one is in `address`). */
  port: number;
  host: string;
  dataDir: string;
  nodeId: string;
  /** POST /_test/crash and /_test/grow answer only when this is on. */
  testFaults: boolean;
  /** Largest value accepted; larger bodies get 413. */
  maxValueBytes: number;
}

export interface StorageNode {
  readonly address: { host: string; port: number };
  /** Stops accepting, lets requests in flight finish (at most graceMs), then closes. */
  close(graceMs?: number): Promise<void>;
}

/** Exit code of a crash asked for by POST /_test/crash (EX_SOFTWARE). */
export const CRASH_EXIT_CODE = 70;
const KEY = /^[A-Za-z0-9._~-]{1,200}$/;
const VALUE_SUFFIX = ".val";

export async function startStorageNode(o: StorageNodeOptions): Promise<StorageNode> {
  await mkdir(o.dataDir, { recursive: true });
  // Values half-written when an earlier process died are not values.
  for (const f of await readdir(o.dataDir)) {
    if (f.endsWith(".tmp")) await rm(join(o.dataDir, f), { force: true });
  }
  const startedAt = Date.now();
  const ballast: Buffer[] = [];
  const counters = { requests: 0, puts: 0, gets: 0, deletes: 0, errors: 0 };

  const fileOf = (key: string): string => join(o.dataDir, key + VALUE_SUFFIX);
  const keys = async (): Promise<string[]> =>
    (await readdir(o.dataDir))
      .filter((f) => f.endsWith(VALUE_SUFFIX))
      .map((f) => f.slice(0, -VALUE_SUFFIX.length))
      .sort();

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    counters.requests++;
    const url = new URL(req.url ?? "/", "http://node");
    const path = url.pathname;
    if (path === "/healthz" && req.method === "GET") {
      return json(res, 200, {
        status: "ok",
        nodeId: o.nodeId,
        keys: (await keys()).length,
        uptimeMs: Date.now() - startedAt,
        rssBytes: process.memoryUsage.rss(),
      });
    }
    if (path === "/metrics" && req.method === "GET") {
      const ks = await keys();
      let bytes = 0;
      for (const k of ks) bytes += (await stat(fileOf(k))).size;
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4" });
      res.end(
        [
          "# HELP storage_node_keys Keys stored.",
          "# TYPE storage_node_keys gauge",
          `storage_node_keys ${ks.length}`,
          "# HELP storage_node_value_bytes Bytes of all values stored.",
          "# TYPE storage_node_value_bytes gauge",
          `storage_node_value_bytes ${bytes}`,
          "# HELP storage_node_requests_total Requests by kind.",
          "# TYPE storage_node_requests_total counter",
          ...(["puts", "gets", "deletes", "errors"] as const).map(
            (k) => `storage_node_requests_total{kind="${k}"} ${counters[k]}`,
          ),
          "# HELP storage_node_rss_bytes Resident memory of this process.",
          "# TYPE storage_node_rss_bytes gauge",
          `storage_node_rss_bytes ${process.memoryUsage.rss()}`,
          "",
        ].join("\n"),
      );
      return;
    }
    if (path === "/kv" && req.method === "GET") return json(res, 200, { keys: await keys() });
    if (path.startsWith("/kv/")) {
      const key = decodeURIComponent(path.slice(4));
      if (!KEY.test(key)) {
        return json(res, 400, { error: "a key is 1 to 200 of A-Z a-z 0-9 . _ ~ -" });
      }
      switch (req.method) {
        case "GET": {
          counters.gets++;
          const value = await readFile(fileOf(key)).catch((e: NodeJS.ErrnoException) => {
            if (e.code === "ENOENT") return undefined;
            throw e;
          });
          if (value === undefined) return json(res, 404, { error: `no key ${key}` });
          res.writeHead(200, { "content-type": "application/octet-stream", "content-length": value.length });
          res.end(value);
          return;
        }
        case "PUT": {
          const body = await readBody(req, o.maxValueBytes);
          if (body === undefined) {
            return json(res, 413, { error: `a value may be at most ${o.maxValueBytes} bytes` });
          }
          const tmp = `${fileOf(key)}.${process.pid}.${Date.now()}.tmp`;
          const f = await open(tmp, "w");
          try {
            await f.writeFile(body);
            await f.sync();
          } finally {
            await f.close();
          }
          await rename(tmp, fileOf(key));
          counters.puts++;
          res.writeHead(204).end();
          return;
        }
        case "DELETE": {
          counters.deletes++;
          try {
            await rm(fileOf(key));
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code === "ENOENT")
              return json(res, 404, { error: `no key ${key}` });
            throw e;
          }
          res.writeHead(204).end();
          return;
        }
        default:
          res.writeHead(405, { allow: "GET, PUT, DELETE" }).end();
          return;
      }
    }
    if (path.startsWith("/_test/") && req.method === "POST") {
      if (!o.testFaults) return json(res, 404, { error: "test faults are off (start with --test-faults)" });
      if (path === "/_test/crash") {
        // As a crash looks: no goodbye, no flush.
        process.exit(CRASH_EXIT_CODE);
      }
      if (path === "/_test/grow") {
        const mb = Number(url.searchParams.get("mb") ?? "64");
        if (!Number.isInteger(mb) || mb < 1 || mb > 65_536)
          return json(res, 400, { error: "mb: 1 to 65536" });
        // Filled, so the pages are resident and count in RSS.
        for (let i = 0; i < mb; i++) ballast.push(Buffer.alloc(1024 * 1024, 1));
        return json(res, 200, { heldMb: ballast.length, rssBytes: process.memoryUsage.rss() });
      }
    }
    json(res, 404, { error: `no route ${req.method ?? ""} ${path}` });
  }

  const inFlight = new Set<ServerResponse>();
  const server: Server = createServer((req, res) => {
    inFlight.add(res);
    res.on("close", () => inFlight.delete(res));
    handle(req, res).catch((e: unknown) => {
      counters.errors++;
      if (!res.headersSent) json(res, 500, { error: e instanceof Error ? e.message : String(e) });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) =>
      reject(
        e.code === "EADDRINUSE"
          ? new Error(`port ${o.port} on ${o.host} is in use`)
          : new Error(`cannot listen on ${o.host}:${o.port}: ${e.message}`),
      ),
    );
    server.listen(o.port, o.host, () => resolve());
  });
  const bound = server.address();
  const port = typeof bound === "object" && bound !== null ? bound.port : o.port;

  return {
    address: { host: o.host, port },
    async close(graceMs = 10_000): Promise<void> {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const timer = setTimeout(() => {
        for (const r of inFlight) r.destroy();
        server.closeAllConnections();
      }, graceMs);
      await closed;
      clearTimeout(timer);
    },
  };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/** The request body, or undefined when it is longer than max (the rest is not read). */
async function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of req) {
    const b = chunk as Buffer;
    n += b.length;
    if (n > max) return undefined;
    parts.push(b);
  }
  return Buffer.concat(parts);
}
