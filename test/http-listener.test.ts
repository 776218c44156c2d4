// The hub's agent HTTP port (the long-poll transport) under the clients an open network sends it:
// floods of large unauthenticated bodies, bodies that never finish, headers and bodies trickled a
// byte at a time, more idle connections than it allows, and bodies over a route's size. The hub
// runs with short guards from its config file, so that each cut-off is seen in seconds; an agent on
// the HTTP transport keeps working through its long polls all the same.
import { request } from "node:http";
import { connect, type Socket } from "node:net";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HttpPoll } from "../src/gen/switchboard/v1/agent.js";
import {
  agentToken,
  runCli,
  startAgent,
  startHub,
  stopAll,
  tempDir,
  type HubProc,
} from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

const MiB = 1024 * 1024;
/** The guards of the hub under test: short, so that every cut-off shows within seconds. */
const HEADERS_TIMEOUT_S = 1;
const REQUEST_TIMEOUT_S = 3;
const BODY_IDLE_TIMEOUT_S = 1;

let hub: HubProc;
let token: string;

/** A hub config file with the short guards, and `over` in place of any of them. */
function hubConfig(over: Record<string, number> = {}): string {
  const keys: Record<string, number> = {
    http_headers_timeout_secs: HEADERS_TIMEOUT_S,
    http_request_timeout_secs: REQUEST_TIMEOUT_S,
    http_body_idle_timeout_secs: BODY_IDLE_TIMEOUT_S,
    http_max_unauthenticated: 64,
    ...over,
  };
  const file = join(tempDir("http-guards"), "hub.toml");
  writeFileSync(
    file,
    `[hub]\n${Object.entries(keys)
      .map(([k, v]) => `${k} = ${v}\n`)
      .join("")}`,
  );
  return file;
}

beforeAll(async () => {
  hub = await startHub({ args: ["--config", hubConfig()] });
  token = await agentToken(hub, "guarded");
});

afterAll(stopAll);

function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? NaN) * 1024;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * One POST whose headers declare `declared` bytes, of which `send` is written (all of it by default).
 * Resolves with the answer as soon as it has arrived, whatever happens to the rest of the upload.
 */
function post(
  address: string,
  path: string,
  o: { token?: string; declared?: number; body?: Buffer; chunked?: boolean },
): Promise<Answer> {
  const [host, port] = [
    address.slice(0, address.lastIndexOf(":")),
    Number(address.slice(address.lastIndexOf(":") + 1)),
  ];
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { "content-type": "application/x-protobuf" };
    if (o.token) headers.authorization = `Bearer ${o.token}`;
    if (!o.chunked) headers["content-length"] = o.declared ?? o.body?.length ?? 0;
    const req = request({ host, port, path, method: "POST", headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
      res.on("error", reject);
    });
    // A client still writing when the hub closes sees EPIPE or ECONNRESET after the answer: not a failure.
    req.on("error", reject);
    if (o.body) req.write(o.body);
    if (o.declared === undefined || o.chunked) req.end();
  });
}

/** A raw connection that records how and when the hub ended it. */
function rawConnection(address: string): { socket: Socket; received: () => string; closed: Promise<number> } {
  const i = address.lastIndexOf(":");
  const socket = connect(Number(address.slice(i + 1)), address.slice(0, i));
  let received = "";
  socket.on("data", (d: Buffer) => (received += d.toString("latin1")));
  socket.on("error", () => undefined);
  const openedAt = Date.now();
  const closed = new Promise<number>((resolve) => socket.on("close", () => resolve(Date.now() - openedAt)));
  return { socket, received: () => received, closed };
}

/** Writes `line()` every `everyMs` until the socket closes. */
function trickle(socket: Socket, line: () => string, everyMs: number): void {
  const timer = setInterval(() => {
    if (!socket.destroyed) socket.write(line());
  }, everyMs);
  socket.on("close", () => clearInterval(timer));
}

/** `p`, or a failure once `ms` have passed. */
function within<T>(ms: number, p: Promise<T>, what = "the hub to close the connection"): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

describe("the agent HTTP port", () => {
  it("answers 30 concurrent unauthenticated 16 MiB POSTs with 401, without keeping their bodies", async () => {
    const body = Buffer.alloc(16 * MiB, 0x5a);
    const pid = hub.child.pid!;
    const before = rssBytes(pid);
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(pid))), 25);
    try {
      const answers = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          post(hub.httpAddress, "/agent/v1/connect", {
            body,
            ...(i % 2 === 0 ? { token: `sbt_forged${i}` } : {}),
          }),
        ),
      );
      expect(answers.map((a) => a.status)).toEqual(Array(30).fill(401));
      expect(answers[0]!.headers.connection).toBe("close");
      expect(answers[0]!.body).toMatch(/^UNAUTHENTICATED: unknown token/);
      expect(answers[1]!.body).toMatch(/^UNAUTHENTICATED: missing token/);
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, rssBytes(pid));
    // Bodies held in memory would be 480 MiB; a reader of each body before the token, hundreds.
    expect((peak - before) / MiB).toBeLessThan(32);
  }, 60_000);

  it("answers a caller without a valid token before its body arrives, and closes the connection", async () => {
    // Declares 16 MiB and sends 64 KiB of it, then nothing: only a hub that does not wait for it answers.
    const partial = post(hub.httpAddress, "/agent/v1/connect", {
      declared: 16 * MiB,
      body: Buffer.alloc(64 * 1024),
    });
    const answer = await within(15_000, partial, "the answer");
    expect(answer.status).toBe(401);
    expect(answer.headers.connection).toBe("close");
    // Headers only, no body byte at all, on the send route (whose limit is the largest).
    const c = rawConnection(hub.httpAddress);
    c.socket.write(
      `POST /agent/v1/send HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer sbt_forged\r\nContent-Length: ${16 * MiB}\r\n\r\n`,
    );
    await within(15_000, c.closed);
    expect(c.received()).toMatch(/^HTTP\/1\.1 401 /);
  });

  it("cuts off a client that trickles its headers, and one that trickles its body", async () => {
    const headers = rawConnection(hub.httpAddress);
    headers.socket.write("POST /agent/v1/connect HTTP/1.1\r\nHost: hub\r\n");
    let n = 0;
    trickle(headers.socket, () => `X-Trickle-${n++}: x\r\n`, 100);

    // With a valid token, a byte every 100 ms never idles past the body timeout; the request timeout ends it.
    const body = rawConnection(hub.httpAddress);
    body.socket.write(
      `POST /agent/v1/send HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer ${token}\r\nContent-Length: 100000\r\n\r\n`,
    );
    trickle(body.socket, () => "x", 100);

    // A body that stops altogether: the body idle timeout ends it.
    const stalled = rawConnection(hub.httpAddress);
    stalled.socket.write(
      `POST /agent/v1/send HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer ${token}\r\nContent-Length: 100000\r\n\r\nxx`,
    );

    // Each is cut within its timeout, plus the hub's check interval and a loaded machine's slack.
    const slackMs = 5_000;
    const [h, b, s] = await Promise.all([
      within(HEADERS_TIMEOUT_S * 1000 + slackMs, headers.closed),
      within(REQUEST_TIMEOUT_S * 1000 + slackMs, body.closed),
      within(BODY_IDLE_TIMEOUT_S * 1000 + slackMs, stalled.closed),
    ]);
    expect(h).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_S * 1000 - 100);
    expect(b).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_S * 1000 - 100);
    expect(s).toBeGreaterThanOrEqual(BODY_IDLE_TIMEOUT_S * 1000 - 100);
    expect(headers.received()).toMatch(/^HTTP\/1\.1 408 /);
    expect(body.received()).toMatch(/^HTTP\/1\.1 408 /);
    expect(stalled.received()).toMatch(/^HTTP\/1\.1 408 [^]*DEADLINE_EXCEEDED: no body bytes for 1s/);
  }, 60_000);

  it("refuses a body over what the route carries with 413, declared or chunked", async () => {
    const hello = await post(hub.httpAddress, "/agent/v1/connect", { token, body: Buffer.alloc(2 * MiB) });
    expect(hello.status).toBe(413);
    expect(hello.body).toContain("over the 1048576 bytes /agent/v1/connect takes");
    expect(hello.headers.connection).toBe("close");
    const poll = await post(hub.httpAddress, "/agent/v1/poll", { token, body: Buffer.alloc(8 * 1024) });
    expect(poll.status).toBe(413);
    const chunked = await post(hub.httpAddress, "/agent/v1/poll", {
      token,
      body: Buffer.alloc(8 * 1024),
      chunked: true,
    });
    expect(chunked.status).toBe(413);
    expect(chunked.body).toContain("request body over 4096 bytes");
    // What fits is read and answered as ever.
    const small = await post(hub.httpAddress, "/agent/v1/poll", {
      token,
      body: Buffer.from(HttpPoll.encode({ channel: "nope", ack: 0, waitMs: 0 }).finish()),
    });
    expect(small.status).toBe(404);
  });

  it("keeps an agent on the HTTP transport working through long polls that outlast the request timeout", async () => {
    await startAgent(hub, { agentId: "long-poller", pool: "guarded", token, args: ["--transport", "http"] });
    const session = async (): Promise<number | undefined> => {
      const r = await runCli([...hub.cli, "agents", "--output", "json"]);
      const rows = JSON.parse(r.stdout) as { agentId: string; connected: boolean; connectedAtMs: number }[];
      return rows.find((a) => a.agentId === "long-poller" && a.connected)?.connectedAtMs;
    };
    const first = await session();
    expect(first).toBeGreaterThan(0);
    // Idle, the agent holds one poll open for up to 25 s: let one outlast the 3 s request timeout.
    await new Promise((r) => setTimeout(r, (REQUEST_TIMEOUT_S + 4) * 1000));
    const r = await runCli([...hub.cli, "exec", "--agent", "long-poller", "--", "echo", "still here"]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("still here\n");
    expect(await session()).toBe(first); // the same session: no poll was cut, no reconnect
  }, 60_000);

  it("closes connections past the cap of those without a valid token, and takes new ones once they go", async () => {
    const capped = await startHub({
      args: [
        "--config",
        hubConfig({
          http_headers_timeout_secs: 30,
          http_request_timeout_secs: 30,
          http_max_unauthenticated: 5,
        }),
      ],
    });
    const held = Array.from({ length: 5 }, () => rawConnection(capped.httpAddress));
    for (const c of held) c.socket.write("POST /agent/v1/connect HTTP/1.1\r\n"); // and no more
    await waitFor(() => held.every((c) => c.socket.readyState === "open"), {
      message: "the held connections to be open",
    });
    const extra = rawConnection(capped.httpAddress);
    await within(10_000, extra.closed); // closed by the hub at once, without an answer
    expect(extra.received()).toBe("");
    expect(held.every((c) => !c.socket.destroyed)).toBe(true);
    await waitFor(() => capped.stderr().includes("hub.http_max_unauthenticated"), {
      message: "the hub to say why",
    });
    for (const c of held) c.socket.destroy();
    await Promise.all(held.map((c) => c.closed));
    const next = await waitFor(
      () => post(capped.httpAddress, "/agent/v1/connect", { token: "sbt_forged", body: Buffer.alloc(10) }),
      { timeout: 10_000, interval: 200, message: "a new connection to be served" },
    );
    expect(next.status).toBe(401);
  }, 60_000);
});
