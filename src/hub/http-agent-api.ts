// The agent API over plain HTTP/1.1 long-polling, on the hub's HTTP port, for networks that let only
// HTTP(S)/1.1 out. Each agent connection is a channel that stands in for the gRPC stream: the hub core
// sees the same call (write, end, the 'data' / 'end' / 'error' / 'cancelled' events), so sessions,
// credits, resume and the scheduler are the ones of the gRPC transport. Wire format: agent.proto's
// HttpPoll / HttpDownload / HttpUpload / HttpSendAck.
//
// The port faces networks the hub does not trust, so a request costs little until it presents a
// valid agent token: the token is checked as soon as the headers are in, before a byte of the body
// is read; each route reads at most the body it carries; headers, bodies and whole requests have
// deadlines; and connections that have not presented a valid token are capped.
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
import type { Socket } from "node:net";
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
import type { HttpGuards } from "./config.js";
import type { HubCore } from "./hub-core.js";

const PROTOBUF = "application/x-protobuf";
/** Longest a poll is held open. */
export const MAX_POLL_WAIT_MS = 30_000;
/** A channel nobody polls for this long (beyond a poll's own wait) is gone, like a dead TCP peer. */
const SILENT_AFTER_MS = 15_000;
/** An ended channel is kept this long for the agent to read how it ended. */
const ENDED_KEEP_MS = 60_000;
/** Connect carries one Hello: labels, task kinds, the nodes the agent runs and the tasks it resumes. */
const CONNECT_BODY_BYTES = 1024 * 1024;
/** Poll and close carry an HttpPoll: a channel id, an acknowledgement and a wait. */
const POLL_BODY_BYTES = 4 * 1024;
/** Headers of an agent's request are a handful of short lines; a proxy adds a few. */
const MAX_HEADER_BYTES = 16 * 1024;
const MAX_HEADERS_COUNT = 64;
/** After refusing a request whose body it does not read, how long the hub waits for the client to close. */
const LINGER_MS = 2_000;

const HTTP_STATUS: Partial<Record<number, number>> = {
  [Code.INVALID_ARGUMENT]: 400,
  [Code.UNAUTHENTICATED]: 401,
  [Code.PERMISSION_DENIED]: 403,
  [Code.NOT_FOUND]: 404,
  [Code.FAILED_PRECONDITION]: 409,
  [Code.DEADLINE_EXCEEDED]: 408,
  [Code.RESOURCE_EXHAUSTED]: 413,
  [Code.UNAVAILABLE]: 503,
};

/** How long a connect waits for the hub's first answer to its Hello before it returns without one. */
const CONNECT_ANSWER_WAIT_MS = 10_000;

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
  guards: HttpGuards;
  logger: Logger;
}

export interface HttpAgentApi {
  readonly address: string;
  readonly channels: number;
  close(): Promise<void>;
}

/**
 * The body, at most `limit` bytes, each piece within `idleMs` of the one before. Routes call it only
 * after the token was checked: no body is read for a caller without one.
 */
function readBody(req: IncomingMessage, limit: number, idleMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (err?: Error): void => {
      clearTimeout(idle);
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", done);
      req.off("close", onClose);
      if (err) {
        req.pause(); // the rest is not read: the answer closes the connection (closeAfter)
        reject(err);
      } else resolve(Buffer.concat(chunks));
    };
    const idle = setTimeout(
      () =>
        done(
          new SwitchboardError(
            Code.DEADLINE_EXCEEDED,
            `no body bytes for ${idleMs / 1000}s: send the body at once`,
          ),
        ),
      idleMs,
    );
    const onData = (c: Buffer): void => {
      size += c.length;
      if (size > limit)
        return done(new SwitchboardError(Code.RESOURCE_EXHAUSTED, `request body over ${limit} bytes`));
      chunks.push(c);
      idle.refresh();
    };
    const onEnd = (): void => done();
    const onClose = (): void => {
      if (!req.complete)
        done(new SwitchboardError(Code.CANCELLED, "the client went away before its body arrived"));
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", done);
    req.on("close", onClose);
  });
}

/**
 * Ends a response whose request body the hub has not read (all of it), and closes the connection
 * without reading the rest. Left alone, Node would read the rest of the body after the answer to
 * drop it (a flood of large bodies then costs the hub all it takes to read them), and would destroy
 * the socket the moment the answer is out: with the body still arriving, the kernel then resets the
 * connection, and a client still sending often sees EPIPE instead of the answer (4 of 30 did, in a
 * flood of 16 MiB bodies). So the body is marked taken and paused (reading stops once the request's
 * small buffer is full), and the close lingers, as careful servers do: the answer and a FIN go out,
 * and the socket goes when the client closes, or after LINGER_MS.
 */
function closeAfter(req: IncomingMessage, res: ServerResponse, socket: Socket): void {
  res.setHeader("connection", "close");
  req.pause();
  req.read(0); // a request read from is not drained by Node when its response ends
  socket.destroySoon = function lingeringClose(this: Socket): void {
    this.end();
    const timer = setTimeout(() => this.destroy(), LINGER_MS);
    timer.unref();
    this.once("close", () => clearTimeout(timer));
  };
}

function decode<T>(fn: { decode(b: Uint8Array): T }, body: Buffer, what: string): T {
  try {
    return fn.decode(body);
  } catch (e) {
    throw new SwitchboardError(
      Code.INVALID_ARGUMENT,
      `the body is not a ${what} message: ${(e as Error).message}`,
    );
  }
}

interface Route {
  /** The largest body the route reads: what its message can carry. */
  maxBody: number;
  handle(req: IncomingMessage, res: ServerResponse, p: Principal): Promise<void> | void;
}

export async function startHttpAgentApi(core: HubCore, o: HttpAgentApiOptions): Promise<HttpAgentApi> {
  const log = o.logger.child({ part: "http-agent-api" });
  const channels = new Map<string, HttpAgentChannel>();
  const g = o.guards;
  // An upload carries output batches: at most one message of the size limit beyond the agent's own bound.
  const sendLimit = o.maxMessageBytes + 64 * 1024;
  const body = (req: IncomingMessage, limit: number): Promise<Buffer> =>
    readBody(req, limit, g.bodyIdleTimeoutMs);

  const metadataOf = (req: IncomingMessage): Metadata => {
    const md = new Metadata();
    const auth = req.headers.authorization;
    if (typeof auth === "string") md.set("authorization", auth);
    return md;
  };

  /** The channel named, when the caller presents the token that opened it. */
  const channelFor = (p: Principal, id: string): HttpAgentChannel => {
    const ch = channels.get(id);
    if (!ch) throw new SwitchboardError(Code.NOT_FOUND, `no channel ${id.slice(0, 40)}: connect again`);
    if (p.tokenId !== ch.principalTokenId) {
      throw new SwitchboardError(Code.PERMISSION_DENIED, "this channel was opened with another token");
    }
    return ch;
  };

  const send = (res: ServerResponse, status: number, body: Uint8Array | string, type = PROTOBUF): void => {
    if (res.headersSent || res.destroyed) return;
    res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body) });
    res.end(body);
  };

  /** Answers with the error; `close`: the connection closes after it (lingering, see closeAfter). */
  const fail = (req: IncomingMessage, res: ServerResponse, err: unknown, close: boolean): void => {
    const code = err instanceof SwitchboardError ? err.code : Code.INTERNAL;
    const msg = err instanceof Error ? err.message : String(err);
    if (code === Code.INTERNAL) log.error({ err }, "agent HTTP request failed");
    if (res.headersSent || res.destroyed) return;
    if (close && res.socket) closeAfter(req, res, res.socket);
    res.setHeader("x-switchboard-code", String(code));
    send(res, HTTP_STATUS[code] ?? 500, `${codeName(code)}: ${msg}\n`, "text/plain; charset=utf-8");
  };

  const routes: Record<string, Route> = {
    "POST /agent/v1/connect": {
      maxBody: CONNECT_BODY_BYTES,
      handle: async (req, res, p) => {
        const up = decode(HttpUpload, await body(req, CONNECT_BODY_BYTES), "HttpUpload");
        const hello = up.messages[0];
        if (up.messages.length !== 1 || hello?.body?.$case !== "hello") {
          throw new SwitchboardError(Code.INVALID_ARGUMENT, "connect carries exactly one message: Hello");
        }
        const ch = new HttpAgentChannel(metadataOf(req));
        ch.principalTokenId = p.tokenId;
        channels.set(ch.id, ch);
        core.connect(ch as unknown as Parameters<HubCore["connect"]>[0], p);
        ch.emit("data", hello);
        // Admission reads the store before it answers: the answer carries its Welcome (or refusal).
        const first = await ch.poll(0, CONNECT_ANSWER_WAIT_MS);
        send(res, 200, HttpDownload.encode(first).finish());
      },
    },
    "POST /agent/v1/poll": {
      maxBody: POLL_BODY_BYTES,
      handle: async (req, res, p) => {
        const poll = decode(HttpPoll, await body(req, POLL_BODY_BYTES), "HttpPoll");
        const ch = channelFor(p, poll.channel);
        let gone = false;
        res.once("close", () => (gone = true));
        const down = await ch.poll(poll.ack, Math.min(MAX_POLL_WAIT_MS, poll.waitMs));
        if (!gone) send(res, 200, HttpDownload.encode(down).finish());
      },
    },
    "POST /agent/v1/send": {
      maxBody: sendLimit,
      handle: async (req, res, p) => {
        const u = decode(HttpUpload, await body(req, sendLimit), "HttpUpload");
        const seq = channelFor(p, u.channel).upload(u);
        send(res, 200, HttpSendAck.encode({ seq }).finish());
      },
    },
    "POST /agent/v1/close": {
      maxBody: POLL_BODY_BYTES,
      handle: async (req, res, p) => {
        const poll = decode(HttpPoll, await body(req, POLL_BODY_BYTES), "HttpPoll");
        channelFor(p, poll.channel).drop("the agent closed its HTTP channel");
        res.writeHead(204).end();
      },
    },
    "GET /agent/v1/stats": {
      maxBody: 0,
      handle: (_req, res) => {
        const { queued, running } = core.tasks.counts();
        send(
          res,
          200,
          JSON.stringify({
            agents_connected: core.agents.connectedCount(),
            http_channels: [...channels.values()].filter((c) => !c.isEnded).length,
            tasks_queued: queued,
            tasks_running: running,
            hub_started_at_ms: core.startedAt,
          }) + "\n",
          "application/json",
        );
      },
    },
  };

  /** Connections that have not yet presented a valid token (on any of their requests). */
  const unauthenticated = new Set<Socket>();
  /** Connections whose last answer closes them: nothing more is read from them as a request. */
  const closing = new WeakSet<Socket>();
  let capWarnedAt = 0;

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const socket = req.socket;
    if (closing.has(socket)) {
      socket.destroy(); // a request sent behind a refused one
      return;
    }
    // Refused from its headers: the body is never read, and the connection closes after the answer.
    const refuse = (err: unknown): void => {
      closing.add(socket);
      fail(req, res, err, true);
    };
    const path = (req.url ?? "/").split("?")[0];
    const route = routes[`${req.method} ${path}`];
    if (!route) {
      const known = Object.keys(routes).some((r) => r.endsWith(` ${path}`));
      refuse(
        new SwitchboardError(
          known ? Code.INVALID_ARGUMENT : Code.NOT_FOUND,
          known ? `${req.method} is not allowed on ${path}` : `no such path: ${path}`,
        ),
      );
      return;
    }
    const served = (p: Principal): void => {
      unauthenticated.delete(socket);
      const declared = Number(req.headers["content-length"] ?? 0);
      if (declared > route.maxBody) {
        refuse(
          new SwitchboardError(
            Code.RESOURCE_EXHAUSTED,
            `request body of ${declared} bytes is over the ${route.maxBody} bytes ${path} takes`,
          ),
        );
        return;
      }
      // A route that throws before its first await is caught here too: no request takes the hub down.
      Promise.resolve()
        .then(() => route.handle(req, res, p))
        .catch((err: unknown) => {
          // Answered before its body was all read (too large, too slow): the connection closes too.
          if (!req.complete) closing.add(socket);
          fail(req, res, err, !req.complete);
        });
    };
    // The token first, from the headers alone: a caller without one costs no body read (the body
    // waits unread in the request until a route reads it).
    core.auth.requireAgent(metadataOf(req)).then((p) => served(p), refuse);
  };

  // Node's own guards, set where they apply: headersTimeout from a request's first byte (a new
  // connection's too), requestTimeout until the whole request has arrived (a held long poll has long
  // arrived), both checked every connectionsCheckingInterval.
  const httpOptions = {
    maxHeaderSize: MAX_HEADER_BYTES,
    headersTimeout: g.headersTimeoutMs,
    requestTimeout: g.requestTimeoutMs,
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(g.headersTimeoutMs / 4))),
    // Between requests an agent's connection idles at most through a poll's wait.
    keepAliveTimeout: MAX_POLL_WAIT_MS + 10_000,
  };
  const server: Server = o.tls
    ? createHttpsServer(
        {
          ...httpOptions,
          handshakeTimeout: g.headersTimeoutMs,
          cert: readFileSync(o.tls.cert),
          key: readFileSync(o.tls.key),
          ...(o.tls.clientCa
            ? { ca: readFileSync(o.tls.clientCa), requestCert: true, rejectUnauthorized: true }
            : {}),
        },
        handler,
      )
    : createHttpServer(httpOptions, handler);
  server.maxHeadersCount = MAX_HEADERS_COUNT;
  // With TLS, a connection counts from its handshake's end (the handshake has its own timeout).
  server.on(o.tls ? "secureConnection" : "connection", (socket: Socket) => {
    if (unauthenticated.size >= g.maxUnauthenticated) {
      socket.destroy();
      const now = Date.now();
      if (now - capWarnedAt > 10_000) {
        capWarnedAt = now;
        log.warn(
          { limit: g.maxUnauthenticated },
          "agent HTTP API: as many connections without a valid token as allowed; closing new ones (hub.http_max_unauthenticated)",
        );
      }
      return;
    }
    unauthenticated.add(socket);
    socket.once("close", () => unauthenticated.delete(socket));
  });

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
