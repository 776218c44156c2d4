// The shared store: a PostgreSQL database (one schema) that several hubs may use, implementing the
// Store interface with async reads. This class says what each call reads and writes; the
// batching writer (../batch-writer.ts, with writer.ts's committer) decides when writes commit and
// holds them while the database refuses them; the per-table files (tasks.ts, agents.ts, ...) hold
// the SQL. Reads commit the pending batch first, so they see every write made before them, except
// where they read through it.
import type { ClusterStore, HubLease, HubRecord } from "../../cluster/cluster-store.js";
import * as hubs from "./hubs.js";
import pg from "pg";
import { Code, SwitchboardError } from "../../../common/errors.js";
import { silentLogger, type Logger } from "../../../common/logger.js";
import { isTerminal } from "../../../common/task-state.js";
import { errorMessage } from "../errors.js";
import type {
  AgentRecord,
  AuditFilter,
  AuditRecord,
  NodeRow,
  Store,
  StoredOutput,
  TaskFilter,
  TaskRecord,
  TokenRecord,
} from "../interfaces.js";
import { withHeldAgents, withHeldNodes, withHeldUpdate } from "../held-reads.js";
import * as agents from "./agents.js";
import * as audit from "./audit.js";
import { secretsOf, shownUrl, tokenInsertError, withoutSecrets } from "./errors.js";
import { migrate } from "./migrate.js";
import { MIGRATIONS } from "./migrations/index.js";
import * as nodes from "./nodes.js";
import { postgresSettings, type PostgresStoreOptions, type Settings } from "./options.js";
import * as output from "./output.js";
import * as tasks from "./tasks.js";
import * as tokens from "./tokens.js";
import { PostgresWriter } from "./writer.js";
import { BatchedStore } from "../batched-store.js";
import type { PendingBatch } from "./pending-batch.js";

/** Connects, creates the schema if needed and migrates it (once, whoever else starts meanwhile). */
export async function openPostgresStore(opts: PostgresStoreOptions): Promise<PostgresStore> {
  const logger = opts.logger ?? silentLogger();
  const settings = postgresSettings(opts);
  const secrets = secretsOf(opts.url, opts.password);
  const location = `${shownUrl(opts.url)} (schema ${settings.schema})`;
  const pool = new pg.Pool({
    connectionString: opts.url,
    ...(opts.password !== undefined ? { password: opts.password } : {}),
    max: settings.poolSize,
    connectionTimeoutMillis: settings.connectTimeoutMs,
    // Every statement names its tables unqualified: the schema is the connection's search path.
    // A cluster's hub names itself on every connection: the tasks it inserts take its hub_id.
    options: `-c search_path=${settings.schema}${settings.owner ? ` -c switchboard.hub_id=${settings.owner}` : ""}`,
    application_name: "switchboard-hub",
  });
  // A connection lost while idle in the pool is reported here; the next query on it fails and says so.
  pool.on("error", (err) =>
    logger.debug({ err: withoutSecrets(errorMessage(err), secrets) }, "store connection lost"),
  );
  try {
    const client = await pool.connect();
    let version: number;
    // Heard, not thrown: a connection lost during the migration fails its next statement.
    const lost = (): void => undefined;
    client.on("error", lost);
    try {
      version = await migrate(client, settings.schema, MIGRATIONS, location, logger);
    } finally {
      client.off("error", lost);
      client.release();
    }
    logger.info({ database: location, schemaVersion: version, poolSize: settings.poolSize }, "store opened");
    return new PostgresStore(pool, location, secrets, version, settings, logger);
  } catch (err) {
    await pool.end().catch(() => undefined);
    if (err instanceof SwitchboardError) throw err;
    throw new SwitchboardError(
      Code.FAILED_PRECONDITION,
      `cannot open the store ${location}: ${withoutSecrets(errorMessage(err), secrets)}`,
      { cause: err },
    );
  }
}

export class PostgresStore extends BatchedStore<PendingBatch> implements Store, ClusterStore {
  protected readonly writer: PostgresWriter;

  constructor(
    private readonly pool: pg.Pool,
    /** The database as shown in logs and errors: its URL without password, and the schema. */
    readonly location: string,
    secrets: readonly string[],
    readonly schemaVersion: number,
    settings: Settings,
    logger: Logger,
  ) {
    super();
    this.writer = new PostgresWriter(pool, location, secrets, settings, logger);
  }

  // ---- health

  /** Statements sent so far, BEGIN and COMMIT included: a figure for tests and benchmarks. */
  get statementCount(): number {
    return this.writer.statements;
  }

  // ---- tasks

  async getTask(id: string): Promise<TaskRecord | undefined> {
    await this.writer.beforeRead();
    const task = await this.writer.read("the task was not read", (sql) => tasks.getTask(sql, id));
    return task && this.asHeld(task);
  }

  async listTasks(filter: TaskFilter): Promise<TaskRecord[]> {
    await this.writer.beforeRead();
    const rows = await this.writer.read("the tasks were not listed", (sql) => tasks.listTasks(sql, filter));
    return this.writer.failure ? rows.map((r) => this.asHeld(r)) : rows;
  }

  async listUnfinishedTasks(): Promise<TaskRecord[]> {
    await this.writer.beforeRead();
    const rows = await this.writer.read("the unfinished tasks were not listed", (sql) =>
      tasks.listUnfinishedTasks(sql),
    );
    if (!this.writer.failure) return rows;
    return rows.map((r) => this.asHeld(r)).filter((r) => !isTerminal(r.state));
  }

  async countTasks(): Promise<number> {
    await this.writer.beforeRead();
    return this.writer.read("the tasks were not counted", (sql) => tasks.countTasks(sql));
  }

  /** A stored task as it will be once the held writes commit (while the store cannot write). */
  private asHeld(task: TaskRecord): TaskRecord {
    if (!this.writer.failure) return task;
    return withHeldUpdate(task, this.writer.batch.updates.get(task.id), this.writer.outputs.get(task.id));
  }

  // ---- output

  async getOutput(taskId: string): Promise<StoredOutput> {
    // The task's tail is written with what is pending, so that the read sees all of it.
    await this.writer.beforeRead(this.writer.outputs.get(taskId));
    return this.writer.read("the output was not read", (sql) => output.getOutput(sql, taskId));
  }

  // ---- agents

  async getAgent(id: string): Promise<AgentRecord | undefined> {
    this.writer.assertOpen();
    // Read through the pending and in-flight upserts instead of committing first: the hub reads an
    // agent on every connect, and a reconnect storm must not cost a commit each.
    const stored = await this.writer.read("the agent was not read", (sql) => agents.getAgent(sql, id));
    return this.writer.agentWithPending(id, stored);
  }

  async listAgents(): Promise<AgentRecord[]> {
    await this.writer.beforeRead();
    const stored = await this.writer.read("the agents were not listed", (sql) => agents.listAgents(sql));
    const held = this.writer.batch.agents;
    if (!this.writer.failure || held.size === 0) return stored;
    return withHeldAgents(stored, held);
  }

  async forgetAgent(id: string): Promise<boolean> {
    this.writer.assertOpen();
    // Written at once, after the commit in flight: an admin's release must not be undone by a batch.
    const pending = this.writer.batch.agents.delete(id);
    const deleted = await this.writer.direct(`agent ${id} was not forgotten`, (sql) =>
      agents.deleteAgent(sql, id),
    );
    return deleted || pending;
  }

  markAllAgentsDisconnected(): void {
    this.writer.assertOpen();
    // Pending upserts were made before: they do not reconnect anyone. The statement runs before the
    // batch's upserts, so later ones do.
    const batch = this.writer.batch;
    for (const [id, a] of batch.agents) if (a.connected) batch.agents.set(id, { ...a, connected: false });
    batch.disconnectAll = true;
    this.writer.enqueued();
  }

  // ---- nodes (committed at once with whatever else is pending; held while the store cannot
  // write, so that a heartbeat never fails on an unreachable database)

  upsertNode(node: NodeRow): Promise<void> {
    this.writer.assertOpen();
    return this.writer.writeNode(node.id, { ...node });
  }

  deleteNode(id: string): Promise<void> {
    this.writer.assertOpen();
    return this.writer.writeNode(id, null);
  }

  async listNodes(): Promise<NodeRow[]> {
    await this.writer.beforeRead();
    const stored = await this.writer.read("the nodes were not listed", (sql) => nodes.listNodes(sql));
    const held = this.writer.batch.nodes;
    return held.size === 0 ? stored : withHeldNodes(stored, held);
  }

  // ---- tokens (written at once: rare, and a revocation must take effect immediately)

  async insertToken(token: TokenRecord): Promise<void> {
    try {
      await this.writer.direct("the token was not created", (sql) => tokens.insertToken(sql, token));
    } catch (err) {
      throw tokenInsertError(token, err);
    }
  }

  async findTokenByHash(hash: string): Promise<TokenRecord | undefined> {
    // No flush: the only token writes that wait in the batch are touches, applied here instead,
    // so that authenticating a call never forces a commit.
    const token = await this.writer.read("the token was not read", (sql) => tokens.tokenByHash(sql, hash));
    return this.writer.tokenWithPending(token);
  }

  async findToken(idOrName: string): Promise<TokenRecord | undefined> {
    const token = await this.writer.read(
      "the token was not read",
      async (sql) => (await tokens.tokenById(sql, idOrName)) ?? (await tokens.liveTokenByName(sql, idOrName)),
    );
    return this.writer.tokenWithPending(token);
  }

  async listTokens(includeRevoked: boolean): Promise<TokenRecord[]> {
    const list = await this.writer.read("the tokens were not listed", (sql) =>
      tokens.listTokens(sql, includeRevoked),
    );
    return list.map((t) => this.writer.tokenWithPending(t)!);
  }

  async revokeToken(id: string, at: number): Promise<void> {
    const what = "the token was not revoked";
    const revoked = await this.writer.direct(what, (sql) => tokens.revokeToken(sql, id, at));
    if (revoked) return;
    if (!(await this.writer.read(what, (sql) => tokens.tokenById(sql, id))))
      throw new SwitchboardError(Code.NOT_FOUND, `no token has the id ${id}`);
    // Already revoked: keep the first revocation time.
  }

  // ---- audit

  async listAudit(filter: AuditFilter): Promise<AuditRecord[]> {
    await this.writer.beforeRead();
    return this.writer.read("the audit log was not read", (sql) => audit.listAudit(sql, filter));
  }

  // ---- the hubs of a cluster (cluster/cluster-store.ts): read and written at once, on the pool

  claimLease(lease: HubLease, leaseMs: number): Promise<{ holder: string; ageMs: number } | undefined> {
    return this.writer.read("the hub's lease was not claimed", (sql) => hubs.claimLease(sql, lease, leaseMs));
  }

  renewLease(lease: HubLease): Promise<boolean> {
    return this.writer.read("the hub's lease was not renewed", (sql) => hubs.renewLease(sql, lease));
  }

  releaseLease(id: string, incarnation: string): Promise<void> {
    return this.writer.read("the hub's lease was not released", (sql) =>
      hubs.releaseLease(sql, id, incarnation),
    );
  }

  listHubs(): Promise<HubRecord[]> {
    return this.writer.read("the hubs were not listed", (sql) => hubs.listHubs(sql));
  }

  clusterKey(candidate: Buffer): Promise<Buffer> {
    return this.writer.read("the cluster key was not read", (sql) => hubs.clusterKey(sql, candidate));
  }

  takeOver(gone: string, me: string): Promise<TaskRecord[]> {
    return this.writer.read("a gone hub's tasks were not taken over", (sql) => hubs.takeOver(sql, gone, me));
  }

  revokedAmong(ids: readonly string[]): Promise<string[]> {
    return this.writer.read("the tokens were not read", (sql) => hubs.revokedAmong(sql, ids));
  }

  // ---- lifecycle

  close(opts: { waitWritableMs?: number } = {}): Promise<void> {
    return this.writer.close(opts.waitWritableMs ?? 0, () => this.pool.end());
  }
}
