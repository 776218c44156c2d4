// An agent written to seed 000's protocol (`/AgntService/Connect`), made to look like one of ours: this
// adapter stands between the seed stream and the hub's own agent handling, which sees a Hello (worker
// `worker_id` of pool `agent_id`, task kind sql), Credits, heartbeats and task events, and writes
// Assigns and Cancels that become ServerMessages. A seed agent answers a query with one QueryResult
// holding every row as a JSON array of objects; the adapter turns that into the header and row lines
// of a sql task's output, sent within the task's output window, then Finished.
import { EventEmitter } from "node:events";
import type { Metadata, ServerDuplexStream } from "@grpc/grpc-js";
import { Code, shownName } from "../../common/errors.js";
import { failedFinished } from "../../common/finished.js";
import { newInstanceId } from "../../common/ids.js";
import type { JsonValue, SqlResultHeader, SqlResultSummary } from "../../common/sql-result.js";
import type { AgentMessage as SeedAgentMessage, ServerMessage } from "../../gen/seed000/app.js";
import type { AgentMessage, AgentTaskEvent, HubMessage } from "../../gen/switchboard/v1/agent.js";
import { Finished, OutputStream, TaskState, type TaskSpec } from "../../gen/switchboard/v1/task.js";

/** Queries a seed worker is sent at once (the seed's server queued without bound; we do not). */
export const SEED_WORKER_CONCURRENCY = 8;
const CHUNK_BYTES = 256 * 1024;
const NAME = /^[\w.@-]{1,60}$/;

type SeedCall = ServerDuplexStream<SeedAgentMessage, ServerMessage>;

interface PendingTask {
  seq: number;
  startedAt: number;
  /** Output lines not yet sent for want of window. */
  queued: Buffer[];
  window: number;
  finished: Finished | undefined;
  /** A pump() of this task is on the stack (the hub can grant window from inside an output event). */
  pumping: boolean;
}

/**
 * The hub-facing side: an EventEmitter shaped like the grpc-js duplex call HubCore.connect() serves
 * ("data", "end", "error", "cancelled", "close"; write, end, metadata).
 */
export class SeedAgentCall extends EventEmitter {
  readonly metadata: Metadata;
  private hello = false;
  private agentId = "";
  private workerId = "";
  private granted = 0;
  private readonly tasks = new Map<string, PendingTask>();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private initialWindow = 0;
  private ended = false;

  constructor(private readonly seed: SeedCall) {
    super();
    this.metadata = seed.metadata;
    seed.on("data", (m: SeedAgentMessage) => this.fromSeed(m));
    seed.on("end", () => {
      this.stopHeartbeats();
      this.emit("end");
    });
    seed.on("error", (e: Error) => {
      this.stopHeartbeats();
      this.emit("error", e);
    });
    seed.on("cancelled", () => {
      this.stopHeartbeats();
      this.emit("cancelled");
    });
    seed.on("close", () => {
      this.stopHeartbeats();
      this.emit("close");
    });
    // The hub ends a call by emitting "error" with a status on it; pass that to the seed stream.
    this.on("error", (e: Error & { code?: number }) => {
      if (this.ended || e.code === undefined) return;
      this.ended = true;
      this.stopHeartbeats();
      try {
        seed.emit("error", e);
      } catch {
        // already gone
      }
    });
  }

  /** As HubCore sees it: the seed stream typed as one of ours. */
  asAgentCall(): ServerDuplexStream<AgentMessage, HubMessage> {
    return this as unknown as ServerDuplexStream<AgentMessage, HubMessage>;
  }

  // ---- hub -> seed agent ----

  write(msg: HubMessage): boolean {
    const body = msg.body;
    switch (body?.$case) {
      case "welcome":
        this.initialWindow = body.value.initialOutputWindowBytes || Number.POSITIVE_INFINITY;
        this.startHeartbeats(body.value.heartbeatIntervalMs || 5000);
        break;
      case "batch":
        for (const m of body.value.messages) this.write(m);
        break;
      case "assign":
        this.onAssign(body.value.taskId, body.value.spec);
        break;
      case "cancel": {
        // The seed protocol cannot cancel a query: the task ends here; a late result is dropped.
        const t = this.tasks.get(body.value.taskId);
        if (t && !t.finished) {
          this.finish(
            body.value.taskId,
            Finished.fromPartial({
              state: TaskState.TASK_STATE_CANCELLED,
              exitCode: -1,
              error: { code: Code.CANCELLED, message: body.value.reason || "cancelled" },
              reason: `${body.value.reason || "cancelled"} (a seed-protocol agent cannot stop its query; its result will be dropped)`,
              durationMs: Date.now() - t.startedAt,
            }),
          );
        }
        break;
      }
      case "window": {
        const t = this.tasks.get(body.value.taskId);
        if (t) {
          t.window += body.value.bytes;
          this.pump(body.value.taskId, t);
        }
        break;
      }
      case "probe":
        // Liveness of a seed agent is its stream: answer for it.
        this.toHub({ body: { $case: "probeReply", value: { id: body.value.id } } });
        break;
      default:
        // heartbeat, ack, drain, set_concurrency: nothing a seed agent understands.
        break;
    }
    return true;
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.stopHeartbeats();
    try {
      this.seed.end();
    } catch {
      // already gone
    }
  }

  // ---- seed agent -> hub ----

  private fromSeed(m: SeedAgentMessage): void {
    if (!this.hello) {
      const agentId = m.agentId.trim();
      const workerId = m.workerId.trim();
      if (!NAME.test(agentId) || !NAME.test(workerId)) {
        this.emit(
          "error",
          Object.assign(new Error("bad first message"), {
            code: Code.INVALID_ARGUMENT,
            details: `the first message must carry agent_id and worker_id (1-60 letters, digits and . _ - @), got agent_id ${shownName(agentId)} and worker_id ${shownName(workerId)}`,
          }),
        );
        return;
      }
      this.hello = true;
      this.agentId = agentId;
      this.workerId = workerId;
      this.toHub({
        body: {
          $case: "hello",
          value: {
            agentId: `${agentId}:${workerId}`,
            pool: agentId,
            labels: { protocol: "seed000", worker_id: workerId },
            hostname: "",
            platform: "seed000",
            version: "seed000",
            taskKinds: ["sql"],
            maxConcurrency: SEED_WORKER_CONCURRENCY,
            instanceId: newInstanceId(),
            acceptsBatches: false,
            resume: undefined,
            nodes: [],
            maxStorageNodes: 0,
            agentEndpoint: "",
          },
        },
      });
      this.granted = SEED_WORKER_CONCURRENCY;
      this.toHub({ body: { $case: "credits", value: { grantedTotal: this.granted } } });
      return;
    }
    // Heartbeats of the seed agent need no answer: its stream is its liveness, and ours go on a timer.
    if (m.queryResult)
      this.onResult(m.queryResult.requestId, m.queryResult.json, m.queryResult.metaData, m.message);
  }

  private onAssign(taskId: string, spec: TaskSpec | undefined): void {
    const s = spec?.kind;
    const t: PendingTask = {
      seq: 0,
      startedAt: Date.now(),
      queued: [],
      window: this.initialWindow,
      finished: undefined,
      pumping: false,
    };
    this.tasks.set(taskId, t);
    if (s?.$case !== "sql") {
      this.finish(taskId, failedFinished(Code.INVALID_ARGUMENT, `a seed-protocol agent runs only sql tasks`));
      return;
    }
    const sql = s.value;
    if (sql.paramsJson.trim() !== "" && sql.paramsJson.trim() !== "[]") {
      this.finish(
        taskId,
        failedFinished(
          Code.INVALID_ARGUMENT,
          `seed-protocol agent ${this.agentId}:${this.workerId} takes no query parameters`,
        ),
      );
      return;
    }
    this.event(taskId, t, { $case: "started", value: { startedAtMs: t.startedAt, pid: 0 } });
    try {
      this.seed.write({ database: sql.datasource, query: sql.query, requestId: taskId, tblName: sql.table });
    } catch (e) {
      this.finish(
        taskId,
        failedFinished(Code.UNAVAILABLE, `the seed agent's stream is gone: ${(e as Error).message}`),
      );
    }
  }

  private onResult(taskId: string, json: string, metaData: string, message: string): void {
    const t = this.tasks.get(taskId);
    if (!t || t.finished) return; // unknown, cancelled, or a duplicate: dropped
    const durationMs = Date.now() - t.startedAt;
    const fail = (why: string): void => this.finish(taskId, failedFinished(Code.UNKNOWN, why, durationMs));
    if (json.trim() === "" && message.trim() !== "" && !/^(ok|success)\b/i.test(message.trim())) {
      // Seed agents write "error: <why>"; the answer to the client adds that prefix itself.
      fail(message.trim().replace(/^error:\s*/i, "") || message.trim());
      return;
    }
    let rows: unknown;
    try {
      rows = json.trim() === "" ? [] : JSON.parse(json);
    } catch (e) {
      fail(`the seed agent's json is not JSON: ${(e as Error).message}`);
      return;
    }
    if (!Array.isArray(rows)) {
      fail("the seed agent's json is not an array of rows");
      return;
    }
    let table: JsonValue = null;
    if (metaData.trim() !== "") {
      try {
        table = JSON.parse(metaData) as JsonValue;
      } catch {
        table = metaData;
      }
    }
    // Columns: the keys of the rows, in first-seen order (the seed protocol has no column metadata).
    const names: string[] = [];
    const seen = new Set<string>();
    for (const r of rows as unknown[]) {
      if (r && typeof r === "object" && !Array.isArray(r)) {
        for (const k of Object.keys(r)) {
          if (seen.has(k)) continue;
          seen.add(k);
          names.push(k);
        }
      }
    }
    const header = {
      columns: names.map((name) => ({ name, type: "", nullable: null })),
      table,
    } as unknown as SqlResultHeader;
    const lines: string[] = [JSON.stringify(header)];
    let bytes = 0;
    for (const r of rows as unknown[]) {
      const obj = (r && typeof r === "object" ? r : {}) as Record<string, JsonValue>;
      const line = JSON.stringify(Array.isArray(r) ? r : names.map((n) => obj[n] ?? null));
      bytes += Buffer.byteLength(line) + 1;
      lines.push(line);
    }
    let chunk: string[] = [];
    let size = 0;
    for (const line of lines) {
      chunk.push(line, "\n");
      size += line.length + 1;
      if (size >= CHUNK_BYTES) {
        t.queued.push(Buffer.from(chunk.join("")));
        chunk = [];
        size = 0;
      }
    }
    if (chunk.length > 0) t.queued.push(Buffer.from(chunk.join("")));
    const summary: SqlResultSummary = { row_count: rows.length, bytes, affected_rows: null };
    t.finished = Finished.fromPartial({
      state: TaskState.TASK_STATE_SUCCEEDED,
      exitCode: 0,
      durationMs,
      result: Buffer.from(JSON.stringify(summary)),
      reason: message,
    });
    this.pump(taskId, t);
  }

  /**
   * Sends queued output within the window, then the Finished once everything is out. The hub answers
   * an output event synchronously, sometimes with more window (which calls pump() again): the queue is
   * advanced before each event, and a nested call leaves the sending to the loop already running, so no
   * piece goes out twice and the stack does not grow with the result.
   */
  private pump(taskId: string, t: PendingTask): void {
    if (t.pumping) return;
    t.pumping = true;
    try {
      while (t.queued.length > 0 && t.window > 0) {
        const head = t.queued[0]!;
        const n = Math.min(head.length, t.window);
        if (n === head.length) t.queued.shift();
        else t.queued[0] = head.subarray(n);
        t.window -= n;
        this.event(taskId, t, {
          $case: "output",
          value: { stream: OutputStream.OUTPUT_STREAM_STDOUT, data: head.subarray(0, n) },
        });
      }
    } finally {
      t.pumping = false;
    }
    if (t.queued.length === 0 && t.finished && this.tasks.has(taskId)) {
      this.event(taskId, t, { $case: "finished", value: t.finished });
      this.tasks.delete(taskId);
      // One slot back for each finished task: the hub may send the next query.
      this.granted += 1;
      this.toHub({ body: { $case: "credits", value: { grantedTotal: this.granted } } });
    }
  }

  private finish(taskId: string, f: Finished): void {
    const t = this.tasks.get(taskId);
    if (!t) return;
    t.queued = [];
    t.finished = f;
    this.pump(taskId, t);
  }

  private event(taskId: string, t: PendingTask, event: AgentTaskEvent["event"]): void {
    this.toHub({ body: { $case: "event", value: { taskId, seq: ++t.seq, event } } });
  }

  private toHub(m: AgentMessage): void {
    if (this.ended) return;
    this.emit("data", m);
  }

  private startHeartbeats(intervalMs: number): void {
    this.stopHeartbeats();
    const beat = (): void =>
      this.toHub({
        body: {
          $case: "heartbeat",
          value: {
            sentAtMs: Date.now(),
            running: this.tasks.size,
            inboxDepth: 0,
            outboxDepth: 0,
            outboxCapacity: 0,
            lastCompletedTaskId: "",
            degraded: false,
            degradedReason: "",
            completedTotal: 0,
            datasources: [],
            nodes: [],
          },
        },
      });
    this.heartbeatTimer = setInterval(beat, intervalMs);
    this.heartbeatTimer.unref();
  }

  private stopHeartbeats(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }
}
