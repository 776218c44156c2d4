// Bad bytes on the wire: garbage in gRPC frames and unknown methods get a clear status, and the
// hub keeps serving everyone else.
import { credentials, makeGenericClientConstructor, Metadata, type ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SwitchboardClient, echo } from "../src/client/index.js";
import { AgentMessage } from "../src/gen/switchboard/v1/agent.js";
import { agentToken, startAgent, startHub, stopAll, type HubProc } from "./support/processes.js";

let hub: HubProc;
let wireAgentToken: string;

beforeAll(async () => {
  hub = await startHub();
  await startAgent(hub, { agentId: "wire-1", pool: "wire" });
  wireAgentToken = await agentToken(hub, "wire");
});

afterAll(stopAll);

const raw = (b: Buffer): Buffer => b;
const RawClient = makeGenericClientConstructor(
  {
    execute: {
      path: "/switchboard.v1.ClientService/Execute",
      requestStream: false,
      responseStream: false,
      requestSerialize: raw,
      requestDeserialize: raw,
      responseSerialize: raw,
      responseDeserialize: raw,
    },
    connect: {
      path: "/switchboard.v1.AgentService/Connect",
      requestStream: true,
      responseStream: true,
      requestSerialize: raw,
      requestDeserialize: raw,
      responseSerialize: raw,
      responseDeserialize: raw,
    },
    nope: {
      path: "/switchboard.v1.ClientService/NoSuchMethod",
      requestStream: false,
      responseStream: false,
      requestSerialize: raw,
      requestDeserialize: raw,
      responseSerialize: raw,
      responseDeserialize: raw,
    },
  },
  "Raw",
);

function auth(token = hub.adminToken): Metadata {
  const md = new Metadata();
  md.set("authorization", `Bearer ${token}`);
  return md;
}

type Unary = (req: Buffer, md: Metadata, cb: (err: ServiceError | null) => void) => void;

describe("malformed input", () => {
  it("answers garbage frames with an error status and stays up", async () => {
    const c = new RawClient(hub.address, credentials.createInsecure()) as unknown as {
      execute: Unary;
      nope: Unary;
      connect: (md: Metadata) => NodeJS.ReadWriteStream & {
        on(e: "error", l: (e: ServiceError) => void): unknown;
        end(): void;
        write(b: Buffer): boolean;
      };
      close(): void;
    };
    const garbage = [
      Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]),
      Buffer.from("not a protobuf at all \u0000\u0001"),
      Buffer.alloc(0),
    ];
    for (const g of garbage) {
      const err = await new Promise<ServiceError | null>((res) => c.execute(g, auth(), (e) => res(e)));
      expect(err).not.toBeNull();
      expect([3, 13, 14]).toContain(err!.code); // INVALID_ARGUMENT, INTERNAL or UNAVAILABLE (no target)
      expect(err!.details.length).toBeGreaterThan(0);
    }
    const unknown = await new Promise<ServiceError | null>((res) =>
      c.nope(Buffer.alloc(1), auth(), (e) => res(e)),
    );
    expect(unknown?.code).toBe(12); // UNIMPLEMENTED
    // An agent token, so that the garbage reaches the agent protocol rather than the role check.
    const stream = c.connect(auth(wireAgentToken));
    const ended = new Promise<ServiceError>((res) => stream.on("error", res));
    stream.write(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]));
    const e = await ended;
    expect([3, 13, 16]).toContain(e.code);
    // A well-formed Hello, then a batch that holds a batch: refused, with a reason.
    const nested = c.connect(auth(wireAgentToken));
    const refused = new Promise<ServiceError>((res) => nested.on("error", res));
    const hello = AgentMessage.fromPartial({
      body: {
        $case: "hello",
        value: { agentId: "nester", pool: "wire", maxConcurrency: 1, acceptsBatches: true },
      },
    });
    nested.write(Buffer.from(AgentMessage.encode(hello).finish()));
    const inner = AgentMessage.fromPartial({ body: { $case: "batch", value: { messages: [] } } });
    const outer = AgentMessage.fromPartial({ body: { $case: "batch", value: { messages: [inner] } } });
    nested.write(Buffer.from(AgentMessage.encode(outer).finish()));
    const n = await refused;
    expect(n.code).toBe(3);
    expect(n.details).toMatch(/batch/);
    c.close();
    const client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
    try {
      const r = await client.execute({ ...echo(new TextEncoder().encode("ok")), target: { pool: "wire" } });
      expect(Buffer.from(r.result).toString()).toBe("ok");
    } finally {
      client.close();
    }
  });
});
