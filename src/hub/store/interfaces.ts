// The hub's store: one interface for the embedded SQLite store and, later, a PostgreSQL store
// shared by several hubs. Everything the hub persists passes through here.
//
// Durability contract:
// - insertTask() resolves only once the task row is committed: a hub that has acknowledged a
//   submission to a client never loses the task, even on kill -9.
// - The rare writes that must outlive a crash or take effect at once (forgetAgent, upsertNode,
//   deleteNode, insertToken, revokeToken) are written at once: their promise resolves once the
//   write is committed (or held, for nodes, while the disk refuses it; see below).
// - Other writes (updateTask, appendOutput, upsertAgent, markAllAgentsDisconnected, touchToken,
//   audit) are batched: they return at once (void) and are committed within `flushIntervalMs`
//   (default 10 ms) in one transaction, so the store never limits throughput. flush() commits
//   what is pending now.
// - Every read returns a promise, since a store on a server (PostgreSQL) cannot read
//   synchronously. Reads see every write made before them, batched ones included (the store
//   reads through its pending batch or flushes first). A store that reads synchronously (SQLite)
//   resolves them at once.
// - A commit that fails for want of the disk (full, I/O error, locked) drops nothing: the store
//   holds its writes in memory, reports `writeFailure`, refuses new inserts, and retries with
//   backoff until a commit succeeds. pendingBatch, committedBatch and committed() let the hub act only on writes
//   that are committed (an Assign goes to an agent only once the task is on record as assigned).
import type { TaskStateName } from "../../common/task-state.js";
import type { StoreWriteFailure } from "./write-failure.js";

export type Role = "admin" | "operator" | "viewer" | "agent";

export interface TargetRecord {
  agentId?: string;
  pool?: string;
  labels?: Record<string, string>;
}

export interface TaskRecord {
  id: string; // UUIDv7
  kind: string; // "echo" | "shell" | ...
  target: TargetRecord;
  /** The TaskSpec protobuf, encoded. */
  spec: Uint8Array;
  state: TaskStateName;
  agentId: string | null;
  requester: string; // token name
  createdAt: number; // ms since epoch
  assignedAt: number | null;
  startedAt: number | null;
  finishedAt: number | null;
  deadlineAt: number | null;
  exitCode: number | null;
  signal: string | null;
  errorCode: number | null; // gRPC status code
  errorMessage: string | null;
  reason: string | null;
  durationMs: number | null;
  stdoutBytes: number; // total produced, including what the cap dropped
  stderrBytes: number;
  result: Uint8Array | null; // Finished.result
}

/**
 * A task to insert. A task the scheduler gave an agent at once is inserted as `assigned` (with
 * `agentId` and `assignedAt`), so that its assignment is on record in the same commit as the task.
 */
export type NewTask = Pick<
  TaskRecord,
  "id" | "kind" | "target" | "spec" | "requester" | "createdAt" | "deadlineAt"
> & { state?: TaskStateName; agentId?: string | null; assignedAt?: number | null };

export type TaskPatch = Partial<
  Pick<
    TaskRecord,
    | "state"
    | "agentId"
    | "assignedAt"
    | "startedAt"
    | "finishedAt"
    | "exitCode"
    | "signal"
    | "errorCode"
    | "errorMessage"
    | "reason"
    | "durationMs"
    | "result"
  >
>;

export interface TaskFilter {
  limit?: number; // default 50, max 1000
  agentId?: string;
  pool?: string;
  states?: TaskStateName[];
  beforeId?: string; // newest first; ids below this one
}

export type OutputStreamName = "stdout" | "stderr";

/**
 * Output as kept for `switchboard logs` and for replay of finished tasks. The cap applies to a
 * task's output as produced (stdout and stderr chunks interleaved): the first cap/2 bytes (head)
 * and the last cap/2 bytes (tail) are kept, the bytes between are dropped and counted. Per
 * stream, head and tail are that stream's bytes within the kept head and tail.
 */
export interface StoredStreamOutput {
  head: Uint8Array;
  tail: Uint8Array;
  droppedBytes: number; // bytes between head and tail that were not kept
  totalBytes: number;
}

export interface StoredOutput {
  stdout: StoredStreamOutput;
  stderr: StoredStreamOutput;
  /** Interleaving of the kept chunks in the order they were produced, for faithful replay. */
  chunks: { stream: OutputStreamName; data: Uint8Array; gapBefore: number }[];
}

export interface AgentRecord {
  id: string;
  pool: string;
  labels: Record<string, string>;
  hostname: string;
  platform: string;
  version: string;
  taskKinds: string[];
  maxConcurrency: number;
  firstSeenAt: number;
  lastSeenAt: number;
  lastSessionId: string | null;
  connected: boolean;
  /**
   * The token the id belongs to: the one it first registered with, or the one that claimed it since
   * (see agentIdClaim in auth.ts). null: registered before tokens were recorded; the next token claims it.
   */
  tokenId: string | null;
}

/** A supervised node in the hub's registry. */
export interface NodeRow {
  id: string;
  agentId: string;
  desired: "running" | "stopped";
  /** NodeSpawn, encoded: what to start it with. */
  spec: Uint8Array;
  /** NodeRecord its agent last reported, encoded. */
  record: Uint8Array | null;
  recordAt: number | null;
  reschedule: boolean;
  pool: string;
  labels: Record<string, string>;
  createdAt: number;
  updatedAt: number;
}

export interface TokenRecord {
  id: string; // public id, "tok_..."
  name: string;
  role: Role;
  pools: string[]; // empty: all pools
  agentId: string | null; // agent tokens may pin an agent id
  /** Agent tokens: a second process may take over a live session of the same agent id. */
  allowTakeover: boolean;
  hash: string; // hex SHA-256 of the secret; the secret itself is never stored
  createdAt: number;
  revokedAt: number | null;
  lastUsedAt: number | null;
}

export interface AuditEntry {
  at: number;
  actor: string; // token name, or "system"
  action: string; // "task.submit", "task.cancel", "token.create", "token.revoke", "agent.connect", ...
  subject: string; // task id, token id, agent id
  detail?: Record<string, unknown>;
}

export interface AuditRecord extends AuditEntry {
  id: number;
}

export interface AuditFilter {
  limit?: number; // default 50, max 1000
  action?: string;
  subject?: string;
}

export interface Store {
  // tasks
  /** Resolves once the task is committed; rejects (and keeps nothing) while the store cannot write. */
  insertTask(task: NewTask): Promise<void>;
  /** Batched. */
  updateTask(id: string, patch: TaskPatch): void;
  getTask(id: string): Promise<TaskRecord | undefined>;
  listTasks(filter: TaskFilter): Promise<TaskRecord[]>;
  /** Tasks not in a terminal state: what a restarted hub must account for. */
  listUnfinishedTasks(): Promise<TaskRecord[]>;
  countTasks(): Promise<number>;

  // output (capped per task, head and tail)
  /** Batched. */
  appendOutput(taskId: string, stream: OutputStreamName, data: Uint8Array): void;
  getOutput(taskId: string): Promise<StoredOutput>;

  // agents
  /** Batched. An agent's firstSeenAt stays that of its first record (a later upsert's is ignored). */
  upsertAgent(agent: AgentRecord): void;
  getAgent(id: string): Promise<AgentRecord | undefined>;
  listAgents(): Promise<AgentRecord[]>;
  /**
   * Releases an agent id (written at once): its record is gone once this resolves. Resolves false
   * when no agent has that id.
   */
  forgetAgent(id: string): Promise<boolean>;
  /** At hub start: no agent is connected yet (applies after the upserts made before it). */
  markAllAgentsDisconnected(): void;

  // nodes (written at once: each resolves once committed)
  upsertNode(node: NodeRow): Promise<void>;
  deleteNode(id: string): Promise<void>;
  listNodes(): Promise<NodeRow[]>;

  // tokens (insert and revoke written at once: a revocation takes effect when it resolves)
  insertToken(token: TokenRecord): Promise<void>;
  findTokenByHash(hash: string): Promise<TokenRecord | undefined>;
  findToken(idOrName: string): Promise<TokenRecord | undefined>;
  listTokens(includeRevoked: boolean): Promise<TokenRecord[]>;
  revokeToken(id: string, at: number): Promise<void>;
  /** Batched: authenticating a call never waits for a commit. */
  touchToken(id: string, at: number): void;

  // audit
  /** Batched. */
  audit(entry: AuditEntry): void;
  listAudit(filter: AuditFilter): Promise<AuditRecord[]>;

  /**
   * Set while the store cannot commit: it holds its writes and retries until it can. Undefined
   * while it writes.
   */
  readonly writeFailure: StoreWriteFailure | undefined;
  /** Called once when commits start failing (with why) and once when they succeed again (undefined). */
  onWriteFailureChange(listener: (failure: StoreWriteFailure | undefined) => void): void;
  /** Commits so far: a figure for tests and benchmarks. */
  readonly commitCount: number;
  /**
   * The number of the batch a write made now joins. It is committed once committedBatch reaches
   * that number (a commit under way when it was made does not hold it).
   */
  readonly pendingBatch: number;
  /** The number of the last batch committed. */
  readonly committedBatch: number;
  /**
   * Resolves after the next commit, made at the end of this turn of the event loop (while the
   * store cannot write: as soon as it can again). Rejects only if the store closes first.
   */
  committed(): Promise<void>;

  /** Commit everything pending now. */
  flush(): Promise<void>;

  /**
   * Resolves once everything written about the task so far (its record, its output and the tail
   * of it) is committed: another process reading the store sees it as this one does.
   */
  taskSettled(taskId: string): Promise<void>;
  /**
   * Flush and close; the store is unusable afterwards. While it cannot write, it keeps retrying
   * for up to `waitWritableMs` (default 0) before it gives up and closes without what it held.
   */
  close(opts?: { waitWritableMs?: number }): Promise<void>;
}

export interface StoreOptions {
  /** Output kept per task, head plus tail. Default 1 MiB. */
  outputCapBytes?: number;
  /** Longest a batched write waits before commit. Default 10 ms. */
  flushIntervalMs?: number;
}
