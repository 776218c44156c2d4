// Reads through the writes that wait in the batch: what a row will be once they commit. The store
// reads this way where committing first would cost too much (an agent read on every connect, a
// token on every call) or cannot happen (while the store cannot write, it holds its writes).
import type { AgentRecord, NodeRow, TaskPatch, TaskRecord, TokenRecord } from "./interfaces.js";
import type { OutputBuffer } from "./output-buffer.js";

/** A stored task with its held patch and output totals applied. */
export function withHeldUpdate(
  task: TaskRecord,
  patch: TaskPatch | undefined,
  buffer: OutputBuffer | undefined,
): TaskRecord {
  if (!patch && !buffer) return task;
  const out: TaskRecord = { ...task };
  if (patch)
    for (const key in patch) {
      const value = patch[key as keyof TaskPatch];
      if (value !== undefined) (out as unknown as Record<string, unknown>)[key] = value;
    }
  if (buffer) [out.stdoutBytes, out.stderrBytes] = buffer.totals;
  return out;
}

/**
 * An agent as the pending upsert will leave it. Agent rows are written only by upsertAgent, so the
 * batch's copy, if any, is the newest; the upsert keeps the first first-seen time, and so does this.
 */
export function withPendingAgent(
  stored: AgentRecord | undefined,
  pending: AgentRecord | undefined,
): AgentRecord | undefined {
  if (!pending) return stored;
  return stored ? { ...pending, firstSeenAt: stored.firstSeenAt } : pending;
}

/** Stored agents with the held upserts applied, by id. */
export function withHeldAgents(stored: AgentRecord[], held: ReadonlyMap<string, AgentRecord>): AgentRecord[] {
  const rest = new Map(held);
  const merged = stored.map((a) => {
    const pending = rest.get(a.id);
    rest.delete(a.id);
    return withPendingAgent(a, pending)!;
  });
  return [...merged, ...rest.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** Stored nodes with the held writes applied (null: deleted); new ones last. */
export function withHeldNodes(stored: NodeRow[], held: ReadonlyMap<string, NodeRow | null>): NodeRow[] {
  const rest = new Map(held);
  const out: NodeRow[] = [];
  for (const n of stored) {
    const pending = rest.get(n.id);
    rest.delete(n.id);
    if (pending === undefined) out.push(n);
    else if (pending !== null) out.push(pending);
  }
  for (const n of rest.values()) if (n) out.push(n);
  return out;
}

/** A token with its pending touch applied: a later last-used time wins. */
export function withPendingTouch(token: TokenRecord, at: number | undefined): TokenRecord {
  if (at !== undefined && (token.lastUsedAt === null || token.lastUsedAt < at)) token.lastUsedAt = at;
  return token;
}
