// The http executor against a real HTTP server started here: the head line then the body, large bodies
// under a small output window (the agent stops reading, the server stalls), gzip/deflate/br decoding,
// timeouts and cancel on a slow body, redirects inside and outside the allowlist, refused addresses.
import { createHash } from "node:crypto";
import type { LookupAddress } from "node:dns";
import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { brotliCompressSync, deflateSync, gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "../../../common/errors.js";
import type { HttpResponseHead, HttpResultSummary } from "../../../common/http-result.js";
import { silentLogger } from "../../../common/logger.js";
import {
  Finished,
  HttpSpec,
  OutputStream,
  TaskState,
  type TaskSpec,
} from "../../../gen/switchboard/v1/task.js";
import { OutputGate } from "../../output-gate.js";
import type { StopRequest } from "../executor.js";
import { waitFor } from "../../../common/wait-for.js";
import { HttpExecutor, type HttpExecutorOptions } from "./http.js";

const TEXT = "the quick brown fox jumps over the lazy dog\n".repeat(2000);

/** Deterministic bytes: the same size always gives the same body. */
function pattern(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + (i >> 10)) & 0xff;
  return b;
}

interface ServerState {
  /** Bytes of the /big body the server has written so far. */
  bigWritten: number;
  /** The server waits for 'drain' on /big: the client stopped reading. */
  bigStalled: boolean;
  /** Requests whose connection closed before the response ended. */
  abandoned: number;
  lastRequest?: { method: string; url: string; headers: IncomingMessage["headers"]; body: Buffer };
}

let server: Server;
let other: Server;
let base: string;
let otherBase: string;
let port: number;
const state: ServerState = { bigWritten: 0, bigStalled: false, abandoned: 0 };

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const url = new URL(req.url ?? "/", base);
  state.lastRequest = {
    method: req.method ?? "",
    url: req.url ?? "",
    headers: req.headers,
    body: Buffer.concat(chunks),
  };
  res.on("close", () => {
    if (!res.writableFinished) state.abandoned++;
  });
  switch (url.pathname) {
    case "/echo":
      res.setHeader("content-type", "application/json");
      res.setHeader("set-cookie", ["a=1", "b=2"]);
      res.end(
        JSON.stringify({ method: req.method, headers: req.headers, body: Buffer.concat(chunks).toString() }),
      );
      return;
    case "/status":
      res.statusCode = Number(url.searchParams.get("code"));
      res.end("status body");
      return;
    case "/big": {
      const size = Number(url.searchParams.get("size"));
      const body = pattern(size);
      res.setHeader("content-length", size);
      state.bigWritten = 0;
      for (let off = 0; off < size; off += 64 * 1024) {
        const piece = body.subarray(off, off + 64 * 1024);
        state.bigWritten += piece.length;
        if (!res.write(piece)) {
          state.bigStalled = true;
          await once(res, "drain");
          state.bigStalled = false;
        }
      }
      res.end();
      return;
    }
    case "/gzip":
    case "/deflate":
    case "/br": {
      const encode = { "/gzip": gzipSync, "/deflate": deflateSync, "/br": brotliCompressSync }[url.pathname];
      res.setHeader("content-encoding", url.pathname.slice(1));
      res.end(encode(Buffer.from(TEXT)));
      return;
    }
    case "/slow":
      res.setHeader("content-type", "text/plain");
      res.write("first\n");
      // The rest never comes: the client's timeout or cancel ends the request.
      return;
    case "/cut":
      res.setHeader("content-length", 1000);
      res.write("x".repeat(100));
      setTimeout(() => res.socket?.destroy(), 20);
      return;
    case "/redirect":
      res.statusCode = Number(url.searchParams.get("code") ?? 302);
      res.setHeader("location", url.searchParams.get("to") ?? "/echo");
      res.end();
      return;
    case "/loop":
      res.statusCode = 302;
      res.setHeader("location", "/loop");
      res.end();
      return;
    default:
      res.statusCode = 404;
      res.end("not found");
  }
}

async function listen(s: Server): Promise<number> {
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  return (s.address() as AddressInfo).port;
}

beforeAll(async () => {
  server = createServer((req, res) => void handle(req, res));
  port = await listen(server);
  base = `http://127.0.0.1:${port}`;
  other = createServer((_req, res) => res.end("other"));
  otherBase = `http://127.0.0.1:${await listen(other)}`;
});

afterAll(() => {
  server.closeAllConnections();
  server.close();
  other.close();
});

/** Names the tests resolve without DNS. */
const NAMES: Record<string, LookupAddress[]> = {
  "svc.test": [{ address: "127.0.0.1", family: 4 }],
  "metadata.test": [{ address: "169.254.169.254", family: 4 }],
  "mapped.test": [{ address: "::ffff:169.254.169.254", family: 6 }],
};

function executor(opts: Partial<HttpExecutorOptions> = {}): HttpExecutor {
  return new HttpExecutor({
    agentId: "spec-agent",
    allow: [`${base}/`, `http://svc.test:${port}/`, "http://metadata.test/", "http://mapped.test/"],
    defaultTimeoutMs: 10_000,
    maxRedirects: 10,
    maxChunkBytes: 256 * 1024,
    resolve: (h) => Promise.resolve(NAMES[h] ?? []),
    ...opts,
  });
}

function httpSpec(s: Partial<HttpSpec>): TaskSpec {
  return { kind: { $case: "http", value: HttpSpec.fromPartial(s) } };
}

interface Harness {
  head(): HttpResponseHead | undefined;
  body(): Buffer;
  gate: OutputGate;
  chunkSizes: number[];
  stop(req: StopRequest): void;
  done: Promise<Finished>;
}

function run(
  spec: Partial<HttpSpec>,
  opts: { window?: number; exec?: HttpExecutor; deadlineMs?: number; sessionMaxChunk?: number } = {},
): Harness {
  const err: Buffer[] = [];
  const out: Buffer[] = [];
  const chunkSizes: number[] = [];
  const room = { hasRoom: () => true, onceRoom: (cb: () => void) => queueMicrotask(cb) };
  const gate = new OutputGate(opts.window ?? Infinity, room, (stream, data) => {
    if (stream === OutputStream.OUTPUT_STREAM_STDOUT) {
      out.push(Buffer.from(data));
      chunkSizes.push(data.length);
    } else err.push(Buffer.from(data));
  });
  const ex = opts.exec ?? executor();
  const full = httpSpec(spec);
  const refused = ex.admit(full);
  if (refused) throw new Error(`refused: ${refused.message}`);
  const execution = ex.start(full, {
    taskId: "task-1",
    deadlineMs: opts.deadlineMs ?? 0,
    output: gate,
    started: () => undefined,
    grantInput: () => undefined,
    logger: silentLogger(),
    ...(opts.sessionMaxChunk !== undefined ? { maxChunkBytes: opts.sessionMaxChunk } : {}),
  });
  return {
    head: () => {
      const text = Buffer.concat(err).toString();
      return text.includes("\n")
        ? (JSON.parse(text.slice(0, text.indexOf("\n"))) as HttpResponseHead)
        : undefined;
    },
    body: () => Buffer.concat(out),
    gate,
    chunkSizes,
    stop: (r) => {
      gate.stopHolding();
      execution.stop(r);
    },
    done: execution.done.then(async (f) => {
      await gate.whenFlushed();
      return f;
    }),
  };
}

function summary(f: Finished): HttpResultSummary {
  return JSON.parse(Buffer.from(f.result).toString()) as HttpResultSummary;
}

const sha = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

describe("HttpExecutor.admit", () => {
  it("refuses everything when the allowlist is empty", () => {
    const r = executor({ allow: [] }).admit(httpSpec({ url: `${base}/echo` }));
    expect(r).toEqual({
      code: Code.PERMISSION_DENIED,
      message:
        "http tasks are disabled on agent spec-agent: list the URL prefixes they may reach in [http] allow in its config",
    });
  });

  it("refuses URLs off the allowlist, bad methods and headers the agent owns", () => {
    const ex = executor();
    expect(ex.admit(httpSpec({ url: `${otherBase}/` }))).toMatchObject({
      code: Code.PERMISSION_DENIED,
      message: expect.stringContaining(`${otherBase}/ is not under any of agent spec-agent's`) as unknown,
    });
    expect(ex.admit(httpSpec({ url: "http://169.254.169.254/latest/meta-data/" }))?.message).toMatch(
      /169\.254\.169\.254 is a cloud metadata address; http tasks never reach it/,
    );
    expect(ex.admit(httpSpec({ url: `${base}/`, method: "GET /x" }))?.code).toBe(Code.INVALID_ARGUMENT);
    expect(ex.admit(httpSpec({ url: `${base}/`, method: "connect" }))?.message).toMatch(/CONNECT/);
    expect(ex.admit(httpSpec({ url: `${base}/`, headers: { Host: "internal-admin" } }))?.message).toBe(
      "header Host is set by the agent; a task may not set it",
    );
    expect(ex.admit(httpSpec({ url: `${base}/`, headers: { "X-A": "1\r\nX-B: 2" } }))?.message).toMatch(
      /CR, LF or NUL/,
    );
    expect(ex.admit(httpSpec({ url: `${base}/`, maxRedirects: 11 }))?.message).toMatch(
      /above agent spec-agent's limit of 10/,
    );
    expect(
      ex.admit(httpSpec({ url: `${base}/echo`, method: "PATCH", headers: { "X-A": "1" } })),
    ).toBeUndefined();
  });
});

describe("HttpExecutor", () => {
  it("writes the head line on stderr, then the body, and succeeds whatever the status", async () => {
    const h = run({ url: `${base}/status?code=404` });
    const f = await h.done;
    expect(f.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    expect(h.head()).toMatchObject({ status: 404, status_text: "Not Found", url: `${base}/status?code=404` });
    expect(h.body().toString()).toBe("status body");
    expect(summary(f)).toEqual({ status: 404, bytes: 11, url: `${base}/status?code=404` });
  });

  it("sends method, headers and body; repeated response headers keep every value", async () => {
    const h = run({
      url: `${base}/echo`,
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Trace": "a, b" },
      body: Buffer.from('{"x":1}'),
    });
    await h.done;
    const echoed = JSON.parse(h.body().toString()) as {
      method: string;
      headers: Record<string, string>;
      body: string;
    };
    expect(echoed.method).toBe("POST");
    expect(echoed.body).toBe('{"x":1}');
    expect(echoed.headers).toMatchObject({
      "content-type": "application/json",
      "content-length": "7",
      "x-trace": "a, b",
      "user-agent": expect.stringMatching(/^switchboard-agent\//) as unknown,
    });
    expect(h.head()?.headers["set-cookie"]).toEqual(["a=1", "b=2"]);
  });

  it("streams a large body in bounded memory: with the window closed the agent stops reading", async () => {
    const size = 64 * 1024 * 1024;
    const h = run({ url: `${base}/big?size=${size}` }, { window: 1024 * 1024 });
    // No more window: the agent must stop reading and the server must block on a full socket.
    await waitFor(() => state.bigStalled, { timeout: 10_000, message: "the server to stall" });
    await new Promise((r) => setTimeout(r, 200));
    expect(state.bigStalled).toBe(true);
    expect(state.bigWritten).toBeLessThan(24 * 1024 * 1024);
    expect(h.gate.pendingBytes).toBeLessThanOrEqual(256 * 1024);
    // A reader that grants as it goes: the whole body arrives, every chunk within the stream's cap.
    let maxPending = 0;
    const timer = setInterval(() => {
      maxPending = Math.max(maxPending, h.gate.pendingBytes);
      h.gate.grant(4 * 1024 * 1024);
    }, 5);
    const f = await h.done.finally(() => clearInterval(timer));
    expect(f.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    expect(maxPending).toBeLessThanOrEqual(256 * 1024);
    expect(Math.max(...h.chunkSizes)).toBeLessThanOrEqual(256 * 1024);
    expect(h.body().length).toBe(size);
    expect(sha(h.body())).toBe(sha(pattern(size)));
    expect(summary(f).bytes).toBe(size);
  });

  it("cuts a body without newlines at the agent's chunk size, even when the session allows more", async () => {
    const text = "x".repeat(3 * 1024 * 1024);
    const h = run(
      { url: `${base}/echo`, method: "POST", body: Buffer.from(text) },
      { sessionMaxChunk: 16 * 1024 * 1024 },
    );
    expect((await h.done).state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    expect(h.body().toString()).toContain(text);
    expect(h.chunkSizes.length).toBeGreaterThan(10);
    expect(Math.max(...h.chunkSizes)).toBeLessThanOrEqual(256 * 1024);
  });

  it("decodes gzip, deflate and br bodies when asked, and passes them through when not", async () => {
    for (const enc of ["gzip", "deflate", "br"]) {
      const h = run({ url: `${base}/${enc}`, decode: true });
      const f = await h.done;
      expect(f.state, enc).toBe(TaskState.TASK_STATE_SUCCEEDED);
      expect(h.body().toString(), enc).toBe(TEXT);
      expect(h.head()?.headers["content-encoding"], enc).toEqual([enc]);
      expect(state.lastRequest?.headers["accept-encoding"]).toBe("gzip, deflate, br");
      expect(summary(f).bytes).toBe(TEXT.length);
    }
    const raw = run({ url: `${base}/gzip` });
    await raw.done;
    expect(raw.body()).toEqual(gzipSync(Buffer.from(TEXT)));
    expect(state.lastRequest?.headers["accept-encoding"]).toBeUndefined();
  });

  it("times out on a slow body with what arrived kept, and closes the connection", async () => {
    const before = state.abandoned;
    const h = run({ url: `${base}/slow`, timeoutMs: 300 });
    const f = await h.done;
    expect(f.state).toBe(TaskState.TASK_STATE_TIMED_OUT);
    expect(f.reason).toBe("timeout after 300 ms");
    expect(f.error?.code).toBe(Code.DEADLINE_EXCEEDED);
    expect(h.head()?.status).toBe(200);
    expect(h.body().toString()).toBe("first\n");
    expect(summary(f)).toMatchObject({ status: 200, bytes: 6 });
    await waitFor(() => state.abandoned > before, { message: "the server to see the connection closed" });
  });

  it("the agent's default timeout and the task deadline apply too", async () => {
    const f = await run({ url: `${base}/slow` }, { exec: executor({ defaultTimeoutMs: 200 }) }).done;
    expect(f.reason).toBe("timeout after 200 ms");
    const g = await run({ url: `${base}/slow` }, { deadlineMs: Date.now() + 250 }).done;
    expect(g.state).toBe(TaskState.TASK_STATE_TIMED_OUT);
  });

  it("cancel aborts the request", async () => {
    const before = state.abandoned;
    const h = run({ url: `${base}/slow` });
    await waitFor(() => h.body().length > 0, { message: "the first chunk" });
    h.stop({ cause: "cancelled", reason: "cancelled by client" });
    const f = await h.done;
    expect(f.state).toBe(TaskState.TASK_STATE_CANCELLED);
    expect(f.reason).toBe("cancelled by client");
    await waitFor(() => state.abandoned > before, { message: "the server to see the connection closed" });
  });

  it("fails clearly when the connection breaks mid-body or is refused", async () => {
    const cut = await run({ url: `${base}/cut` }).done;
    expect(cut.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(cut.error?.code).toBe(Code.UNAVAILABLE);
    expect(cut.reason).toMatch(/^the connection to http:\/\/127\.0\.0\.1:\d+ broke after 100 body bytes/);

    const closed = createServer();
    const closedPort = await listen(closed);
    await new Promise((r) => closed.close(r));
    const ex = executor({ allow: [`http://127.0.0.1:${closedPort}/`] });
    const refused = await run({ url: `http://127.0.0.1:${closedPort}/` }, { exec: ex }).done;
    expect(refused.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(refused.reason).toBe(`http://127.0.0.1:${closedPort} refused the connection (ECONNREFUSED)`);
  });

  it("returns a redirect as it is unless asked to follow it", async () => {
    const h = run({ url: `${base}/redirect?to=/echo` });
    const f = await h.done;
    expect(f.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    expect(h.head()).toMatchObject({ status: 302, headers: { location: ["/echo"] } });
  });

  it("follows redirects inside the allowlist, a 303 after a POST as a GET", async () => {
    const h = run({
      url: `${base}/redirect?code=303&to=/echo`,
      method: "POST",
      body: Buffer.from("x"),
      maxRedirects: 2,
    });
    const f = await h.done;
    expect(f.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    expect(h.head()).toMatchObject({ status: 200, url: `${base}/echo` });
    expect(JSON.parse(h.body().toString())).toMatchObject({ method: "GET", body: "" });

    const kept = run({
      url: `${base}/redirect?code=307&to=/echo`,
      method: "POST",
      body: Buffer.from("x"),
      maxRedirects: 1,
    });
    await kept.done;
    expect(JSON.parse(kept.body().toString())).toMatchObject({ method: "POST", body: "x" });
  });

  it("drops credentials when a redirect leaves the origin", async () => {
    const to = encodeURIComponent(`http://svc.test:${port}/echo`);
    const h = run({
      url: `${base}/redirect?to=${to}`,
      headers: { Authorization: "Bearer secret", "X-Keep": "1" },
      maxRedirects: 1,
    });
    await h.done;
    const echoed = JSON.parse(h.body().toString()) as { headers: Record<string, string> };
    expect(echoed.headers.authorization).toBeUndefined();
    expect(echoed.headers["x-keep"]).toBe("1");
  });

  it("fails a redirect that leaves the allowlist, naming the URL", async () => {
    const to = encodeURIComponent(`${otherBase}/secret`);
    const f = await run({ url: `${base}/redirect?to=${to}`, maxRedirects: 3 }).done;
    expect(f.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(f.error?.code).toBe(Code.PERMISSION_DENIED);
    expect(f.reason).toBe(
      `redirect from ${base}/redirect?… refused: ${otherBase}/secret is not under any of agent spec-agent's [http] allow prefixes (${base}/, http://svc.test:${port}/, http://metadata.test/, http://mapped.test/)`,
    );
    const meta = await run({
      url: `${base}/redirect?to=${encodeURIComponent("http://169.254.169.254/latest/")}`,
      maxRedirects: 3,
    }).done;
    expect(meta.reason).toMatch(/refused: http:\/\/169\.254\.169\.254\/latest\/: .* cloud metadata address/);
  });

  it("stops after max_redirects", async () => {
    const f = await run({ url: `${base}/loop`, maxRedirects: 3 }).done;
    expect(f.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(f.reason).toBe(`more than 3 redirects; the last from ${base}/loop to ${base}/loop`);
  });

  it("refuses to connect when an allowed name resolves to a forbidden address", async () => {
    for (const [host, address] of [
      ["metadata.test", "169.254.169.254"],
      ["mapped.test", "::ffff:169.254.169.254"],
    ]) {
      const f = await run({ url: `http://${host}/latest/meta-data/` }).done;
      expect(f.state).toBe(TaskState.TASK_STATE_FAILED);
      expect(f.error?.code).toBe(Code.PERMISSION_DENIED);
      expect(f.reason).toBe(
        `http://${host}/latest/meta-data/: ${host} resolves to ${address}, a cloud metadata address; http tasks never reach it`,
      );
    }
  });
});
