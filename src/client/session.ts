// One bidirectional Session stream that carries many tasks at once. Calls are told apart by a
// ref the client picks; a broken stream fails every call it carried and the next call opens a
// new one. Pipelining here is what makes the SDK cheap per task (see the benchmarks).
import { status, type ClientDuplexStream, type Metadata } from "@grpc/grpc-js";
import {
  SessionMode,
  type ClientServiceClient,
  type SessionRequest,
  type SessionResponse,
  type SubmitRequest,
} from "../gen/switchboard/v1/client.js";
import type { TaskResult, TaskSpec } from "../gen/switchboard/v1/task.js";
import { CoalescingWriter } from "../common/coalescing-writer.js";
import { SwitchboardError } from "../common/errors.js";
import { callError } from "./errors.js";

interface Pending {
  mode: SessionMode.SESSION_MODE_RESULT | SessionMode.SESSION_MODE_RESULT_ONLY | SessionMode.SESSION_MODE_ACK;
  taskId?: string;
  /** Set by an abort that came before the hub accepted the task: cancel it once accepted. */
  cancelOnAccept?: string;
  onAccepted?: (taskId: string) => void;
  resolve(v: TaskResult | string): void;
  reject(e: SwitchboardError): void;
}

export class SessionMux {
  private call: ClientDuplexStream<SessionRequest, SessionResponse> | undefined;
  /** Requests made in one turn of the event loop go to the hub as one message. */
  private writer: CoalescingWriter<SessionRequest> | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextRef = 1;
  private closed = false;

  constructor(
    private readonly rpc: ClientServiceClient,
    private readonly metadata: () => Metadata,
    private readonly hub: string,
  ) {}

  /** Submits and resolves with the task id once the hub has accepted (stored) the task. */
  submit(req: SubmitRequest, signal?: AbortSignal): Promise<string> {
    return this.start(req, SessionMode.SESSION_MODE_ACK, signal) as Promise<string>;
  }

  /** Submits and resolves with the task's result when it ends. */
  execute(
    req: SubmitRequest,
    signal?: AbortSignal,
    onAccepted?: (taskId: string) => void,
  ): Promise<TaskResult> {
    // Without a signal or a wish for the id, the acceptance message would go unused: skip it.
    const mode =
      signal || onAccepted ? SessionMode.SESSION_MODE_RESULT : SessionMode.SESSION_MODE_RESULT_ONLY;
    return this.start(req, mode, signal, onAccepted) as Promise<TaskResult>;
  }

  /** Ends the stream once every call on it has been answered. */
  close(): void {
    this.closed = true;
    if (this.pending.size === 0) this.endCall();
  }

  private start(
    req: SubmitRequest,
    mode: Pending["mode"],
    signal?: AbortSignal,
    onAccepted?: (taskId: string) => void,
  ): Promise<TaskResult | string> {
    if (this.closed) return Promise.reject(new SwitchboardError(status.CANCELLED, "the client is closed"));
    if (signal?.aborted) return Promise.reject(aborted());
    const ref = this.nextRef++;
    return new Promise<TaskResult | string>((resolve, reject) => {
      const p: Pending = { mode, resolve, reject };
      if (onAccepted) p.onAccepted = onAccepted;
      if (signal) {
        const onAbort = (): void => {
          if (!this.pending.has(ref)) return;
          this.pending.delete(ref);
          if (p.taskId) this.sendCancel(p.taskId);
          else p.cancelOnAccept = "cancelled by the caller";
          // Keep a slot so that the acceptance (and its cancel) still finds us.
          if (!p.taskId) this.pending.set(ref, { ...p, resolve: () => undefined, reject: () => undefined });
          this.maybeEnd();
          reject(aborted());
        };
        signal.addEventListener("abort", onAbort, { once: true });
        const done = (): void => signal.removeEventListener("abort", onAbort);
        p.resolve = (v) => {
          done();
          resolve(v);
        };
        p.reject = (e) => {
          done();
          reject(e);
        };
      }
      this.pending.set(ref, p);
      this.write({ ref, body: { $case: "submit", value: { request: req, mode } } });
    });
  }

  private sendCancel(taskId: string): void {
    if (!this.call) return;
    this.write({
      ref: this.nextRef++,
      body: { $case: "cancel", value: { taskId, reason: "cancelled by the caller" } },
    });
  }

  private write(req: SessionRequest): void {
    this.stream();
    this.writer!.write(req);
  }

  private stream(): ClientDuplexStream<SessionRequest, SessionResponse> {
    if (this.call) return this.call;
    const call = this.rpc.session(this.metadata());
    this.call = call;
    this.writer = new CoalescingWriter<SessionRequest>({
      write: (m) => call.write(m),
      batch: (requests) => ({ ref: 0, body: { $case: "batch", value: { requests } } }),
      payloadBytes: (m) => (m.body?.$case === "submit" ? specBytes(m.body.value.request?.spec) : 0),
    });
    call.on("data", (msg: SessionResponse) => {
      if (msg.body?.$case === "batch") for (const r of msg.body.value.responses) this.onResponse(r);
      else this.onResponse(msg);
    });
    call.on("error", (err) => this.fail(call, callError(err, this.hub)));
    call.on("end", () =>
      this.fail(call, new SwitchboardError(status.UNAVAILABLE, `hub at ${this.hub} closed the session`)),
    );
    return call;
  }

  private onResponse(msg: SessionResponse): void {
    const p = this.pending.get(msg.ref);
    if (!p || !msg.body) return;
    switch (msg.body.$case) {
      case "accepted": {
        const taskId = msg.body.value.taskId;
        p.taskId = taskId;
        if (p.cancelOnAccept) {
          this.pending.delete(msg.ref);
          this.sendCancel(taskId);
          this.maybeEnd();
          return;
        }
        p.onAccepted?.(taskId);
        if (p.mode === SessionMode.SESSION_MODE_ACK) {
          this.pending.delete(msg.ref);
          p.resolve(taskId);
          this.maybeEnd();
        }
        return;
      }
      case "result":
        this.pending.delete(msg.ref);
        p.resolve(msg.body.value);
        this.maybeEnd();
        return;
      case "error":
        this.pending.delete(msg.ref);
        p.reject(new SwitchboardError(msg.body.value.code, msg.body.value.message));
        this.maybeEnd();
        return;
      default:
        return;
    }
  }

  private fail(call: ClientDuplexStream<SessionRequest, SessionResponse>, err: SwitchboardError): void {
    if (this.call !== call) return;
    this.call = undefined;
    this.writer?.discard();
    this.writer = undefined;
    const failed = [...this.pending.values()];
    this.pending.clear();
    for (const p of failed) p.reject(err);
  }

  private maybeEnd(): void {
    if (this.closed && this.pending.size === 0) this.endCall();
  }

  private endCall(): void {
    const call = this.call;
    if (!call) return;
    this.call = undefined;
    this.writer?.flush();
    this.writer = undefined;
    call.end();
  }
}

/** Payload bytes of a task spec (echo payload, shell stdin), so that big submissions go alone. */
function specBytes(spec: TaskSpec | undefined): number {
  const k = spec?.kind;
  if (k?.$case === "echo") return k.value.payload.length;
  if (k?.$case === "shell") return k.value.stdin.length;
  return 0;
}

function aborted(): SwitchboardError {
  return new SwitchboardError(status.CANCELLED, "cancelled by the caller");
}
