// The agent API over plain HTTP/1.1 long-polling, on the hub's HTTP port, for networks that let only
// HTTP(S)/1.1 out. Each agent connection is a channel that stands in for the gRPC stream: the hub core
// sees the same call (write, end, the 'data' / 'end' / 'error' / 'cancelled' events), so sessions,
// credits, resume and the scheduler are the ones of the gRPC transport. Wire format: agent.proto's
// HttpPoll / HttpDownload / HttpUpload / HttpSendAck.
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { readFileSync } from "node:fs";
import { Metadata } from "@grpc/grpc-js";
import { Code, codeName, SwitchboardError } from "../common/errors.js";
import type { Logger } from "../common/logger.js";
import type { ServerTlsFiles } from "../common/tls.js";
import {
  HttpDownload,
  HttpPoll,
  HttpSendAck,
  HttpUpload,
  type HubMessage,
} from "../gen/switchboard/v1/agent.js";
import type { Principal } from "./auth.js";
import type { HubCore } from "./hub-core.js";

const PROTOBUF = "application/x-protobuf";
/** Longest a poll is held open. */
export const MAX_POLL_WAIT_MS = 30_000;
/** A channel nobody polls for this long (beyond a poll's own wait) is gone, like a dead TCP peer. */
const SILENT_AFTER_MS = 15_000;
/** An ended channel is kept this long for the agent to read how it ended. */
const ENDED_KEEP_MS = 60_000;

const HTTP_STATUS: Partial<Record<number, number>> = {
  [Code.INVALID_ARGUMENT]: 400,
  [Code.UNAUTHENTICATED]: 401,
  [Code.PERMISSION_DENIED]: 403,
  [Code.NOT_FOUND]: 404,
  [Code.FAILED_PRECONDITION]: 409,
  [Code.RESOURCE_EXHAUSTED]: 413,
  [Code.UNAVAILABLE]: 503,
};

interface Ended {
  code: number;
  details: string;
  at: number;
}

/** One agent connection: what the hub core takes for its stream. */
export class HttpAgentChannel extends EventEmitter {
  readonly id = randomBytes(16).toString("base64url");
  /** Messages written and not yet acknowledged by a poll; out[0] has seq firstSeq. */
  private out: HubMessage[] = [];
  private firstSeq = 1;
  private expectedUpload = 1;
  private ended: Ended | undefined;
  private waiter: (() => void) | undefined;
  lastActivity = Date.now();
  principalTokenId = "";
  /** Long polls have no keepalive: the hub tells a broken link by silence (AgentSession.keepalive). */
  readonly keepalive = false;

  constructor(readonly metadata: Metadata) {
    super();
    // The hub ends a call by emitting 'error' with a status (as on a grpc-js server stream).
    this.on("error", (e: { code?: number; details?: string; message?: string }) =>
      this.finish(e.code ?? Code.INTERNAL, e.details ?? e.message ?? ""),
    );
  }

  get isEnded(): boolean {
    return this.ended !== undefined;
  }

  get endedAt(): number | undefined {
    return this.ended?.at;
  }

  get polling(): boolean {
    return this.waiter !== undefined;
  }

  write(msg: HubMessage): boolean {
    if (this.ended) return false;
    this.out.push(msg);
    this.wake();
    return true;
  }

  /** The hub ends the stream normally. */
  end(): void {
    this.finish(Code.OK, "");
  }

  private finish(code: number, details: string): void {
    if (this.ended) return;
    this.ended = { code, details, at: Date.now() };
    this.wake();
  }

  /** The agent is gone (closed, or silent): the hub core hears 'cancelled', as for a dropped connection. */
  drop(details: string): void {
    if (this.ended) return;
    this.finish(Code.UNAVAILABLE, details);
    this.emit("cancelled");
    this.emit("close");
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** Drops what the agent acknowledged; answers at once with what is pending, else within waitMs. */
  async poll(ack: number, waitMs: number): Promise<HttpDownload> {
    this.lastActivity = Date.now();
    const drop = Math.min(Math.max(0, ack - this.firstSeq + 1), this.out.length);
    if (drop > 0) {
      this.out.splice(0, drop);
      this.firstSeq += drop;
    }
    if (this.out.length === 0 && !this.ended && waitMs > 0) {
      this.wake(); // a second poll replaces the first
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          if (this.waiter === done) this.waiter = undefined;
          resolve();
        }, waitMs);
        const done = (): void => {
          clearTimeout(timer);
          resolve();
        };
        this.waiter = done;
      });
    }
    this.lastActivity = Date.now();
    return this.download();
  }

  download(): HttpDownload {
    // Everything unacknowledged, so that a lost response is sent again; the end only with the last of it.
    return {
      channel: this.id,
      firstSeq: this.firstSeq,
      messages: [...this.out],
      ended: this.ended !== undefined,
      endCode: this.ended?.code ?? 0,
      endDetails: this.ended?.details ?? "",
    };
  }

  /** Applies an upload once and in order; returns the highest applied seq. */
  upload(u: HttpUpload): number {
    this.lastActivity = Date.now();
    if (u.seq < this.expectedUpload) return this.expectedUpload - 1; // sent again: already applied
    if (u.seq > this.expectedUpload) {
      throw new SwitchboardError(
        Code.FAILED_PRECONDITION,
        `upload ${u.seq} arrived before upload ${this.expectedUpload}: uploads must be sent in order`,
      );
    }
    if (this.ended) {
      throw new SwitchboardError(Code.FAILED_PRECONDITION, "this channel has ended: connect again");
    }
    this.expectedUpload++;
    for (const m of u.messages) {
      if (this.ended) break;
      this.emit("data", m);
    }
    if (u.end && !this.ended) this.emit("end");
    return this.expectedUpload - 1;
  }
}

export interface HttpAgentApiOptions {
  listen: string;
  tls?: ServerTlsFiles;
  maxMessageBytes: number;
  logger: Logger;
}

export interface HttpAgentApi {
  readonly address: string;
  readonly channels: number;
  close(): Promise<void>;
}

class HttpError extends SwitchboardError {}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new HttpError(Code.RESOURCE_EXHAUSTED, `request body over ${limit} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function decode<T>(fn: { decode(b: Uint8Array): T }, body: Buffer, what: string): T {
  try {
    return fn.decode(body);
  } catch (e) {
    throw new HttpError(Code.INVALID_ARGUMENT, `the body is not a ${what} message: ${(e as Error).message}`);
  }
}

export async function startHttpAgentApi(core: HubCore, o: HttpAgentApiOptions): Promise<HttpAgentApi> {
  const log = o.logger.child({ part: "http-agent-api" });
  const channels = new Map<string, HttpAgentChannel>();
  const bodyLimit = o.maxMessageBytes + 64 * 1024;

  const metadataOf = (req: IncomingMessage): Metadata => {
    const md = new Metadata();
    const auth = req.headers.authorization;
    if (typeof auth === "string") md.set("authorization", auth);
    return md;
  };

  /** The channel named, when the caller presents the token that opened it. */
  const channelFor = (req: IncomingMessage, id: string): HttpAgentChannel => {
    const ch = channels.get(id);
    if (!ch) throw new HttpError(Code.NOT_FOUND, `no channel ${id.slice(0, 40)}: connect again`);
    const p: Principal = core.auth.requireAgent(metadataOf(req));
    if (p.tokenId !== ch.principalTokenId) {
      throw new HttpError(Code.PERMISSION_DENIED, "this channel was opened with another token");
    }
    return ch;
  };

  const send = (res: ServerResponse, status: number, body: Uint8Array | string, type = PROTOBUF): void => {
    if (res.headersSent || res.destroyed) return;
    res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body) });
    res.end(body);
  };

  const fail = (res: ServerResponse, err: unknown): void => {
    const code = err instanceof SwitchboardError ? err.code : Code.INTERNAL;
    const msg = err instanceof Error ? err.message : String(err);
    if (code === Code.INTERNAL) log.error({ err }, "agent HTTP request failed");
    if (res.headersSent || res.destroyed) return;
    res.setHeader("x-switchboard-code", String(code));
    send(res, HTTP_STATUS[code] ?? 500, `${codeName(code)}: ${msg}\n`, "text/plain; charset=utf-8");
  };

  const routes: Record<string, (req: IncomingMessage, res: ServerResponse) => Promise<void> | void> = {
    "POST /agent/v1/connect": async (req, res) => {
      const up = decode(HttpUpload, await readBody(req, bodyLimit), "HttpUpload");
      const hello = up.messages[0];
      if (up.messages.length !== 1 || hello?.body?.$case !== "hello") {
        throw new HttpError(Code.INVALID_ARGUMENT, "connect carries exactly one message: Hello");
      }
      const md = metadataOf(req);
      // Refuse here what the core would refuse first, with an HTTP status the agent can read.
      const p = core.auth.requireAgent(md);
      const ch = new HttpAgentChannel(md);
      ch.principalTokenId = p.tokenId;
      channels.set(ch.id, ch);
      core.connect(ch as unknown as Parameters<HubCore["connect"]>[0], p);
      ch.emit("data", hello);
      send(res, 200, HttpDownload.encode(ch.download()).finish());
    },
    "POST /agent/v1/poll": async (req, res) => {
      const p = decode(HttpPoll, await readBody(req, 64 * 1024), "HttpPoll");
      const ch = channelFor(req, p.channel);
      let gone = false;
      res.once("close", () => (gone = true));
      const down = await ch.poll(p.ack, Math.min(MAX_POLL_WAIT_MS, p.waitMs));
      if (!gone) send(res, 200, HttpDownload.encode(down).finish());
    },
    "POST /agent/v1/send": async (req, res) => {
      const u = decode(HttpUpload, await readBody(req, bodyLimit), "HttpUpload");
      const ch = channelFor(req, u.channel);
      const seq = ch.upload(u);
      send(res, 200, HttpSendAck.encode({ seq }).finish());
    },
    "POST /agent/v1/close": async (req, res) => {
      const p = decode(HttpPoll, await readBody(req, 64 * 1024), "HttpPoll");
      const ch = channelFor(req, p.channel);
      ch.drop("the agent closed its HTTP channel");
      res.writeHead(204).end();
    },
    "GET /agent/v1/stats": (req, res) => {
      core.auth.requireAgent(metadataOf(req));
      let queued = 0;
      let running = 0;
      for (const t of core.tasks.values()) {
        if (t.state === "queued") queued++;
        else if (t.state === "assigned" || t.state === "running") running++;
      }
      send(
        res,
        200,
        JSON.stringify({
          agents_connected: [...core.sessions.values()].filter((s) => s.connected).length,
          http_channels: [...channels.values()].filter((c) => !c.isEnded).length,
          tasks_queued: queued,
          tasks_running: running,
          hub_started_at_ms: core.startedAt,
        }) + "\n",
        "application/json",
      );
    },
  };

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? "/").split("?")[0];
    const route = routes[`${req.method} ${path}`];
    if (!route) {
      const known = Object.keys(routes).some((r) => r.endsWith(` ${path}`));
      fail(
        res,
        new HttpError(
          known ? Code.INVALID_ARGUMENT : Code.NOT_FOUND,
          known ? `${req.method} is not allowed on ${path}` : `no such path: ${path}`,
        ),
      );
      return;
    }
    // A route that throws before its first await is caught here too: no request takes the hub down.
    Promise.resolve()
      .then(() => route(req, res))
      .catch((err: unknown) => fail(res, err));
  };

  const server: Server = o.tls
    ? createHttpsServer(
        {
          cert: readFileSync(o.tls.cert),
          key: readFileSync(o.tls.key),
          ...(o.tls.clientCa
            ? { ca: readFileSync(o.tls.clientCa), requestCert: true, rejectUnauthorized: true }
            : {}),
        },
        handler,
      )
    : createHttpServer(handler);
  // Long polls outlive Node's default request and keep-alive timeouts.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = MAX_POLL_WAIT_MS + 10_000;

  const sweeper = setInterval(() => {
    const now = Date.now();
    for (const [id, ch] of channels) {
      if (ch.isEnded) {
        if (now - (ch.endedAt ?? now) > ENDED_KEEP_MS) channels.delete(id);
      } else if (!ch.polling && now - ch.lastActivity > SILENT_AFTER_MS) {
        log.warn({ channel: id }, "agent HTTP channel silent: treating it as disconnected");
        ch.drop(`no poll for ${Math.round((now - ch.lastActivity) / 1000)}s`);
      }
    }
  }, 1000);
  sweeper.unref();

  const sepAt = o.listen.lastIndexOf(":");
  const host = o.listen.slice(0, sepAt).replace(/^\[|\]$/g, "");
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(o.listen.slice(sepAt + 1)), host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as { port: number }).port;
  const reachable = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  const address = `${reachable}:${port}`;
  log.info({ address, tls: o.tls !== undefined }, "agent HTTP API listening");

  return {
    address,
    get channels() {
      return [...channels.values()].filter((c) => !c.isEnded).length;
    },
    close: async () => {
      clearInterval(sweeper);
      for (const ch of channels.values()) ch.end();
      server.closeIdleConnections();
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.closeAllConnections();
          resolve();
        }, 3000);
        server.close(() => {
          clearTimeout(force);
          resolve();
        });
      });
    },
  };
}
