// Queries on the audit log: who did what to which task, token or agent, newest first.
import type { Database, Statement } from "better-sqlite3";
import type { AuditFilter, AuditRecord } from "../interfaces.js";
import type { AuditInsert } from "../write-batch.js";
import { clampLimit } from "../list-limit.js";

const INSERT_AUDIT = `INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)`;

/** `SELECT ... FROM audit WHERE <the filter's conditions> ORDER BY id DESC LIMIT ?`. */
function listAuditSql(action: boolean, subject: boolean): string {
  const where: string[] = [];
  if (action) where.push("action = ?");
  if (subject) where.push("subject = ?");
  return `SELECT id, at, actor, action, subject, detail FROM audit
${where.length ? `WHERE ${where.join(" AND ")}` : ""}
ORDER BY id DESC LIMIT ?`;
}

interface AuditRow {
  id: number;
  at: number;
  actor: string;
  action: string;
  subject: string;
  detail: string | null;
}

export class AuditQueries {
  private readonly insertStmt: Statement<[number, string, string, string, string | null]>;
  private readonly listStmts: Statement<(string | number)[], AuditRow>[];

  constructor(db: Database) {
    this.insertStmt = db.prepare(INSERT_AUDIT);
    // Indexed by (action ? 1 : 0) + (subject ? 2 : 0).
    this.listStmts = [
      db.prepare(listAuditSql(false, false)),
      db.prepare(listAuditSql(true, false)),
      db.prepare(listAuditSql(false, true)),
      db.prepare(listAuditSql(true, true)),
    ];
  }

  insert(e: AuditInsert): void {
    this.insertStmt.run(e.at, e.actor, e.action, e.subject, e.detail);
  }

  list(filter: AuditFilter): AuditRecord[] {
    const params: (string | number)[] = [];
    if (filter.action) params.push(filter.action);
    if (filter.subject) params.push(filter.subject);
    params.push(clampLimit(filter.limit));
    const stmt = this.listStmts[(filter.action ? 1 : 0) + (filter.subject ? 2 : 0)]!;
    return stmt.all(...params).map(toAuditRecord);
  }
}

function toAuditRecord(row: AuditRow): AuditRecord {
  const record: AuditRecord = {
    id: row.id,
    at: row.at,
    actor: row.actor,
    action: row.action,
    subject: row.subject,
  };
  if (row.detail !== null) record.detail = JSON.parse(row.detail) as Record<string, unknown>;
  return record;
}
