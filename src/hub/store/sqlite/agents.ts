// Queries on the agents table: the last known record of every agent that ever connected.
import type { Database, Statement } from "better-sqlite3";
import type { AgentRecord } from "../interfaces.js";
import { toAgentRecord, type AgentRow } from "../records.js";
import { upsertByIdSql } from "./upsert-sql.js";

const COLUMNS = [
  "id",
  "pool",
  "labels",
  "hostname",
  "platform",
  "version",
  "task_kinds",
  "max_concurrency",
  "first_seen_at",
  "last_seen_at",
  "last_session_id",
  "connected",
  "token_id",
];

const AGENT_COLUMNS = COLUMNS.join(", ");

// first_seen_at keeps the value of the first insert.
const UPSERT_AGENT = upsertByIdSql("agents", COLUMNS, ["first_seen_at"]);

const SELECT_AGENT = `SELECT ${AGENT_COLUMNS} FROM agents WHERE id = ?`;

const SELECT_AGENTS = `SELECT ${AGENT_COLUMNS} FROM agents ORDER BY id`;

const DELETE_AGENT = `DELETE FROM agents WHERE id = ?`;

const MARK_ALL_DISCONNECTED = `UPDATE agents SET connected = 0 WHERE connected <> 0`;

type UpsertParams = [
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  number,
  number,
  number,
  string | null,
  number,
  string | null,
];

export class AgentQueries {
  private readonly upsertStmt: Statement<UpsertParams>;
  private readonly selectStmt: Statement<[string], AgentRow>;
  private readonly listStmt: Statement<[], AgentRow>;
  private readonly disconnectStmt: Statement<[]>;
  private readonly deleteStmt: Statement<[string]>;

  constructor(db: Database) {
    this.upsertStmt = db.prepare(UPSERT_AGENT);
    this.selectStmt = db.prepare(SELECT_AGENT);
    this.listStmt = db.prepare(SELECT_AGENTS);
    this.disconnectStmt = db.prepare(MARK_ALL_DISCONNECTED);
    this.deleteStmt = db.prepare(DELETE_AGENT);
  }

  upsert(a: AgentRecord): void {
    this.upsertStmt.run(
      a.id,
      a.pool,
      JSON.stringify(a.labels),
      a.hostname,
      a.platform,
      a.version,
      JSON.stringify(a.taskKinds),
      a.maxConcurrency,
      a.firstSeenAt,
      a.lastSeenAt,
      a.lastSessionId,
      a.connected ? 1 : 0,
      a.tokenId,
    );
  }

  get(id: string): AgentRecord | undefined {
    const row = this.selectStmt.get(id);
    return row && toAgentRecord(row);
  }

  list(): AgentRecord[] {
    return this.listStmt.all().map(toAgentRecord);
  }

  /** Returns false when no agent has that id. */
  delete(id: string): boolean {
    return this.deleteStmt.run(id).changes > 0;
  }

  markAllDisconnected(): number {
    return this.disconnectStmt.run().changes;
  }
}
