// Reading tasks as clients see them: their info, their whole result, and their events to watch. A
// live (or recently finished) task is read from memory; an older one from the store, replayed with
// the same numbering a client saw live.
import { Code, shownName, SwitchboardError } from "../../common/errors.js";
import { isTerminal, stateToWire } from "../../common/task-state.js";
import {
  OutputStream,
  TaskSpec,
  type TaskEvent,
  type TaskInfo,
  type TaskResult,
} from "../../gen/switchboard/v1/task.js";
import type { AgentRegistry } from "../agents/agent-registry.js";
import { poolAllowed, type Principal } from "../auth.js";
import type { LiveTask, Watcher } from "./live-task.js";
import type { Store, StoredOutput, TaskRecord } from "../store/index.js";
import type { TaskTable } from "./task-table.js";

export const EMPTY = Buffer.alloc(0);

/** Generated messages carry bytes as Buffer; views over the same memory cost nothing. */
export function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/** A stored spec; one that no longer decodes reads as a spec of no kind. */
export function safeDecodeSpec(bytes: Uint8Array): TaskSpec {
  try {
    return TaskSpec.decode(bytes);
  } catch {
    return { kind: undefined };
  }
}

function notFound(taskId: string): SwitchboardError {
  return new SwitchboardError(Code.NOT_FOUND, `no task ${shownName(taskId)}: see switchboard tasks`);
}

export class TaskReader {
  constructor(
    private readonly store: Store,
    private readonly agents: AgentRegistry,
    private readonly tasks: TaskTable,
  ) {}

  taskInfo(t: LiveTask): TaskInfo {
    const f = t.finish;
    return toInfo(
      {
        id: t.id,
        kind: t.kind,
        target: t.target,
        state: t.state,
        agentId: t.agentId,
        requester: t.requester,
        createdAt: t.createdAt,
        assignedAt: t.assignedAt,
        startedAt: t.startedAt,
        finishedAt: t.finishedAt,
        deadlineAt: t.deadlineAt,
        exitCode: f?.exitCode ?? null,
        signal: f?.signal ?? null,
        errorCode: f?.errorCode ?? null,
        errorMessage: f?.errorMessage ?? null,
        reason: f?.reason ?? null,
        durationMs: f?.durationMs ?? null,
        stdoutBytes: t.stdoutBytes,
        stderrBytes: t.stderrBytes,
      },
      t.spec,
    );
  }

  recordInfo(r: TaskRecord, withSpec: boolean): TaskInfo {
    return toInfo(r, withSpec ? safeDecodeSpec(r.spec) : undefined);
  }

  /**
   * Refuses a principal scoped to pools a task outside them: the pool it was aimed at, or the
   * pool of the agent it ran on. Unscoped principals see every task.
   */
  async assertTaskVisible(p: Principal, taskId: string): Promise<void> {
    if (p.pools.length === 0) return;
    const t = this.tasks.get(taskId);
    let pool: string | undefined;
    let agentId: string | null = null;
    if (t) {
      pool = t.target.pool || undefined;
      agentId = t.agentId;
    } else {
      const rec = await this.store.getTask(taskId);
      if (!rec) return; // NOT_FOUND comes from the call itself
      pool = rec.target.pool;
      agentId = rec.agentId;
    }
    pool ??= agentId ? await this.agents.poolOf(agentId) : undefined;
    if (pool === undefined || !poolAllowed(p, pool)) {
      throw new SwitchboardError(
        Code.PERMISSION_DENIED,
        `token ${p.name} may not see task ${taskId} (scoped to pools ${p.pools.join(", ")})`,
      );
    }
  }

  /** The whole result of a task, live or stored. */
  async result(taskId: string): Promise<TaskResult> {
    const t = this.tasks.get(taskId);
    if (t) return this.liveResult(t);
    const rec = await this.store.getTask(taskId);
    if (!rec) throw notFound(taskId);
    const out = rec.stdoutBytes + rec.stderrBytes > 0 ? await this.storedOutput(taskId) : undefined;
    return {
      info: this.recordInfo(rec, true),
      stdout: out?.stdout ?? EMPTY,
      stderr: out?.stderr ?? EMPTY,
      result: rec.result ? asBuffer(rec.result) : EMPTY,
      outputTruncated: out?.truncated ?? false,
    };
  }

  async liveResult(t: LiveTask): Promise<TaskResult> {
    // The task as it is now, with its output as stored by now (which holds at least that much).
    const info = this.taskInfo(t);
    const result = t.finish?.result;
    const out = t.stdoutBytes + t.stderrBytes > 0 ? await this.storedOutput(t.id) : undefined;
    return {
      info,
      stdout: out?.stdout ?? EMPTY,
      stderr: out?.stderr ?? EMPTY,
      result: result ? asBuffer(result) : EMPTY,
      outputTruncated: out?.truncated ?? false,
    };
  }

  private async storedOutput(id: string): Promise<{ stdout: Buffer; stderr: Buffer; truncated: boolean }> {
    const o = await this.store.getOutput(id);
    return {
      stdout: Buffer.concat([o.stdout.head, o.stdout.tail]),
      stderr: Buffer.concat([o.stderr.head, o.stderr.tail]),
      truncated: o.stdout.droppedBytes + o.stderr.droppedBytes > 0,
    };
  }

  /**
   * Attach a watcher to a task, replaying events after `afterSeq`. A live (or recently finished)
   * task replays from memory with the numbering clients saw live; an older task is replayed
   * from the store as Queued(1), Assigned(2), Started(3), its kept output chunks, Finished.
   * Returns false when the task is already finished (everything has been delivered).
   */
  async watch(taskId: string, afterSeq: number, w: Watcher): Promise<boolean> {
    const t = this.tasks.get(taskId);
    if (t) {
      t.attach(w, afterSeq);
      return !t.terminal;
    }
    const rec = await this.store.getTask(taskId);
    if (!rec) throw notFound(taskId);
    // The output is read before the first event is delivered: the replay goes out in one turn.
    const chunks = rec.stdoutBytes + rec.stderrBytes > 0 ? (await this.store.getOutput(rec.id)).chunks : [];
    for (const ev of replayFromStore(rec, chunks)) if (ev.seq > afterSeq) w.deliver(ev, () => undefined);
    return !isTerminal(rec.state);
  }

  /** Stops a watcher of a task held in memory (one read from the store has nothing to stop). */
  detach(taskId: string, w: Watcher): void {
    this.tasks.get(taskId)?.detach(w);
  }
}

function* replayFromStore(r: TaskRecord, chunks: StoredOutput["chunks"]): Iterable<TaskEvent> {
  let seq = 0;
  const ev = (event: TaskEvent["event"], gapBytes = 0): TaskEvent => ({
    taskId: r.id,
    seq: ++seq,
    event,
    gapBytes,
  });
  yield ev({ $case: "queued", value: { queuedAtMs: r.createdAt } });
  if (r.agentId)
    yield ev({ $case: "assigned", value: { agentId: r.agentId, assignedAtMs: r.assignedAt ?? 0 } });
  if (r.startedAt) yield ev({ $case: "started", value: { startedAtMs: r.startedAt, pid: 0 } });
  for (const c of chunks) {
    const stream =
      c.stream === "stderr" ? OutputStream.OUTPUT_STREAM_STDERR : OutputStream.OUTPUT_STREAM_STDOUT;
    yield ev({ $case: "output", value: { stream, data: asBuffer(c.data) } }, c.gapBefore);
  }
  if (isTerminal(r.state)) {
    yield ev({
      $case: "finished",
      value: {
        state: stateToWire(r.state),
        exitCode: r.exitCode ?? -1,
        signal: r.signal ?? "",
        error: r.errorCode !== null ? { code: r.errorCode, message: r.errorMessage ?? "" } : undefined,
        durationMs: r.durationMs ?? 0,
        result: r.result ? asBuffer(r.result) : EMPTY,
        reason: r.reason ?? "",
      },
    });
  }
}

/** A task as the wire describes it, from what the hub knows of it live or stored. */
function toInfo(r: Omit<TaskRecord, "spec" | "result">, spec: TaskSpec | undefined): TaskInfo {
  return {
    taskId: r.id,
    kind: r.kind,
    target: { agentId: r.target.agentId ?? "", pool: r.target.pool ?? "", labels: r.target.labels ?? {} },
    state: stateToWire(r.state),
    agentId: r.agentId ?? "",
    requester: r.requester,
    createdAtMs: r.createdAt,
    assignedAtMs: r.assignedAt ?? 0,
    startedAtMs: r.startedAt ?? 0,
    finishedAtMs: r.finishedAt ?? 0,
    exitCode: r.exitCode ?? -1,
    signal: r.signal ?? "",
    error: r.errorCode !== null ? { code: r.errorCode, message: r.errorMessage ?? "" } : undefined,
    reason: r.reason ?? "",
    durationMs: r.durationMs ?? 0,
    deadlineMs: r.deadlineAt ?? 0,
    stdoutBytes: r.stdoutBytes,
    stderrBytes: r.stderrBytes,
    spec,
  };
}
