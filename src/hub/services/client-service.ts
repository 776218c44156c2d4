// The client API over gRPC: thin adapters from calls to HubCore, with write backpressure on every
// stream so that a slow client holds back only its own tasks.
import type {
  Metadata,
  sendUnaryData,
  ServerDuplexStream,
  ServerReadableStream,
  ServerUnaryCall,
  ServerWritableStream,
} from "@grpc/grpc-js";
import { CoalescingWriter } from "../../common/coalescing-writer.js";
import { Code, SwitchboardError, toServiceError } from "../../common/errors.js";
import { stateFromWire, stateToWire } from "../../common/task-state.js";
import {
  SessionMode,
  type CancelRequest,
  type CancelResponse,
  type ClientServiceServer,
  type GetTaskRequest,
  type InputResult,
  type ListTasksRequest,
  type ListTasksResponse,
  type SessionRequest,
  type SessionResponse,
  type SubmitRequest,
  type SubmitResponse,
  type WatchRequest,
} from "../../gen/switchboard/v1/client.js";
import type { TaskEvent, TaskInput, TaskResult } from "../../gen/switchboard/v1/task.js";
import { poolAllowed, type Principal } from "../auth.js";
import type { ClientStream } from "../client-streams.js";
import type { HubCore } from "../hub-core.js";
import type { LiveTask, Watcher } from "../tasks/live-task.js";
import type { TaskInputQueue } from "../tasks/task-input.js";
import { hangUpOrphanedTerminal } from "../shell-sessions.js";
import type { TaskStateName } from "../../common/task-state.js";

type Writable<T> = { write(msg: T, cb?: () => void): boolean };

function streamWatcher<T>(call: Writable<T>, wrap: (ev: TaskEvent) => T, onFinished: () => void): Watcher {
  return {
    consumedBytes: 0,
    deliver(ev, consumed) {
      call.write(wrap(ev), consumed);
      if (ev.event?.$case === "finished") onFinished();
    },
  };
}

/** A finished task that never reached an agent failed to be scheduled: that is a call error. */
function schedulingError(t: LiveTask): SwitchboardError | undefined {
  const f = t.finish;
  if (!f || t.agentId !== null || f.errorCode === null) return undefined;
  return new SwitchboardError(f.errorCode, f.reason ?? f.errorMessage ?? "the task could not be scheduled");
}

export function clientService(core: HubCore): ClientServiceServer {
  const auth = core.auth;

  function trackStream(principal: ClientStream["principal"], end: ClientStream["end"]): () => void {
    return core.clientStreams.track(principal, end);
  }

  /**
   * Runs `then` with the caller once its token is checked, or hands `refuse` why not (or what
   * `then` threw). A call cancelled while its token was read is left alone: nobody waits for it.
   */
  function withPrincipal(
    call: { metadata: Metadata; cancelled: boolean },
    min: "viewer" | "operator",
    refuse: (err: unknown) => void,
    then: (p: Principal) => void | Promise<void>,
  ): void {
    auth
      .requireClient(call.metadata, min)
      .then((p) => (call.cancelled ? undefined : then(p)))
      .catch(refuse);
  }

  /** Ends a streaming call with an error status. */
  function refuseStream(call: { emit(event: "error", err: unknown): boolean }): (err: unknown) => void {
    return (err) => call.emit("error", toServiceError(err));
  }

  /**
   * Stream a task's events to a call until Finished, then end it. `start` attaches the watcher
   * and says whether the task is still live. Hub shutdown or revocation ends it with a status.
   */
  function followTask(
    call: ServerWritableStream<SubmitRequest | WatchRequest, TaskEvent>,
    p: Principal,
    start: (w: Watcher) => { live: boolean | Promise<boolean>; detach: () => void },
    onClientGone?: () => void,
  ): void {
    let done = false;
    const stop = (err?: unknown) => {
      if (done) return;
      done = true;
      untrack();
      if (err) call.emit("error", toServiceError(err));
      else call.end();
    };
    const untrack = trackStream(p, (code, details) => stop(new SwitchboardError(code, details)));
    const w = streamWatcher(
      call,
      (ev) => ev,
      () => setImmediate(stop),
    );
    const { live, detach } = start(w);
    // A task read from the store answers once it was read (and replayed): live false, or why not.
    if (live instanceof Promise) {
      live.then(
        (l) => {
          if (!l) setImmediate(stop);
        },
        (err: unknown) => stop(err),
      );
    } else if (!live) setImmediate(stop);
    call.on("cancelled", () => {
      detach();
      const wasDone = done;
      done = true;
      untrack();
      if (!wasDone) onClientGone?.();
    });
  }

  /** What a whole-result caller gets once the task ended: an error or the result. */
  async function outcome(t: LiveTask): Promise<{ err: unknown } | { result: TaskResult }> {
    const err = schedulingError(t);
    if (err) return { err };
    try {
      return { result: await core.liveResult(t) };
    } catch (e) {
      return { err: e };
    }
  }

  return {
    execute(call: ServerUnaryCall<SubmitRequest, TaskResult>, callback: sendUnaryData<TaskResult>) {
      withPrincipal(
        call,
        "operator",
        (err) => callback(toServiceError(err)),
        (p) => {
          let answered = false;
          const answer = (err: unknown, res?: TaskResult) => {
            if (answered) return;
            answered = true;
            untrack();
            if (err) callback(toServiceError(err));
            else callback(null, res);
          };
          const untrack = trackStream(p, (code, details) => answer(new SwitchboardError(code, details)));
          core.submit(p, call.request).then(
            (t) =>
              t.onFinish(() => {
                void outcome(t).then((o) => {
                  if ("err" in o) answer(o.err);
                  else answer(null, o.result);
                });
              }),
            (err) => answer(err),
          );
        },
      );
    },

    run(call: ServerWritableStream<SubmitRequest, TaskEvent>) {
      withPrincipal(call, "operator", refuseStream(call), (p) => {
        core.submit(p, call.request).then(
          (t) =>
            followTask(
              call,
              p,
              (w) => (t.attach(w, 0), { live: !t.terminal, detach: () => t.detach(w) }),
              call.request.cancelOnDisconnect
                ? () => {
                    if (t.terminal) return;
                    // A live task is cancelled before cancel() returns; one that ended meanwhile is left.
                    core
                      .cancel(p, t.id, "its client went away (cancel_on_disconnect)")
                      .catch(() => undefined);
                  }
                : undefined,
            ),
          (err) => call.emit("error", toServiceError(err)),
        );
      });
    },

    submit(call: ServerUnaryCall<SubmitRequest, SubmitResponse>, callback: sendUnaryData<SubmitResponse>) {
      withPrincipal(
        call,
        "operator",
        (err) => callback(toServiceError(err)),
        async (p) => {
          const t = await core.submit(p, call.request);
          callback(null, { taskId: t.id });
        },
      );
    },

    watch(call: ServerWritableStream<WatchRequest, TaskEvent>) {
      withPrincipal(call, "viewer", refuseStream(call), async (p) => {
        const { taskId, afterSeq } = call.request;
        await core.assertTaskVisible(p, taskId);
        followTask(call, p, (w) => ({
          live: core.watch(p, taskId, afterSeq, w),
          detach: () => core.detach(taskId, w),
        }));
      });
    },

    input(call: ServerReadableStream<TaskInput, InputResult>, callback: sendUnaryData<InputResult>) {
      let answered = false;
      const answer = (err: unknown, res?: InputResult): void => {
        if (answered) return;
        answered = true;
        if (err) {
          callback(toServiceError(err));
          call.destroy();
        } else callback(null, res);
      };
      withPrincipal(call, "operator", answer, (p) => {
        let taskId = "";
        let queue: ReturnType<HubCore["inputFor"]> | undefined;
        let bytes = 0;
        const untrack = trackStream(p, (code, details) => answer(new SwitchboardError(code, details)));
        const fail = (err: unknown): void => {
          untrack();
          answer(err);
        };
        // The first message names the task; its visibility may need the store.
        const open = async (m: TaskInput): Promise<TaskInputQueue> => {
          taskId = m.taskId;
          if (!taskId)
            throw new SwitchboardError(Code.INVALID_ARGUMENT, "the first input message must name the task");
          await core.assertTaskVisible(p, taskId);
          const t = core.tasks.get(taskId);
          if (!t) throw new SwitchboardError(Code.NOT_FOUND, `no task ${taskId} is running on this hub`);
          if (t.terminal)
            throw new SwitchboardError(Code.FAILED_PRECONDITION, `task ${taskId} has ended (${t.state})`);
          return core.inputFor(t);
        };
        /** Forwards a message; false when the client is held back until the agent takes more. */
        const forward = (q: TaskInputQueue, m: TaskInput): boolean => {
          if (m.taskId && m.taskId !== taskId) {
            throw new SwitchboardError(
              Code.INVALID_ARGUMENT,
              `this input stream is for task ${taskId}, not ${m.taskId}`,
            );
          }
          bytes += m.data.length;
          q.push({ ...m, taskId });
          if (q.hasRoom()) return true;
          // Hold the client back (HTTP/2 flow control) until the agent takes more.
          call.pause();
          q.onceRoom(() => call.resume());
          return false;
        };
        call.on("data", (m: TaskInput) => {
          if (answered) return;
          if (!queue) {
            // Nothing more is read (nor the end) until the task is found.
            call.pause();
            open(m)
              .then((q) => {
                queue = q;
                if (answered) return;
                if (forward(q, m)) call.resume();
              })
              .catch(fail);
            return;
          }
          try {
            forward(queue, m);
          } catch (err) {
            fail(err);
          }
        });
        call.on("end", () => {
          const q = queue;
          if (!q) {
            untrack();
            answer(null, { bytes: 0, taskEnded: false });
            return;
          }
          void q.whenDrained().then(() => {
            untrack();
            answer(null, { bytes: q.forwarded, taskEnded: q.ended && q.forwarded < bytes });
          });
        });
        call.on("error", () => untrack());
        // The client went away without an end of input (killed, network lost): a terminal is hung up.
        call.on("cancelled", () => {
          untrack();
          if (queue) hangUpOrphanedTerminal(core.tasks.get(taskId), queue);
        });
      });
    },

    cancel(call: ServerUnaryCall<CancelRequest, CancelResponse>, callback: sendUnaryData<CancelResponse>) {
      withPrincipal(
        call,
        "operator",
        (err) => callback(toServiceError(err)),
        async (p) => {
          await core.assertTaskVisible(p, call.request.taskId);
          const state = await core.cancel(p, call.request.taskId, call.request.reason);
          callback(null, { state: stateToWire(state) });
        },
      );
    },

    getTask(call: ServerUnaryCall<GetTaskRequest, TaskResult>, callback: sendUnaryData<TaskResult>) {
      withPrincipal(
        call,
        "viewer",
        (err) => callback(toServiceError(err)),
        async (p) => {
          await core.assertTaskVisible(p, call.request.taskId);
          callback(null, await core.result(call.request.taskId));
        },
      );
    },

    listTasks(
      call: ServerUnaryCall<ListTasksRequest, ListTasksResponse>,
      callback: sendUnaryData<ListTasksResponse>,
    ) {
      withPrincipal(
        call,
        "viewer",
        (err) => callback(toServiceError(err)),
        async (p) => {
          const r = call.request;
          const states = r.states
            .map((s) => stateFromWire(s))
            .filter((s): s is TaskStateName => s !== undefined);
          if (r.pool && !poolAllowed(p, r.pool)) {
            throw new SwitchboardError(
              Code.PERMISSION_DENIED,
              `token ${p.name} may not see pool ${r.pool} (scoped to pools ${p.pools.join(", ")})`,
            );
          }
          const limit = r.limit || 50;
          const filter = {
            limit,
            agentId: r.agentId || undefined,
            states: states.length ? states : undefined,
            beforeId: r.beforeTaskId || undefined,
          };
          // A scoped token lists only its pools' tasks: one query per pool, merged newest first.
          const pools = r.pool ? [r.pool] : p.pools.length > 0 ? p.pools : [undefined];
          const rows = (await Promise.all(pools.map((pool) => core.store.listTasks({ ...filter, pool }))))
            .flat()
            .sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
            .filter((row, i, all) => i === 0 || all[i - 1]!.id !== row.id)
            .slice(0, limit);
          callback(null, { tasks: rows.map((row) => core.recordInfo(row, false)) });
        },
      );
    },

    session(call: ServerDuplexStream<SessionRequest, SessionResponse>) {
      withPrincipal(call, "viewer", refuseStream(call), (p) => {
        let closed = false;
        // A client may half-close once it has sent everything: answer what is pending, then end.
        let pending = 0;
        let halfClosed = false;
        const settle = () => {
          pending--;
          if (halfClosed && pending === 0) {
            close();
            end();
          }
        };
        const watchers = new Map<string, Watcher>();
        const untrack = trackStream(p, (code, details) => {
          if (closed) return;
          closed = true;
          call.emit("error", toServiceError(new SwitchboardError(code, details)));
        });
        // Responses go one by one until the client sends a batch; from then on, what one turn of
        // the event loop produces goes as one message.
        let writer: CoalescingWriter<SessionResponse> | undefined;
        const send = (msg: SessionResponse) => {
          if (closed) return;
          if (writer) writer.write(msg);
          else call.write(msg);
        };
        const end = () => {
          writer?.flush();
          call.end();
        };
        const fail = (ref: number, taskId: string, err: unknown) => {
          const e = toServiceError(err);
          send({ ref, taskId, body: { $case: "error", value: { code: e.code, message: e.details } } });
        };
        const onRequest = (req: SessionRequest): void => {
          const ref = req.ref;
          const body = req.body;
          if (body?.$case === "submit") {
            const mode = body.value.mode;
            let principal;
            try {
              principal = auth.requireRole(p, "operator");
            } catch (err) {
              fail(ref, "", err);
              return;
            }
            pending++;
            core.submit(principal, body.value.request ?? ({} as SubmitRequest)).then(
              (t) => {
                if (mode !== SessionMode.SESSION_MODE_RESULT_ONLY) {
                  send({ ref, taskId: t.id, body: { $case: "accepted", value: { taskId: t.id } } });
                }
                if (mode === SessionMode.SESSION_MODE_ACK) {
                  settle();
                  return;
                }
                if (mode === SessionMode.SESSION_MODE_EVENTS) {
                  const w = streamWatcher<SessionResponse>(
                    {
                      // Events carry a write callback (output flow control): write them directly,
                      // after whatever the coalescing writer holds, so that order is kept.
                      write: (m, cb) => {
                        if (closed) {
                          cb?.();
                          return true;
                        }
                        writer?.flush();
                        return call.write(m, cb);
                      },
                    },
                    (ev) => ({ ref, taskId: t.id, body: { $case: "event", value: ev } }),
                    () => {
                      watchers.delete(t.id);
                      setImmediate(settle);
                    },
                  );
                  watchers.set(t.id, w);
                  t.attach(w, 0);
                  return;
                }
                t.onFinish(() => {
                  void outcome(t).then((o) => {
                    if ("err" in o) fail(ref, t.id, o.err);
                    else send({ ref, taskId: t.id, body: { $case: "result", value: o.result } });
                    settle();
                  });
                });
              },
              (err) => {
                fail(ref, "", err);
                settle();
              },
            );
          } else if (body?.$case === "cancel") {
            let principal;
            try {
              principal = auth.requireRole(p, "operator");
            } catch (err) {
              fail(ref, body.value.taskId, err);
              return;
            }
            // Answered once cancel() resolves (a task not in memory is read): a half-close waits for it.
            pending++;
            core
              .cancel(principal, body.value.taskId, body.value.reason)
              .then(
                (state) =>
                  send({
                    ref,
                    taskId: body.value.taskId,
                    body: { $case: "cancelled", value: { state: stateToWire(state) } },
                  }),
                (err: unknown) => fail(ref, body.value.taskId, err),
              )
              .finally(settle);
          } else {
            fail(
              ref,
              "",
              new SwitchboardError(Code.INVALID_ARGUMENT, "a session request needs submit, cancel or batch"),
            );
          }
        };
        call.on("data", (req: SessionRequest) => {
          if (req.body?.$case !== "batch") {
            onRequest(req);
            return;
          }
          writer ??= new CoalescingWriter<SessionResponse>({
            write: (m) => call.write(m),
            batch: (responses) => ({ ref: 0, taskId: "", body: { $case: "batch", value: { responses } } }),
            payloadBytes: sessionPayloadBytes,
          });
          for (const r of req.body.value.requests) {
            if (r.body?.$case === "batch") {
              fail(r.ref, "", new SwitchboardError(Code.INVALID_ARGUMENT, "a batch may not hold a batch"));
            } else {
              onRequest(r);
            }
          }
        });
        const close = () => {
          if (closed) return;
          closed = true;
          untrack();
          for (const [id, w] of watchers) core.detach(id, w);
          watchers.clear();
        };
        call.on("end", () => {
          halfClosed = true;
          if (pending === 0) {
            close();
            end();
          }
        });
        call.on("cancelled", close);
        call.on("error", close);
      });
    },
  };
}

/** Payload bytes of a session response, so that big ones are not held for a batch. */
function sessionPayloadBytes(m: SessionResponse): number {
  const b = m.body;
  if (b?.$case === "result") return b.value.stdout.length + b.value.stderr.length + b.value.result.length;
  if (b?.$case === "event" && b.value.event?.$case === "output") return b.value.event.value.data.length;
  return 0;
}
