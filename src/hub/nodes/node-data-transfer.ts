// Moves a node's data dir from one agent to another through the hub, with the file tasks `switchboard cp`
// uses: a tar download on the source agent whose output is fed, as it arrives, into a tar upload on the
// target agent. Each task keeps its own flow control (the download's output window opens only as far as
// the upload takes input), so data of any size passes in bounded memory, and the tar stream's size and
// SHA-256 are compared at both ends. Both agents' [files] roots must cover the paths.
import { Code, SwitchboardError } from "../../common/errors.js";
import { parseFileResult, type FileResult } from "../../common/file-transfer.js";
import type { SubmitRequest } from "../../gen/switchboard/v1/client.js";
import { FileSpec, OutputStream } from "../../gen/switchboard/v1/task.js";
import type { Principal } from "../auth.js";
import type { FinishInfo, LiveTask, Watcher } from "../tasks/live-task.js";
import type { TaskInputQueue } from "../tasks/task-input.js";

/** What a transfer needs of the hub: tasks submitted, fed and cancelled as a client would. */
export interface TaskRunner {
  submit(p: Principal, req: SubmitRequest): Promise<LiveTask>;
  inputFor(t: LiveTask): TaskInputQueue;
  cancel(p: Principal, taskId: string, reason: string): unknown;
}

export interface NodeDataMove {
  nodeId: string;
  from: string;
  /** The node's storage path on the source agent (absolute). */
  fromPath: string;
  to: string;
  /** Where the data goes on the target agent (absolute, inside its storage.data_path); replaced if there. */
  toPath: string;
  /** The transfer fails when no byte moved for this long (a stuck agent, a task left queued). */
  idleTimeoutMs: number;
}

const WATCHDOG_MS = 1000;

/** Copies the tree; resolves with the tar stream's size and digest once the target has placed it. */
export async function transferNodeData(
  hub: TaskRunner,
  p: Principal,
  m: NodeDataMove,
): Promise<{ bytes: number; sha256: string }> {
  const fileTask = (agentId: string, spec: Partial<FileSpec>): SubmitRequest => ({
    target: { agentId, pool: "", labels: {} },
    spec: { kind: { $case: "file", value: FileSpec.fromPartial({ archive: "tar", ...spec }) } },
    timeoutMs: 0,
    waitForAgent: false,
    cancelOnDisconnect: false,
  });
  // The upload first, so that it waits for the bytes rather than the bytes for it.
  const upload = await hub.submit(p, fileTask(m.to, { op: "upload", path: m.toPath, overwrite: true }));
  let download: LiveTask | undefined;
  try {
    download = await hub.submit(p, fileTask(m.from, { op: "download", path: m.fromPath }));
    return await pipe(hub.inputFor(upload), download, upload, m);
  } catch (err) {
    for (const t of [download, upload]) {
      if (!t || t.terminal) continue;
      try {
        hub.cancel(p, t.id, `moving the data of node ${m.nodeId} failed`);
      } catch {
        // ended meanwhile
      }
    }
    throw err;
  }
}

function pipe(
  input: TaskInputQueue,
  download: LiveTask,
  upload: LiveTask,
  m: NodeDataMove,
): Promise<{ bytes: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let lastMove = Date.now();
    let sent: FileResult | undefined;
    let placed: FileResult | undefined;
    const watcher: Watcher = {
      consumedBytes: 0,
      deliver(ev, consumed) {
        if (ev.gapBytes > 0) {
          fail(new SwitchboardError(Code.DATA_LOSS, `${ev.gapBytes} bytes of the tar stream were lost`));
          return;
        }
        const e = ev.event;
        if (e?.$case === "output" && e.value.stream === OutputStream.OUTPUT_STREAM_STDOUT) {
          lastMove = Date.now();
          const data = Buffer.from(e.value.data.buffer, e.value.data.byteOffset, e.value.data.byteLength);
          input.push({ taskId: upload.id, data, eof: false, resize: undefined, sha256: "", offset: 0 });
          // The download's window opens again only once the upload's agent has room for more.
          input.onceRoom(() => {
            lastMove = Date.now();
            consumed();
          });
        } else consumed();
      },
    };
    const watchdog = setInterval(() => {
      if (Date.now() - lastMove > m.idleTimeoutMs) {
        fail(
          new SwitchboardError(
            Code.DEADLINE_EXCEEDED,
            `no data of node ${m.nodeId} moved from agent ${m.from} to agent ${m.to} for ${m.idleTimeoutMs / 1000} s`,
          ),
        );
      }
    }, WATCHDOG_MS);
    watchdog.unref();
    function done(): void {
      clearInterval(watchdog);
      download.detach(watcher);
    }
    function fail(err: SwitchboardError): void {
      if (settled) return;
      settled = true;
      done();
      reject(err);
    }
    function check(): void {
      if (settled || !sent || !placed) return;
      if (sent.sha256 !== placed.sha256 || sent.bytes !== placed.bytes) {
        fail(
          new SwitchboardError(
            Code.DATA_LOSS,
            `agent ${m.from} sent ${sent.bytes} bytes (SHA-256 ${sent.sha256}) of node ${m.nodeId}'s data, agent ${m.to} placed ${placed.bytes} bytes (SHA-256 ${placed.sha256})`,
          ),
        );
        return;
      }
      settled = true;
      done();
      resolve({ bytes: sent.bytes, sha256: sent.sha256 });
    }
    download.attach(watcher, 0);
    download.onFinish((t) => {
      const f = t.finish!;
      if (f.state !== "succeeded") return fail(taskFailure(`reading ${m.fromPath} on agent ${m.from}`, f));
      sent = parseFileResult(f.result ?? new Uint8Array());
      if (!sent) return fail(new SwitchboardError(Code.INTERNAL, `agent ${m.from} sent no file result`));
      input.push({
        taskId: upload.id,
        data: Buffer.alloc(0),
        eof: true,
        resize: undefined,
        sha256: "",
        offset: 0,
      });
      check();
    });
    upload.onFinish((t) => {
      const f = t.finish!;
      if (f.state !== "succeeded") return fail(taskFailure(`writing ${m.toPath} on agent ${m.to}`, f));
      placed = parseFileResult(f.result ?? new Uint8Array());
      if (!placed) return fail(new SwitchboardError(Code.INTERNAL, `agent ${m.to} sent no file result`));
      check();
    });
  });
}

function taskFailure(what: string, f: FinishInfo): SwitchboardError {
  const why = f.errorMessage || f.reason || f.state;
  return new SwitchboardError(f.errorCode ?? Code.ABORTED, `${what} failed: ${why}`);
}
