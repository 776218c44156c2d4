// Queries on the nodes table: the hub's registry of supervised nodes. Written at once (spawns, stops and
// status changes are rare), read in full when the hub starts.
import type { Database, Statement } from "better-sqlite3";
import type { NodeRow } from "../interfaces.js";
import { toNodeRow, type NodeTableRow } from "../records.js";
import { upsertByIdSql } from "./upsert-sql.js";

const COLUMNS = [
  "id",
  "agent_id",
  "desired",
  "spec",
  "record",
  "record_at",
  "reschedule",
  "pool",
  "labels",
  "created_at",
  "updated_at",
];

// created_at keeps the value of the first insert.
const UPSERT = upsertByIdSql("nodes", COLUMNS, ["created_at"]);

type UpsertParams = [
  string,
  string,
  string,
  Uint8Array,
  Uint8Array | null,
  number | null,
  number,
  string,
  string,
  number,
  number,
];

export class NodeQueries {
  private readonly upsertStmt: Statement<UpsertParams>;
  private readonly deleteStmt: Statement<[string]>;
  private readonly listStmt: Statement<[], NodeTableRow>;

  constructor(db: Database) {
    this.upsertStmt = db.prepare(UPSERT);
    this.deleteStmt = db.prepare(`DELETE FROM nodes WHERE id = ?`);
    this.listStmt = db.prepare(`SELECT ${COLUMNS.join(", ")} FROM nodes ORDER BY created_at, id`);
  }

  upsert(n: NodeRow): void {
    this.upsertStmt.run(
      n.id,
      n.agentId,
      n.desired,
      n.spec,
      n.record,
      n.recordAt,
      n.reschedule ? 1 : 0,
      n.pool,
      JSON.stringify(n.labels),
      n.createdAt,
      n.updatedAt,
    );
  }

  delete(id: string): void {
    this.deleteStmt.run(id);
  }

  list(): NodeRow[] {
    return this.listStmt.all().map(toNodeRow);
  }
}
