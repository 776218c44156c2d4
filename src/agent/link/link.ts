// The agent's link to the hub: dials the addresses in turn over one gRPC bidi stream, says Hello with
// its bearer token, waits for Welcome, and drains the outbox into the stream. On any end it redials:
// with jittered backoff, at the cap after a refusal (a config mistake), at once after a Drain.
import { type StatusObject } from "@grpc/grpc-js";
import { bearerMetadata } from "../../common/auth.js";
import { Code, codeName } from "../../common/errors.js";
import { FastAgentServiceClient } from "../../common/codec.js";
import { CoalescingWriter } from "../../common/coalescing-writer.js";
import { clientOptions } from "../../common/grpc-options.js";
import { clientChannel, type ClientChannel, type ClientTlsFiles } from "../../common/tls.js";
import type { Logger } from "../../common/logger.js";
import {
  type AgentMessage,
  type Hello,
  type HubMessage,
  type Resume,
  type Welcome,
} from "../../gen/switchboard/v1/agent.js";
import { Backoff } from "./backoff.js";
import { HttpHubCall } from "./http-call.js";
import { outputBytes, type Outbox } from "./outbox.js";

export interface LinkSession {
  /** Increases with every dial; tags what belongs to this session. */
  readonly epoch: number;
  readonly hub: string;
  readonly welcome: Welcome;
  readonly connectedAt: number;
}

export interface LinkEnd {
  code: number;
  details: string;
  /** The hub sent Drain on this session. */
  drained: boolean;
}

export interface LinkHandler {
  sessionStarted(session: LinkSession): void;
  message(session: LinkSession, msg: HubMessage): void;
  sessionEnded(session: LinkSession, end: LinkEnd): void;
}

export interface AgentLinkOptions {
  addresses: readonly string[];
  token: string;
  hello: Hello;
  /** Read at each dial: the broken session to resume, if the agent holds its tasks. */
  resume?: () => Resume | undefined;
  /** Read at each dial: the executor pool size now (the hub may have changed it). */
  maxConcurrency?: () => number;
  /** Read at each dial: the supervised nodes now, for the hub to reconcile with its registry. */
  nodes?: () => Hello["nodes"];
  outbox: Outbox;
  handler: LinkHandler;
  logger: Logger;
  backoff?: Backoff;
  /** How long a dialled hub may take to answer Hello. */
  welcomeTimeoutMs?: number;
  /** After the agent half-closes: how long the hub may take to end the stream. */
  closeTimeoutMs?: number;
  /**
   * Outbox depth above which the agent stops reading the hub's stream until the outbox has room: only a
   * hub that breaks the credit contract can push it there, and it must not grow the agent's memory.
   */
  readPauseDepth?: number;
  /** TLS to the hub; absent: plaintext. */
  tls?: ClientTlsFiles;
  /** "grpc" (default): one bidi stream; "http": HTTP/1.1 long-polling on the hub's HTTP port. */
  transport?: "grpc" | "http";
  /** HTTP transport: requests in flight to the hub at once (default 2). */
  hubConcurrency?: number;
}

/** Refusals that mean the agent's own config is wrong: retried slowly, and said loudly. */
const REFUSALS: ReadonlySet<number> = new Set([
  Code.UNAUTHENTICATED,
  Code.PERMISSION_DENIED,
  Code.INVALID_ARGUMENT,
]);

/** Two Drains closer than this: the second redial backs off instead of going at once. */
const DRAIN_REPEAT_MS = 5000;

/** dialing covers the backoff sleeps between dials; closing: shutdown began, no new dials. */
type LinkState = "idle" | "dialing" | "connected" | "closing" | "closed";

const LINK_TRANSITIONS: Record<LinkState, readonly LinkState[]> = {
  idle: ["dialing", "closing"],
  dialing: ["connected", "closing"],
  connected: ["dialing", "closing"],
  closing: ["closed"],
  closed: [],
};

/** What the link needs of a call to the hub: a gRPC bidi stream, or the HTTP long-poll stand-in. */
interface HubCall {
  write(m: AgentMessage): boolean;
  end(): void;
  cancel(): void;
  pause(): void;
  resume(): void;
  on(event: "data", cb: (m: HubMessage) => void): unknown;
  on(event: "error", cb: (e: Error) => void): unknown;
  on(event: "status", cb: (st: StatusObject) => void): unknown;
  once(event: "drain", cb: () => void): unknown;
}

interface Dial {
  hub: string;
  call: HubCall;
  session: LinkSession | undefined;
  ended: Promise<void>;
  /** Writes what the coalescing writer holds (set when the hub accepts batches). */
  flush?: () => void;
}

interface DialEnd extends LinkEnd {
  session: LinkSession | undefined;
}

export class AgentLink {
  private readonly opts: AgentLinkOptions;
  private readonly backoff: Backoff;
  /** Credentials and channel options, TLS files read once at start (as the hub reads its own). */
  private readonly channel: ClientChannel;
  private state: LinkState = "idle";
  private epochs = 0;
  private attempt = 0;
  private addressIndex = 0;
  private dial: Dial | undefined;
  private connectWaiters = new Set<() => void>();
  private wakeFromSleep: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private lastProblem = "not dialled yet";
  private lastDrainAt = 0;

  constructor(opts: AgentLinkOptions) {
    if (opts.addresses.length === 0) throw new Error("the agent needs at least one hub address");
    this.opts = opts;
    this.backoff = opts.backoff ?? new Backoff();
    this.channel = clientChannel(opts.tls);
  }

  start(): void {
    if (!this.move("dialing")) return;
    this.loop = this.run();
  }

  /** A welcomed session is open (also while closing it). */
  isConnected(): boolean {
    return this.dial?.session !== undefined;
  }

  get session(): LinkSession | undefined {
    return this.dial?.session;
  }

  /** Resolves once a session is up; rejects at the deadline with what went wrong last. */
  whenConnected(timeoutMs: number): Promise<void> {
    if (this.isConnected()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.connectWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(() => {
        this.connectWaiters.delete(done);
        reject(
          new Error(
            `agent ${this.opts.hello.agentId} did not connect to ${this.opts.addresses.join(", ")} within ${timeoutMs} ms: ${this.lastProblem}`,
          ),
        );
      }, timeoutMs);
      this.connectWaiters.add(done);
    });
  }

  /**
   * Ends a session cleanly: waits (bounded) until the outbox was handed to the stream, half-closes it,
   * and gives the hub closeTimeoutMs to end its side before cancelling.
   */
  async release(epoch: number, flushMs: number): Promise<void> {
    const dial = this.dial;
    if (!dial?.session || dial.session.epoch !== epoch) return;
    const flushed = await this.opts.outbox.whenEmpty(flushMs);
    if (this.dial !== dial) return;
    if (!flushed) {
      this.opts.logger.warn(
        { hub: dial.hub, outboxDepth: this.opts.outbox.depth },
        "outbox not flushed in time; closing anyway",
      );
    }
    dial.flush?.();
    dial.call.end();
    const closeMs = this.opts.closeTimeoutMs ?? 5000;
    const ended = await endedWithin(dial, closeMs);
    if (!ended) {
      this.opts.logger.warn(
        { hub: dial.hub, closeMs },
        "the hub did not end the stream after the agent closed it; cancelling",
      );
      dial.call.cancel();
      await dial.ended;
    }
  }

  /** No more dials (shutdown); the current session, if any, stays until close(). */
  stopDialing(): void {
    if (this.move("closing")) this.wakeFromSleep?.();
  }

  /** Shutdown: stop dialling, flush and close the current session, and wait for the link to rest. */
  async close(flushMs: number): Promise<void> {
    this.stopDialing();
    const dial = this.dial;
    if (dial?.session) await this.release(dial.session.epoch, flushMs);
    else if (dial) {
      dial.call.cancel(); // a dial still waiting for its Welcome
      await dial.ended;
    }
    await this.loop;
    this.move("closed");
  }

  private move(next: LinkState): boolean {
    if (!LINK_TRANSITIONS[this.state].includes(next)) return false;
    this.state = next;
    return true;
  }

  private get stopping(): boolean {
    return this.state === "closing" || this.state === "closed";
  }

  private async run(): Promise<void> {
    while (this.state === "dialing" || this.state === "connected") {
      const hub = this.opts.addresses[this.addressIndex % this.opts.addresses.length]!;
      this.attempt += 1;
      const end = await this.dialOnce(hub);
      // In turn, the next dial goes to the next address; but tasks of a broken session can resume
      // only on the hub that holds them, so while the agent holds some it redials that one.
      if (end.drained || !this.opts.resume?.()) this.addressIndex += 1;
      if (this.stopping) {
        this.logLink(end.session ? "disconnected" : "dial failed", hub, end, 0);
        break;
      }
      this.move("dialing");
      let wait: number;
      if (end.drained && Date.now() - this.lastDrainAt > DRAIN_REPEAT_MS) {
        this.lastDrainAt = Date.now();
        this.backoff.reset();
        wait = 0;
      } else if (end.drained) {
        // Drained again right away (every hub is draining?): back off, or the agent would spin.
        wait = this.backoff.next();
      } else if (REFUSALS.has(end.code)) {
        wait = this.backoff.maxMs;
      } else {
        if (end.session) this.backoff.reset();
        wait = this.backoff.next();
      }
      this.logLink(end.session ? "disconnected" : "dial failed", hub, end, wait);
      if (REFUSALS.has(end.code)) {
        this.opts.logger.error(
          { hub, code: codeName(end.code), reason: end.details, retryInMs: wait },
          `the hub refused agent ${this.opts.hello.agentId}: ${end.details || codeName(end.code)}; check its token, agent id and pool`,
        );
      }
      await this.sleep(wait);
    }
  }

  private dialOnce(hub: string): Promise<DialEnd> {
    return new Promise((resolve) => {
      const hello: Hello = {
        ...this.opts.hello,
        maxConcurrency: this.opts.maxConcurrency?.() ?? this.opts.hello.maxConcurrency,
        resume: this.opts.resume?.(),
        nodes: this.opts.nodes?.() ?? this.opts.hello.nodes,
      };
      let call: HubCall;
      let closeClient: () => void;
      let sendHello: () => void;
      if (this.opts.transport === "http") {
        const httpCall = new HttpHubCall({
          address: hub,
          token: this.opts.token,
          ...(this.opts.tls ? { tls: this.opts.tls } : {}),
          concurrency: this.opts.hubConcurrency ?? 2,
        });
        call = httpCall;
        closeClient = () => httpCall.close();
        sendHello = () => httpCall.start(hello);
      } else {
        const client = new FastAgentServiceClient(hub, this.channel.credentials, {
          ...clientOptions(),
          ...this.channel.options,
        });
        const grpcCall = client.connect(bearerMetadata(this.opts.token));
        call = grpcCall;
        closeClient = () => client.close();
        sendHello = () => grpcCall.write({ body: { $case: "hello", value: hello } });
      }
      const epoch = ++this.epochs;
      let drained = false;
      let localReason = "";
      let readPaused = false;
      let markEnded!: () => void;
      const dial: Dial = { hub, call, session: undefined, ended: new Promise((r) => (markEnded = r)) };
      this.dial = dial;
      const welcomeMs = this.opts.welcomeTimeoutMs ?? 15_000;
      const welcomeTimer = setTimeout(() => {
        localReason = `no Welcome within ${welcomeMs} ms`;
        call.cancel();
      }, welcomeMs);

      const onMessage = (msg: HubMessage): void => {
        if (msg.body?.$case === "batch") {
          for (const m of msg.body.value.messages) if (m.body?.$case !== "batch") onMessage(m);
          return;
        }
        try {
          if (!dial.session) {
            if (msg.body?.$case !== "welcome") {
              this.opts.logger.debug({ hub, kind: msg.body?.$case }, "message before Welcome ignored");
              return;
            }
            clearTimeout(welcomeTimer);
            this.welcomed(dial, epoch, msg.body.value);
            return;
          }
          if (msg.body?.$case === "welcome") {
            this.opts.logger.debug({ hub }, "second Welcome ignored");
            return;
          }
          if (msg.body?.$case === "drain") drained = true;
          this.opts.handler.message(dial.session, msg);
          const limit = this.opts.readPauseDepth;
          if (limit !== undefined && !readPaused && this.opts.outbox.depth > limit) {
            readPaused = true;
            call.pause();
            this.opts.outbox.onceRoom(() => {
              readPaused = false;
              call.resume();
            });
          }
        } catch (e) {
          // A bug or bad input must not take the agent down: log it and keep the session.
          this.opts.logger.error({ err: e, hub, kind: msg.body?.$case }, "handling a hub message failed");
        }
      };
      call.on("data", onMessage);
      // 'status' follows every 'error' with the same code; this listener only keeps 'error' from throwing.
      call.on("error", () => undefined);
      call.on("status", (st: StatusObject) => {
        clearTimeout(welcomeTimer);
        const details = localReason || st.details;
        const session = dial.session;
        if (session) {
          this.opts.outbox.detach();
          this.lastProblem = `session with ${hub} ended: ${codeName(st.code)} ${details}`;
          try {
            this.opts.handler.sessionEnded(session, { code: st.code, details, drained });
          } catch (e) {
            this.opts.logger.error({ err: e, hub }, "ending the session failed");
          }
        } else {
          this.lastProblem = `${hub}: ${codeName(st.code)} ${details}`;
        }
        if (this.dial === dial) this.dial = undefined;
        closeClient();
        markEnded();
        resolve({ session, code: st.code, details, drained });
      });
      sendHello();
    });
  }

  private welcomed(dial: Dial, epoch: number, welcome: Welcome): void {
    const session: LinkSession = { epoch, hub: dial.hub, welcome, connectedAt: Date.now() };
    dial.session = session;
    this.move("connected"); // stays closing when shutdown began during the dial
    const call = dial.call;
    let write = (m: AgentMessage): boolean => call.write(m);
    if (welcome.acceptsBatches) {
      const writer = new CoalescingWriter<AgentMessage>({
        write: (m) => call.write(m),
        onceDrain: (cb) => call.once("drain", cb),
        batch: (messages) => ({ body: { $case: "batch", value: { messages } } }),
        payloadBytes: outputBytes,
      });
      dial.flush = writer.flush;
      write = (m) => writer.write(m);
    }
    this.logLink("connected", dial.hub, { session, code: Code.OK, details: "", drained: false }, 0);
    // The session starts before the outbox writes to it: a resumed session first puts back the
    // events the hub did not receive, ahead of what was queued while the link was down.
    this.opts.handler.sessionStarted(session);
    this.opts.outbox.attach({ write, onceDrain: (cb) => call.once("drain", cb) });
    for (const w of [...this.connectWaiters]) w();
  }

  /** One shape for every connect and disconnect line, so they can be queried together. */
  private logLink(
    event: "connected" | "disconnected" | "dial failed",
    hub: string,
    end: DialEnd,
    nextDialInMs: number,
  ): void {
    const fields = {
      event,
      hub,
      attempt: this.attempt,
      sessionId: end.session?.welcome.sessionId ?? "",
      code: codeName(end.code),
      reason: end.details,
      connectedForMs: end.session && event !== "connected" ? Date.now() - end.session.connectedAt : 0,
      nextDialInMs,
    };
    if (event === "connected") this.opts.logger.info(fields, `connected to hub ${hub}`);
    else
      this.opts.logger.warn(
        fields,
        event === "disconnected" ? `disconnected from hub ${hub}` : `cannot reach hub ${hub}`,
      );
  }

  private sleep(ms: number): Promise<void> {
    if (ms <= 0 || this.state !== "dialing") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wakeFromSleep = () => {
        this.wakeFromSleep = undefined;
        done();
      };
    });
  }
}

/** true once the dial's call ended, false at the deadline (whose timer never outlives the wait). */
function endedWithin(dial: Dial, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    void dial.ended.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}
