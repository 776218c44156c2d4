// A small in-test hub: a real grpc-js server implementing AgentService on a free loopback port, so the
// agent's link is tested over a real HTTP/2 stream. It welcomes (or refuses) every Hello, records what
// each session receives, and lets a test send hub messages and end sessions.
import {
  Server,
  ServerCredentials,
  type Metadata,
  type ServerDuplexStream,
  type ServiceError,
} from "@grpc/grpc-js";
import { serverOptions } from "../../common/grpc-options.js";
import {
  AgentServiceService,
  type AgentMessage,
  type AgentTaskEvent,
  type Hello,
  type HubMessage,
  type Welcome,
} from "../../gen/switchboard/v1/agent.js";
import type { OutputStream } from "../../gen/switchboard/v1/task.js";

export interface FakeHubOptions {
  welcome?: Partial<Welcome>;
  /** Return a refusal to end the call with that status instead of a Welcome. */
  refuse?: (hello: Hello, metadata: Metadata) => { code: number; details: string } | undefined;
}

export class FakeSession {
  readonly received: AgentMessage[] = [];
  hello: Hello | undefined;
  /** The agent half-closed its side. */
  agentEnded = false;
  /** The call is over, for whatever reason. */
  closed = false;

  constructor(
    readonly call: ServerDuplexStream<AgentMessage, HubMessage>,
    readonly metadata: Metadata,
  ) {}

  send(body: NonNullable<HubMessage["body"]>): void {
    this.call.write({ body });
  }

  /** Ends the call normally (status OK). */
  end(): void {
    if (!this.closed) this.call.end();
  }

  /** Ends the call with an error status. */
  fail(code: number, details: string): void {
    const err = Object.assign(new Error(details), { code, details }) as Partial<ServiceError>;
    this.call.emit("error", err);
  }

  events(taskId?: string): AgentTaskEvent[] {
    return this.received.flatMap((m) =>
      m.body?.$case === "event" && (taskId === undefined || m.body.value.taskId === taskId)
        ? [m.body.value]
        : [],
    );
  }

  granted(): number {
    let g = 0;
    for (const m of this.received) if (m.body?.$case === "credits") g = m.body.value.grantedTotal;
    return g;
  }

  kinds(): string[] {
    return this.received.map((m) => m.body?.$case ?? "empty");
  }

  output(taskId: string, stream: OutputStream): Buffer {
    return Buffer.concat(
      this.events(taskId).flatMap((e) =>
        e.event?.$case === "output" && e.event.value.stream === stream ? [e.event.value.data] : [],
      ),
    );
  }
}

export class FakeHub {
  readonly sessions: FakeSession[] = [];
  address = "";
  private readonly server = new Server(serverOptions());

  private constructor(private readonly opts: FakeHubOptions) {
    this.server.addService(AgentServiceService, {
      connect: (call: ServerDuplexStream<AgentMessage, HubMessage>) => this.onConnect(call),
    });
  }

  static async start(opts: FakeHubOptions = {}): Promise<FakeHub> {
    const hub = new FakeHub(opts);
    const port = await new Promise<number>((resolve, reject) =>
      hub.server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    hub.address = `127.0.0.1:${port}`;
    return hub;
  }

  /** The newest session. */
  get last(): FakeSession | undefined {
    return this.sessions.at(-1);
  }

  /** Sessions that got a Welcome and are still open. */
  live(): FakeSession[] {
    return this.sessions.filter((s) => !s.closed && s.hello !== undefined);
  }

  close(): void {
    this.server.forceShutdown();
  }

  private onConnect(call: ServerDuplexStream<AgentMessage, HubMessage>): void {
    const s = new FakeSession(call, call.metadata);
    this.sessions.push(s);
    call.on("data", (msg: AgentMessage) => {
      s.received.push(msg);
      if (msg.body?.$case !== "hello" || s.hello) return;
      const refusal = this.opts.refuse?.(msg.body.value, call.metadata);
      if (refusal) {
        s.fail(refusal.code, refusal.details);
        return;
      }
      s.hello = msg.body.value;
      s.send({
        $case: "welcome",
        value: {
          sessionId: `ses_${this.sessions.length}`,
          heartbeatIntervalMs: 5000,
          offlineAfterMs: 30000,
          maxMessageBytes: 16 * 1024 * 1024,
          initialOutputWindowBytes: 4 * 1024 * 1024,
          hubVersion: "fake",
          hubTimeMs: Date.now(),
          acceptsBatches: false,
          resumeGraceMs: 0,
          resume: undefined,
          inputOffsets: false,
          ...this.opts.welcome,
        },
      });
    });
    call.on("end", () => {
      s.agentEnded = true;
      s.end(); // like the hub: the agent closed its side, so the session is over
    });
    call.on("error", () => undefined);
    call.on("close", () => (s.closed = true));
    call.on("cancelled", () => (s.closed = true));
    call.on("finish", () => (s.closed = true));
  }
}
