// The agent's local API on agent_port: the GridAgent gRPC service (spawn, stop, status and list of its
// supervised nodes) and, on the same port, plain HTTP/1.1 `/healthz` and `/metrics`. A connection that
// opens with the HTTP/2 preface goes to gRPC; anything else to the HTTP handler. gRPC calls need
// `authorization: Bearer <token>` with the agent's own token or its configured api_token. GridAgent is
// served twice: as switchboard.grid.v1.GridAgent and under seed 003's package-less name (/GridAgent/...).
import { createHash, randomUUID, timingSafeEqual } from "node:crypto";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createNetServer, type Server, type Socket } from "node:net";
import { Duplex } from "node:stream";
import {
  Server as GrpcServer,
  ServerCredentials,
  type sendUnaryData,
  type ServerUnaryCall,
} from "@grpc/grpc-js";
import { tokenFromMetadata } from "../common/auth.js";
import { Code, SwitchboardError, toServiceError } from "../common/errors.js";
import type { Logger } from "../common/logger.js";
import {
  GridAgentService,
  type GridAgentServer,
  type NodeStatusResponse,
  type SpawnNodeRequest,
  type SpawnNodeResponse,
  type StopNodeRequest,
  type StopNodeResponse,
} from "../gen/switchboard/grid/v1/grid_agent.js";
import type { NodeRecord } from "../gen/switchboard/v1/node.js";
import type { NodeHost } from "./nodes/node-host.js";
import { listenError } from "../common/startup-error.js";

const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * GridAgent as seed 003's agent.proto declares it, with no package: its methods are /GridAgent/SpawnNode
 * and so on, and their messages are ours field for field, so the handlers are the same.
 */
const SEED_GRID_AGENT_SERVICE = Object.fromEntries(
  Object.entries(GridAgentService).map(([name, method]) => [
    name,
    { ...method, path: method.path.replace(/^\/switchboard\.grid\.v1\./, "/") },
  ]),
) as unknown as typeof GridAgentService;

export interface LocalApiOptions {
  host: string;
  /** 0: any free port. */
  port: number;
  /** Bearer tokens accepted. */
  tokens: string[];
  nodes: NodeHost;
  logger: Logger;
  /** Prometheus text for /metrics. */
  metrics: () => string;
}

export interface LocalApi {
  readonly port: number;
  close(): Promise<void>;
}

/** A duplex over the socket whose reads start with `head`. */
function replay(socket: Socket, head: Buffer): Duplex {
  const d = new Duplex({
    read: () => socket.resume(),
    write: (chunk: Buffer, _enc, cb) => socket.write(chunk, cb),
    final: (cb) => socket.end(cb),
    destroy: (err, cb) => {
      socket.destroy(err ?? undefined);
      cb(err);
    },
  });
  d.push(head);
  socket.on("data", (chunk: Buffer) => {
    if (!d.push(chunk)) socket.pause();
  });
  socket.on("end", () => d.push(null));
  socket.on("close", () => d.destroy());
  return d;
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

function statusOf(n: NodeRecord): NodeStatusResponse {
  return {
    nodeId: n.nodeId,
    status: n.status,
    pid: n.pid,
    port: n.port,
    storagePath: n.storagePath,
    startedAt: n.startedAtMs,
    restartCount: n.restartCount,
  };
}

export async function startLocalApi(o: LocalApiOptions): Promise<LocalApi> {
  const accepted = o.tokens.filter((t) => t !== "").map(digest);
  const log = o.logger.child({ component: "local-api" });
  let commandIds = 0;

  const authorize = (call: ServerUnaryCall<unknown, unknown>): void => {
    const token = tokenFromMetadata(call.metadata);
    if (token === undefined) {
      throw new SwitchboardError(Code.UNAUTHENTICATED, "no token: send authorization: Bearer <token>");
    }
    const d = digest(token);
    if (!accepted.some((a) => timingSafeEqual(a, d))) {
      throw new SwitchboardError(Code.UNAUTHENTICATED, "this token is not accepted by the agent");
    }
  };

  /** Runs a command through the same path as the hub's; a failed reply becomes an error status. */
  const run = async (op: Parameters<NodeHost["handle"]>[0]["op"]): Promise<NodeRecord[]> => {
    const reply = await o.nodes.handle({ id: ++commandIds, op });
    if (reply.code !== 0) throw new SwitchboardError(reply.code, reply.errorMessage);
    return reply.nodes;
  };

  function unary<Req, Res>(
    fn: (req: Req) => Promise<Res>,
    onError?: (err: unknown) => Res | undefined,
  ): (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => void {
    return (call, cb) => {
      try {
        authorize(call);
      } catch (err) {
        cb(toServiceError(err));
        return;
      }
      fn(call.request).then(
        (res) => cb(null, res),
        (err: unknown) => {
          const soft = onError?.(err);
          if (soft !== undefined) cb(null, soft);
          else cb(toServiceError(err));
        },
      );
    };
  }

  const impl: GridAgentServer = {
    // As in the GridAgent contract: spawn and stop failures are success = false with a message.
    spawnNode: unary<SpawnNodeRequest, SpawnNodeResponse>(
      async (req) => {
        const nodeId = req.nodeId || `node-${randomUUID()}`;
        const [n] = await run({
          $case: "spawn",
          value: {
            nodeId,
            storagePath: req.storagePath,
            port: req.port,
            memoryLimitMb: req.memoryLimitMb,
            args: [],
            env: {},
            binary: "",
            copyFrom: "",
          },
        });
        return { success: true, nodeId, port: n?.port ?? req.port, pid: n?.pid ?? 0, errorMessage: "" };
      },
      (err) => ({
        success: false,
        nodeId: "",
        port: 0,
        pid: 0,
        errorMessage: err instanceof Error ? err.message : String(err),
      }),
    ),
    stopNode: unary<StopNodeRequest, StopNodeResponse>(
      async (req) => {
        await run({ $case: "stop", value: { nodeId: req.nodeId, graceMs: 0, forget: false } });
        return { success: true, errorMessage: "" };
      },
      (err) =>
        err instanceof SwitchboardError && err.code === Code.NOT_FOUND
          ? undefined // NOT_FOUND stays a status, as for GetNodeStatus
          : { success: false, errorMessage: err instanceof Error ? err.message : String(err) },
    ),
    getNodeStatus: unary(async (req) => {
      const [n] = await run({ $case: "status", value: { nodeId: req.nodeId } });
      if (!n) throw new SwitchboardError(Code.NOT_FOUND, `no node ${req.nodeId} on this agent`);
      return statusOf(n);
    }),
    listNodes: unary(() => Promise.resolve({ nodes: o.nodes.list().map(statusOf) })),
  };

  const grpc = new GrpcServer();
  grpc.addService(GridAgentService, impl);
  grpc.addService(SEED_GRID_AGENT_SERVICE, impl);
  const injector = grpc.createConnectionInjector(ServerCredentials.createInsecure());

  const http = createHttpServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET" }).end();
    } else if (path === "/healthz") {
      const trouble = o.nodes.trouble();
      res
        .writeHead(200, { "content-type": "application/json" })
        .end(
          JSON.stringify({ status: trouble ? "degraded" : "ok", ...(trouble ? { reason: trouble } : {}) }),
        );
    } else if (path === "/metrics") {
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(o.metrics());
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: try /healthz or /metrics\n");
    }
  });

  const sockets = new Set<Socket>();
  const server: Server = createNetServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    // The first bytes tell HTTP/2 (gRPC) from HTTP/1.1. Both servers read native sockets directly, past
    // anything unshifted, so each gets a stream that replays the bytes read here and then the socket's.
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const n = Math.min(head.length, HTTP2_PREFACE.length);
      const h2 = head.subarray(0, n).equals(HTTP2_PREFACE.subarray(0, n));
      if (h2 && head.length < HTTP2_PREFACE.length) return; // wait for the whole preface
      socket.off("data", onData);
      const stream = replay(socket, head);
      if (h2) injector.injectConnection(stream);
      else http.emit("connection", stream);
    };
    socket.on("data", onData);
    socket.on("error", () => socket.destroy());
  });

  await new Promise<void>((resolve, reject) => {
    const failed = (err: Error): void =>
      reject(
        listenError(
          err,
          "agent.agent_port",
          String(o.port),
          "set agent_port or --agent-port to a free port, 0 for any free port, or agent_api = false to run without the local API",
          {
            setting: "agent.agent_host",
            value: o.host,
            fix: "set agent_host or --agent-host to an address of this machine, such as 127.0.0.1",
          },
        ),
      );
    server.once("error", failed);
    server.listen(o.port, o.host, () => {
      server.off("error", failed);
      resolve();
    });
  });
  const port = (server.address() as { port: number }).port;
  log.info({ host: o.host, port }, "local API listening (GridAgent gRPC, /healthz, /metrics)");

  return {
    port,
    close: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      injector.destroy();
      grpc.forceShutdown();
      http.close();
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
