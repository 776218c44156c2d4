// One connected agent: its stream, its credits, its health. Health is Healthy while heartbeats
// arrive on time and the agent reports no trouble, Degraded when they are late or it reports
// trouble, Offline once its link is down: the stream is gone, or (a transport without keepalive)
// silent for two heartbeat intervals.
import type { ServerDuplexStream } from "@grpc/grpc-js";
import type { AgentMessage, Heartbeat, Hello, HubMessage } from "../../gen/switchboard/v1/agent.js";
import type { Principal } from "../auth.js";
import type { SchedAgent } from "../scheduler.js";
import { CoalescingWriter } from "../../common/coalescing-writer.js";

/**
 * Within one incoming batch, acknowledge past this many events or output bytes; every batch that
 * carried events is acknowledged once it has been handled anyway.
 */
const ACK_EVENTS = 1024;
const ACK_BYTES = 8 * 1024 * 1024;

export type Health = "healthy" | "degraded" | "offline";

export class AgentSession {
  readonly agentId: string;
  readonly pool: string;
  readonly labels: Record<string, string>;
  readonly connectedAt = Date.now();
  lastSeenAt = Date.now();
  lastHeartbeat: Heartbeat | undefined;
  /** Cumulative credits the agent granted, and tasks the hub assigned, in this session. */
  grantedTotal = 0;
  assignedTotal = 0;
  /** Tasks assigned to this session and not finished. */
  readonly tasks = new Set<string>();
  /** The agent said Goodbye: no new work. */
  leaving = false;
  /**
   * False when the agent's protocol has no resume (seed 000's workers): nothing could come back for
   * its tasks, so a broken stream ends them at once rather than after the resume grace.
   */
  resumable = true;
  /** Logically gone: the hub has accounted for its tasks. */
  closed = false;
  /**
   * The stream broke while the agent held tasks: they stay the agent's for the resume grace, in
   * case it comes back with this session's id. No new work goes to a detached session.
   */
  detachedAt: number | undefined;
  detachedWhy = "";
  /** AgentTaskEvents received on this stream, and the count last acknowledged to the agent. */
  eventsReceived = 0;
  eventsAcked = 0;
  /** Output bytes received since the last Ack. */
  unackedBytes = 0;
  private streamEnded = false;
  /** Set when the agent accepts batches: what one turn sends to it goes as one message. */
  private readonly writer: CoalescingWriter<HubMessage> | undefined;
  health: Health = "healthy";
  healthReason = "";
  completedTotal = 0;
  readonly sched: SchedAgent;
  /** The probe in flight through the agent's pipeline, if any. */
  probe: { id: number; sentAt: number } | undefined;
  private probeIds = 0;
  private lastProbeAt = Date.now();
  /**
   * Whether the transport itself tells a live link from a dead one. gRPC does (HTTP/2 keepalive
   * ends the stream of a dead peer within two heartbeat intervals), so silence on a live stream
   * means a late agent; HTTP long polls do not, so there silence is how a broken link shows.
   */
  readonly keepalive: boolean;

  constructor(
    readonly sessionId: string,
    readonly hello: Hello,
    readonly principal: Principal,
    private readonly call: ServerDuplexStream<AgentMessage, HubMessage>,
  ) {
    this.agentId = hello.agentId;
    this.keepalive = (call as { keepalive?: boolean }).keepalive !== false;
    this.pool = hello.pool || "default";
    this.labels = { ...hello.labels };
    this.sched = {
      id: this.agentId,
      pool: this.pool,
      labels: this.labels,
      kinds: new Set(hello.taskKinds),
      free: 0,
      accepting: true,
      impaired: false,
    };
    if (hello.acceptsBatches) {
      this.writer = new CoalescingWriter<HubMessage>({
        write: (m) => this.call.write(m),
        batch: (messages) => ({ body: { $case: "batch", value: { messages } } }),
        // Task input (an upload's bytes) is bulk: large pieces go alone rather than in one huge batch.
        payloadBytes: (m) => (m.body?.$case === "input" ? m.body.value.data.length : 0),
      });
    }
  }

  /** Connected now: neither closed nor waiting for the agent to resume. */
  get connected(): boolean {
    return !this.closed && this.detachedAt === undefined;
  }

  /** Counts an event; true when enough is unacknowledged that the Ack should go now. */
  noteEvent(outputBytes: number): boolean {
    this.eventsReceived++;
    this.unackedBytes += outputBytes;
    return this.eventsReceived - this.eventsAcked >= ACK_EVENTS || this.unackedBytes >= ACK_BYTES;
  }

  /** Acknowledges what was received, if anything is unacknowledged. */
  sendAck(): void {
    if (this.eventsReceived === this.eventsAcked) return;
    this.eventsAcked = this.eventsReceived;
    this.unackedBytes = 0;
    this.send({ body: { $case: "ack", value: { eventsReceived: this.eventsReceived } } });
  }

  send(msg: HubMessage): void {
    if (this.streamEnded) return;
    // Volume to the agent is bounded by credits and task count, so grpc-js's buffer stays small.
    if (this.writer) this.writer.write(msg);
    else this.call.write(msg);
  }

  /** Sends a probe through the agent's pipeline, one per interval, unless one is still out. */
  sendProbe(now: number, intervalMs: number): void {
    if (this.probe || now - this.lastProbeAt < intervalMs) return;
    this.lastProbeAt = now;
    this.probe = { id: ++this.probeIds, sentAt: now };
    this.send({ body: { $case: "probe", value: { id: this.probe.id } } });
  }

  /** The pipeline answered; returns true when that was the probe in flight. */
  probeAnswered(id: number): boolean {
    if (this.probe?.id !== id) return false;
    this.probe = undefined;
    return true;
  }

  /** Apply a Credits message; returns true when capacity grew. */
  grant(total: number): boolean {
    if (total <= this.grantedTotal) return false; // duplicates or going backwards: ignore
    this.grantedTotal = total;
    this.refreshFree();
    return true;
  }

  noteAssigned(taskId: string): void {
    this.assignedTotal++;
    this.tasks.add(taskId);
    this.refreshFree();
  }

  refreshFree(): void {
    this.sched.free = Math.max(0, this.grantedTotal - this.assignedTotal);
  }

  /** Recompute health; returns true when it changed. */
  evaluate(now: number, heartbeatIntervalMs: number): boolean {
    const before = `${this.health}|${this.healthReason}`;
    const silentMs = now - this.lastSeenAt;
    let reportedTrouble = false;
    if (this.closed) {
      this.health = "offline";
      this.healthReason = "disconnected";
    } else if (this.detachedAt !== undefined) {
      this.health = "offline";
      this.healthReason = `link lost at ${new Date(this.detachedAt).toISOString()} (${this.detachedWhy}); its tasks are held for it to resume`;
    } else if (silentMs > 2 * heartbeatIntervalMs && !this.keepalive) {
      // The same rule as on gRPC, where keepalive has ended a dead peer's stream by now.
      this.health = "offline";
      this.healthReason = `link lost: no word from the agent since ${new Date(this.lastSeenAt).toISOString()} (HTTP transport)`;
    } else if (silentMs > 2 * heartbeatIntervalMs) {
      this.health = "degraded";
      this.healthReason = `heartbeat late by ${Math.round((silentMs - heartbeatIntervalMs) / 1000)}s`;
    } else if (this.probe && now - this.probe.sentAt > 2 * heartbeatIntervalMs) {
      this.health = "degraded";
      this.healthReason = `its pipeline has not answered a probe for ${Math.round((now - this.probe.sentAt) / 1000)}s`;
    } else if (this.lastHeartbeat?.degraded) {
      this.health = "degraded";
      this.healthReason = this.lastHeartbeat.degradedReason || "the agent reports trouble";
      reportedTrouble = true;
    } else if (this.leaving) {
      this.health = "degraded";
      this.healthReason = "shutting down";
    } else {
      this.health = "healthy";
      this.healthReason = "";
    }
    // An agent that answers on time but reports trouble in a part of it (a datasource down or refused,
    // a node crash-looping) still runs the rest: it takes work, after healthy agents (see Scheduler).
    this.sched.accepting = this.health === "healthy" || reportedTrouble;
    this.sched.impaired = this.health !== "healthy";
    return before !== `${this.health}|${this.healthReason}`;
  }

  /** The stream is gone (the agent may resume on a new one): nothing more is written to it. */
  streamGone(): void {
    this.streamEnded = true;
    this.sched.accepting = false;
    this.writer?.discard();
  }

  /** End the stream, with a status when given. */
  end(code?: number, details?: string): void {
    if (this.streamEnded) return;
    this.streamEnded = true;
    this.sched.accepting = false;
    try {
      if (code === undefined) this.writer?.flush();
      else this.writer?.discard();
      if (code !== undefined) {
        this.call.emit("error", Object.assign(new Error(details), { code, details }));
      } else {
        this.call.end();
      }
    } catch {
      // the stream is already gone
    }
  }
}
