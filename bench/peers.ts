// The peers each benchmark is measured against, all on loopback: nats-server with a queue group
// of responders, a bare grpc-js unary echo server, and a bare grpc-js server-streaming server.
// Servers and responders run as child processes; the requesting side runs in this process.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { DIST_BENCH, freePort, spawnBinary, spawnNode, type Child } from "./harness.js";
import { waitFor } from "../src/common/wait-for.js";

const NATS_SERVER_CANDIDATES = [
  "/usr/sbin/nats-server",
  "/usr/bin/nats-server",
  "/usr/local/bin/nats-server",
];
const NATS_SUBJECT = "bench.echo";
const NATS_QUEUE = "responders";
const ECHO_METHOD = "/bench.Echo/Echo";
const PULL_METHOD = "/bench.Stream/Pull";

export function natsServerPath(): string {
  const found = NATS_SERVER_CANDIDATES.find((p) => existsSync(p));
  if (found === undefined) {
    throw new Error("nats-server not found (apt-get install nats-server, or npm run setup)");
  }
  return found;
}

export function natsServerVersion(): string {
  try {
    return execFileSync(natsServerPath(), ["--version"], { encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
}

export interface NatsPeer {
  server: Child;
  responders: Child;
  nc: NatsConnection;
  url: string;
  request(payload: Uint8Array): Promise<void>;
  stop(): Promise<void>;
}

/**
 * nats-server on its own free loopback port, a child process with `connections` responder
 * connections in one queue group, and a requester connection here.
 */
export async function startNatsPeer(connections = 2): Promise<NatsPeer> {
  const port = await freePort();
  const url = `nats://127.0.0.1:${port}`;
  const server = spawnBinary("nats-server", natsServerPath(), ["-a", "127.0.0.1", "-p", String(port)]);
  let responders: Child | undefined;
  try {
    const probe = await waitFor(() => connect({ servers: url, reconnect: false }), {
      timeout: 10_000,
      interval: 100,
      message: "nats-server",
    });
    await probe.close();
    responders = spawnNode("nats-responders", path.join(DIST_BENCH, "nats-responders.js"), {
      args: [
        "--url",
        url,
        "--subject",
        NATS_SUBJECT,
        "--queue",
        NATS_QUEUE,
        "--connections",
        String(connections),
      ],
    });
    await responders.waitForLine(/^READY/, 10_000);
    const nc = await connect({ servers: url, name: "bench-requester", noEcho: true });
    const r = responders;
    return {
      server,
      responders: r,
      nc,
      url,
      async request(payload) {
        const reply = await nc.request(NATS_SUBJECT, payload, { timeout: 10_000 });
        if (reply.data.length !== payload.length) throw new Error("nats: reply of the wrong size");
      },
      async stop() {
        await nc.close().catch(() => undefined);
        await r.stop();
        await server.stop();
      },
    };
  } catch (err) {
    await responders?.stop();
    await server.stop();
    throw err;
  }
}

const identity = (b: Buffer): Buffer => b;

export interface GrpcEchoPeer {
  server: Child;
  client: grpc.Client;
  call(payload: Buffer): Promise<void>;
  stop(): Promise<void>;
}

/** The bare grpc-js unary echo server in a child process, and a client channel here. */
export async function startGrpcEchoPeer(): Promise<GrpcEchoPeer> {
  const server = spawnNode("grpc-echo-server", path.join(DIST_BENCH, "grpc-echo-server.js"), { args: [] });
  try {
    const m = await server.waitForLine(/^READY (\d+)/, 10_000);
    const client = new grpc.Client(`127.0.0.1:${m[1]}`, grpc.credentials.createInsecure());
    await waitReady(client);
    return {
      server,
      client,
      call(payload) {
        return new Promise<void>((resolve, reject) => {
          client.makeUnaryRequest(ECHO_METHOD, identity, identity, payload, (err, res) => {
            if (err !== null) reject(err);
            else if (res?.length !== payload.length) reject(new Error("grpc echo: reply of the wrong size"));
            else resolve();
          });
        });
      },
      async stop() {
        client.close();
        await server.stop();
      },
    };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

export interface GrpcStreamPeer {
  server: Child;
  /** Streams `totalBytes` in messages of `messageBytes`; resolves with bytes received. */
  pull(
    totalBytes: number,
    messageBytes: number,
    timeoutMs: number,
  ): Promise<{ bytes: number; messages: number }>;
  stop(): Promise<void>;
}

/** The bare grpc-js server-streaming server in a child process, and a client channel here. */
export async function startGrpcStreamPeer(): Promise<GrpcStreamPeer> {
  const server = spawnNode("grpc-stream-server", path.join(DIST_BENCH, "grpc-stream-server.js"), {
    args: [],
  });
  try {
    const m = await server.waitForLine(/^READY (\d+)/, 10_000);
    const client = new grpc.Client(`127.0.0.1:${m[1]}`, grpc.credentials.createInsecure());
    await waitReady(client);
    return {
      server,
      pull(totalBytes, messageBytes, timeoutMs) {
        const req = Buffer.alloc(16);
        req.writeBigUInt64BE(BigInt(totalBytes), 0);
        req.writeUInt32BE(messageBytes, 8);
        return new Promise((resolve, reject) => {
          let bytes = 0;
          let messages = 0;
          const call = client.makeServerStreamRequest(PULL_METHOD, identity, identity, req, {
            deadline: Date.now() + timeoutMs,
          });
          call.on("data", (b: Buffer) => {
            bytes += b.length;
            messages++;
          });
          call.on("error", reject);
          call.on("end", () => resolve({ bytes, messages }));
        });
      },
      async stop() {
        client.close();
        await server.stop();
      },
    };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

function waitReady(client: grpc.Client): Promise<void> {
  return new Promise((resolve, reject) => {
    client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve()));
  });
}
