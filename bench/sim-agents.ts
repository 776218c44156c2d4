// Many lightweight simulated agents in one process, for the 10,000-agent benchmark. Each speaks
// the real agent protocol over its own HTTP/2 connection (raw gRPC framing on node:http2, far
// lighter than a grpc-js channel per agent): Hello, Welcome, credits, heartbeats at the hub's
// interval, answers to probes, echo answers to Assigns, and redial with the agent's jittered
// backoff when the link drops. Prints "connected N" on stdout whenever the count changes.
//
//   node dist/bench/sim-agents.js HUB TOKEN COUNT PREFIX
import http2 from "node:http2";
import { Backoff } from "../src/agent/link/backoff.js";
import { AgentMessage, HubMessage, type Hello } from "../src/gen/switchboard/v1/agent.js";
import { TaskState } from "../src/gen/switchboard/v1/task.js";

const [hub, token, countArg, prefix] = process.argv.slice(2);
if (!hub || !token || !countArg || !prefix) {
  process.stderr.write("usage: sim-agents HUB TOKEN COUNT PREFIX\n");
  process.exit(2);
}
const count = Number(countArg);
let connected = 0;
let reported = -1;

function frame(msg: AgentMessage): Buffer {
  const body = AgentMessage.encode(msg).finish();
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = 0;
  out.writeUInt32BE(body.length, 1);
  out.set(body, 5);
  return out;
}

class SimAgent {
  private readonly backoff = new Backoff();
  private up = false;

  constructor(private readonly id: string) {}

  dial(): void {
    const session = http2.connect(`http://${hub}`);
    session.on("error", () => undefined);
    const stream = session.request({
      ":method": "POST",
      ":path": "/switchboard.v1.AgentService/Connect",
      "content-type": "application/grpc",
      te: "trailers",
      authorization: `Bearer ${token}`,
    });
    let buf: Buffer = Buffer.alloc(0);
    let beat: NodeJS.Timeout | undefined;
    let granted = 1;
    const send = (m: AgentMessage) => {
      if (!stream.destroyed) stream.write(frame(m));
    };
    const hello: Hello = {
      agentId: this.id,
      pool: "sim",
      labels: {},
      hostname: "sim",
      platform: "sim",
      version: "sim",
      taskKinds: ["echo"],
      maxConcurrency: 1,
      instanceId: `${this.id}-${process.pid}`,
      acceptsBatches: false,
      resume: undefined,
      nodes: [],
      maxStorageNodes: 0,
      agentEndpoint: "",
    };
    send({ body: { $case: "hello", value: hello } });
    const onMessage = (m: HubMessage) => {
      const b = m.body;
      if (b?.$case === "welcome") {
        this.up = true;
        this.backoff.reset();
        connected++;
        send({ body: { $case: "credits", value: { grantedTotal: granted } } });
        beat = setInterval(
          () =>
            send({
              body: {
                $case: "heartbeat",
                value: {
                  datasources: [],
                  nodes: [],
                  sentAtMs: Date.now(),
                  running: 0,
                  inboxDepth: 0,
                  outboxDepth: 0,
                  outboxCapacity: 1000,
                  lastCompletedTaskId: "",
                  degraded: false,
                  degradedReason: "",
                  completedTotal: granted - 1,
                },
              },
            }),
          b.value.heartbeatIntervalMs || 5000,
        );
      } else if (b?.$case === "probe") {
        send({ body: { $case: "probeReply", value: { id: b.value.id } } });
      } else if (b?.$case === "assign") {
        const payload =
          b.value.spec?.kind?.$case === "echo" ? b.value.spec.kind.value.payload : Buffer.alloc(0);
        send({
          body: {
            $case: "event",
            value: {
              taskId: b.value.taskId,
              seq: 1,
              event: {
                $case: "finished",
                value: {
                  state: TaskState.TASK_STATE_SUCCEEDED,
                  exitCode: 0,
                  signal: "",
                  error: undefined,
                  durationMs: 0,
                  result: payload,
                  reason: "",
                },
              },
            },
          },
        });
        send({ body: { $case: "credits", value: { grantedTotal: ++granted } } });
      } else if (b?.$case === "batch") {
        for (const x of b.value.messages) onMessage(x);
      }
    };
    stream.on("data", (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= 5) {
        const len = buf.readUInt32BE(1);
        if (buf.length < 5 + len) break;
        onMessage(HubMessage.decode(buf.subarray(5, 5 + len)));
        buf = buf.subarray(5 + len);
      }
    });
    let ended = false;
    // Like the real agent: a hub that does not answer Hello within 15 s is dialled again.
    const welcomeTimer = setTimeout(() => {
      if (!this.up) end();
    }, 15_000);
    const end = () => {
      if (ended) return;
      ended = true;
      clearTimeout(welcomeTimer);
      clearInterval(beat);
      if (this.up) connected--;
      this.up = false;
      session.destroy();
      setTimeout(() => this.dial(), this.backoff.next());
    };
    stream.on("close", end);
    stream.on("error", end);
    session.on("close", end);
  }
}

for (let i = 0; i < count; i++) new SimAgent(`${prefix}-${i}`).dial();
setInterval(() => {
  if (connected !== reported) {
    reported = connected;
    process.stdout.write(`connected ${connected}\n`);
  }
}, 250);
