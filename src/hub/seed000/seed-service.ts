// Seed 000's wire contract, served beside our own on the same port: `/ClientService/SendCommand` runs a
// sql task on pool `agent_id` (our agents and seed-protocol workers alike) and answers with every row as
// one JSON array, the table's metadata, and a status message; `/AgntService/Connect` lets an agent
// written to that protocol join pool `agent_id` as worker `worker_id`. Both authenticate like any call
// (an operator token for SendCommand, an agent token scoped to the pool for Connect); tokenless calls
// only where the hub's config allows them ([seed000] tokenless, loopback-only or mutual-TLS listeners).
import type {
  Metadata,
  sendUnaryData,
  ServerDuplexStream,
  ServerUnaryCall,
  UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { tokenFromMetadata } from "../../common/auth.js";
import { Code, SwitchboardError, shownName, toServiceError } from "../../common/errors.js";
import { RowObjectEncoder, SqlResultDecoder } from "../../common/sql-result.js";
import {
  AgntServiceService,
  ClientServiceService,
  CommandResponse,
  type AgentMessage as SeedAgentMessage,
  type CommandRequest,
  type ServerMessage,
} from "../../gen/seed000/app.js";
import { OutputStream, TaskState, type Finished, type TaskEvent } from "../../gen/switchboard/v1/task.js";
import type { Principal } from "../auth.js";
import type { HubCore } from "../hub-core.js";
import type { Watcher } from "../tasks/live-task.js";
import { SeedAgentCall } from "./seed-agent-call.js";

export { AgntServiceService };
export { SEED_MAX_MESSAGE_BYTES, seedMessageLimits } from "./message-limits.js";

/** A CommandResponse encoded as it goes on the wire: its json can be larger than a JS string may be. */
class EncodedCommandResponse {
  constructor(readonly bytes: Buffer) {}
}

type SendCommandAnswer = CommandResponse | EncodedCommandResponse;

/** ClientService as generated, except that SendCommand's answer may come already encoded. */
export const SeedClientServiceService = {
  sendCommand: {
    ...ClientServiceService.sendCommand,
    responseSerialize: (value: SendCommandAnswer): Buffer =>
      value instanceof EncodedCommandResponse
        ? value.bytes
        : Buffer.from(CommandResponse.encode(value).finish()),
  },
} as const;

export interface SeedServiceOptions {
  /** Calls without a token are accepted (as an operator, or an agent of any pool). */
  tokenless: boolean;
  /** The largest SendCommand response ([seed000] max_message_bytes). */
  maxMessageBytes: number;
}

const TOKENLESS_CLIENT: Principal = {
  tokenId: "",
  name: "seed000-tokenless",
  role: "operator",
  pools: [],
  agentId: null,
  allowTakeover: false,
};

const TOKENLESS_AGENT: Principal = { ...TOKENLESS_CLIENT, name: "seed000-tokenless-agent", role: "agent" };

export function seedServices(
  core: HubCore,
  opts: SeedServiceOptions,
): { agent: UntypedServiceImplementation; client: UntypedServiceImplementation } {
  const principal = async (md: Metadata, as: "agent" | "operator"): Promise<Principal> => {
    if (opts.tokenless && !tokenFromMetadata(md)) return as === "agent" ? TOKENLESS_AGENT : TOKENLESS_CLIENT;
    return as === "agent" ? core.auth.requireAgent(md) : core.auth.requireClient(md, "operator");
  };

  const connect = (call: ServerDuplexStream<SeedAgentMessage, ServerMessage>): void => {
    // Until the token is checked no listener is attached: what the worker sends waits in the stream.
    principal(call.metadata, "agent").then(
      (p) => {
        // A seed worker cannot resume a session: when its stream ends, its queries fail at once.
        if (!call.cancelled) core.connect(new SeedAgentCall(call).asAgentCall(), p, { resumable: false });
      },
      (err: unknown) => call.emit("error", toServiceError(err)),
    );
  };

  const sendCommand = (
    call: ServerUnaryCall<CommandRequest, SendCommandAnswer>,
    callback: sendUnaryData<SendCommandAnswer>,
  ): void => {
    let answered = false;
    const answer = (err: unknown, res?: SendCommandAnswer): void => {
      if (answered) return;
      answered = true;
      if (err) callback(toServiceError(err));
      else callback(null, res);
    };
    void principal(call.metadata, "operator").then((p) => {
      try {
        const req = call.request;
        const pool = req.agentId.trim();
        if (pool === "")
          throw new SwitchboardError(Code.INVALID_ARGUMENT, "agent_id is empty: name the agent group");
        if (req.query.trim() === "") throw new SwitchboardError(Code.INVALID_ARGUMENT, "query is empty");
        if (req.database.trim() === "") {
          throw new SwitchboardError(
            Code.INVALID_ARGUMENT,
            "database is empty: name a datasource or a driver",
          );
        }
        // In a cluster the agent may be on another hub: the submission finds it or says why not.
        if (!core.cluster && !core.agents.hasConnected(pool, "sql")) {
          throw new SwitchboardError(
            Code.UNAVAILABLE,
            `agent ${shownName(pool)} is not connected: no worker of that agent_id is online to run SQL`,
          );
        }
        const collector = new ResultCollector(opts.maxMessageBytes);
        core
          .submit(p, {
            target: { agentId: "", pool, labels: {} },
            spec: {
              kind: {
                $case: "sql",
                value: {
                  datasource: req.database.trim(),
                  query: req.query,
                  paramsJson: "",
                  table: req.tblName.trim(),
                  maxRows: 0,
                  timeoutMs: 0,
                  batchRows: 0,
                  format: "",
                },
              },
            },
            timeoutMs: 0,
            waitForAgent: false,
            cancelOnDisconnect: false,
          })
          .then(
            (t) => {
              call.on("cancelled", () => {
                t.detach(collector);
                void core.cancel(p, t.id, "the SendCommand caller went away");
              });
              collector.onDone = (res, err) => {
                t.detach(collector);
                if (err) {
                  void core.cancel(p, t.id, err.message);
                  answer(err);
                } else answer(null, res);
              };
              collector.neverAssigned = () => t.agentId === null;
              t.attach(collector, 0);
            },
            (err: unknown) => answer(err),
          );
      } catch (err) {
        answer(err);
      }
    }, answer);
  };

  return {
    agent: { connect },
    client: { sendCommand },
  };
}

/** Past this many characters, rows gathered as text are encoded to bytes (and counted against the limit). */
const FLUSH_CHARS = 64 * 1024;

/**
 * Gathers a sql task's events into seed 000's one-message answer. The rows are kept as UTF-8 bytes and
 * the answer is encoded here, so a result may be as large as the seed allows (2 GB), far past the
 * longest string V8 can hold.
 */
class ResultCollector implements Watcher {
  consumedBytes = 0;
  onDone: ((res: SendCommandAnswer | undefined, err?: SwitchboardError) => void) | undefined;
  /** The task ended before any agent took it (no agent, refused by the scheduler). */
  neverAssigned: () => boolean = () => false;
  private readonly decoder = new SqlResultDecoder();
  /** The json array so far: encoded pieces, then text not yet encoded. */
  private readonly parts: Buffer[] = [Buffer.from("[")];
  private bytes = 1;
  private pending = "";
  private rows = 0;
  private encoder: RowObjectEncoder | undefined;
  private failed = false;

  constructor(private readonly maxBytes: number) {}

  deliver(ev: TaskEvent, consumed: () => void): void {
    const e = ev.event;
    if (e?.$case === "output" && e.value.stream === OutputStream.OUTPUT_STREAM_STDOUT && !this.failed) {
      const rows = this.decoder.push(e.value.data);
      // Rows always follow the header line, so the encoder exists before the first row.
      if (this.decoder.header) this.encoder ??= new RowObjectEncoder(this.decoder.header.columns);
      for (const row of rows) {
        this.pending += (this.rows++ === 0 ? "" : ",") + this.encoder!.encode(row);
        if (this.pending.length >= FLUSH_CHARS && !this.flush()) break;
      }
    } else if (e?.$case === "finished" && !this.failed) {
      this.finished(e.value);
    }
    consumed();
  }

  private finished(f: Finished): void {
    const header = this.decoder.header;
    const meta = header?.table == null ? "" : JSON.stringify(header.table);
    if (f.state === TaskState.TASK_STATE_SUCCEEDED) {
      this.pending += "]";
      if (!this.flush()) return;
      // Field 1 (json) written here from the pieces; message and meta_data as generated.
      const rest = CommandResponse.encode({ json: "", message: f.reason || "ok", metaData: meta }).finish();
      const tag = Buffer.from([0x0a, ...varint(this.bytes)]);
      if (!this.fits(tag.length + this.bytes + rest.length)) return;
      const answer = Buffer.concat([tag, ...this.parts, rest]);
      this.parts.length = 0;
      this.onDone?.(new EncodedCommandResponse(answer));
    } else if (f.error && this.neverAssigned()) {
      this.onDone?.(undefined, new SwitchboardError(f.error.code, f.error.message || f.reason));
    } else if (f.state === TaskState.TASK_STATE_LOST) {
      // The worker (its stream) went away: nothing will answer, which is not the query's error.
      this.onDone?.(
        undefined,
        new SwitchboardError(
          Code.UNAVAILABLE,
          `the worker running the query went away: ${f.reason || f.error?.message || "it was lost"}; its result will not come, send the query again`,
        ),
      );
    } else {
      this.onDone?.({
        json: "",
        message: `error: ${f.error?.message || f.reason || "the query failed"}`,
        metaData: meta,
      });
    }
  }

  /** Encodes the pending text; false (and the caller answered) when the result outgrew the limit. */
  private flush(): boolean {
    if (this.pending === "") return true;
    const b = Buffer.from(this.pending, "utf8");
    this.pending = "";
    this.bytes += b.length;
    this.parts.push(b);
    return this.fits(this.bytes);
  }

  private fits(size: number): boolean {
    if (size <= this.maxBytes) return true;
    this.failed = true;
    this.parts.length = 0;
    this.onDone?.(
      undefined,
      new SwitchboardError(
        Code.RESOURCE_EXHAUSTED,
        `the result is larger than ${this.maxBytes} bytes ([seed000] max_message_bytes): add a LIMIT, or stream it with switchboard query`,
      ),
    );
    return false;
  }
}

/** Protobuf's base-128 varint of a length. */
function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}
