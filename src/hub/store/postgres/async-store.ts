// The Store interface as it becomes once reads are async: every read and every write made "at once"
// returns a Promise, batched writes stay synchronous. The PostgreSQL store implements this; when
// the interface itself changes, this type is what `Store` becomes and this file goes away.
import type {
  AgentRecord,
  AuditEntry,
  AuditFilter,
  AuditRecord,
  NewTask,
  NodeRow,
  OutputStreamName,
  StoredOutput,
  TaskFilter,
  TaskPatch,
  TaskRecord,
  TokenRecord,
} from "../interfaces.js";
import type { StoreWriteFailure } from "../write-failure.js";

export interface AsyncStore {
  // tasks
  insertTask(task: NewTask): Promise<void>;
  updateTask(id: string, patch: TaskPatch): void;
  getTask(id: string): Promise<TaskRecord | undefined>;
  listTasks(filter: TaskFilter): Promise<TaskRecord[]>;
  listUnfinishedTasks(): Promise<TaskRecord[]>;
  countTasks(): Promise<number>;

  // output
  appendOutput(taskId: string, stream: OutputStreamName, data: Uint8Array): void;
  getOutput(taskId: string): Promise<StoredOutput>;

  // agents
  upsertAgent(agent: AgentRecord): void;
  getAgent(id: string): Promise<AgentRecord | undefined>;
  listAgents(): Promise<AgentRecord[]>;
  forgetAgent(id: string): Promise<boolean>;
  markAllAgentsDisconnected(): void;

  // nodes
  upsertNode(node: NodeRow): Promise<void>;
  deleteNode(id: string): Promise<void>;
  listNodes(): Promise<NodeRow[]>;

  // tokens
  insertToken(token: TokenRecord): Promise<void>;
  findTokenByHash(hash: string): Promise<TokenRecord | undefined>;
  findToken(idOrName: string): Promise<TokenRecord | undefined>;
  listTokens(includeRevoked: boolean): Promise<TokenRecord[]>;
  revokeToken(id: string, at: number): Promise<void>;
  touchToken(id: string, at: number): void;

  // audit
  audit(entry: AuditEntry): void;
  listAudit(filter: AuditFilter): Promise<AuditRecord[]>;

  readonly writeFailure: StoreWriteFailure | undefined;
  onWriteFailureChange(listener: (failure: StoreWriteFailure | undefined) => void): void;
  readonly commitCount: number;
  committed(): Promise<void>;
  flush(): Promise<void>;
  close(opts?: { waitWritableMs?: number }): Promise<void>;
}
