// One welcomed session as the pipeline sees it: what the hub's Welcome granted (output window, message
// size, resume grace) and what the session keeps (its credit ledger, whether it drains or withholds
// credits, the task ids it has seen).
import type { ResumeResult } from "../../gen/switchboard/v1/agent.js";
import type { CreditLedger } from "./credits.js";

export interface SessionStart {
  epoch: number;
  /** Welcome.initial_output_window_bytes; 0 means the hub does not flow-control output. */
  initialOutputWindowBytes: number;
  /** Welcome.max_message_bytes; 0 means the hub did not say. */
  maxMessageBytes?: number;
  /** Welcome.session_id: what a later Hello names to resume this session. */
  sessionId?: string;
  /** Welcome.resume_grace_ms: how long the hub holds this session's tasks if the link breaks. */
  resumeGraceMs?: number;
  /** Welcome.resume: the hub's answer to this dial's Hello.resume. */
  resume?: ResumeResult;
  /** Welcome.input_offsets: TaskInput.offset is set, and input the run has taken already is skipped. */
  inputOffsets?: boolean;
}

export interface Session {
  epoch: number;
  sessionId: string;
  resumeGraceMs: number;
  outputWindow: number;
  maxChunkBytes: number | undefined;
  ledger: CreditLedger;
  /** The hub is shutting down: no more credits, and the link closes once this session's tasks end. */
  draining: boolean;
  withholding: boolean;
  /** Task ids seen in this session, to refuse a duplicate Assign (bounded). */
  seen: Set<string>;
  inputOffsets: boolean;
}

/** Room left in a message for everything but the output bytes (ids, seq, field tags). */
const MESSAGE_FRAMING_BYTES = 4096;
const SEEN_IDS_LIMIT = 10_000;

export function newSession(start: SessionStart, ledger: CreditLedger): Session {
  return {
    epoch: start.epoch,
    sessionId: start.sessionId ?? "",
    resumeGraceMs: start.resumeGraceMs ?? 0,
    outputWindow: start.initialOutputWindowBytes > 0 ? start.initialOutputWindowBytes : Infinity,
    maxChunkBytes:
      start.maxMessageBytes && start.maxMessageBytes > MESSAGE_FRAMING_BYTES * 2
        ? start.maxMessageBytes - MESSAGE_FRAMING_BYTES
        : undefined,
    ledger,
    draining: false,
    withholding: false,
    seen: new Set(),
    inputOffsets: start.inputOffsets ?? false,
  };
}

/** Remembers a task id the session was assigned (the memory is bounded: past the limit it starts over). */
export function rememberTask(session: Session, taskId: string): void {
  if (session.seen.size >= SEEN_IDS_LIMIT) session.seen.clear();
  session.seen.add(taskId);
}
