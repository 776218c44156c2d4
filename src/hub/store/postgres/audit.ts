// Queries on the audit log: who did what to which task, token or agent, newest first. A commit
// inserts every pending entry with one statement, in the order they were made.
import type { AuditFilter, AuditRecord } from "../interfaces.js";
import { clampLimit } from "../list-limit.js";
import type { AuditInsert } from "../write-batch.js";
import { int } from "../records.js";
import type { Sql } from "./sql.js";

const INSERT_AUDIT = `
INSERT INTO audit (at, actor, action, subject, detail)
SELECT at, actor, action, subject, detail
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
  WITH ORDINALITY AS e(at, actor, action, subject, detail, n)
ORDER BY n`;

export async function insertAudit(sql: Sql, entries: readonly AuditInsert[]): Promise<void> {
  if (entries.length > 0) await sql.query(INSERT_AUDIT, insertParams(entries));
}

/** The 5 arrays of audit entries, in the order they were made. */
export function insertParams(entries: readonly AuditInsert[]): unknown[] {
  return [
    entries.map((e) => e.at),
    entries.map((e) => e.actor),
    entries.map((e) => e.action),
    entries.map((e) => e.subject),
    entries.map((e) => e.detail),
  ];
}

export async function listAudit(sql: Sql, filter: AuditFilter): Promise<AuditRecord[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (filter.action) where.push(`action = $${params.push(filter.action)}`);
  if (filter.subject) where.push(`subject = $${params.push(filter.subject)}`);
  const text = `SELECT id, at, actor, action, subject, detail FROM audit
${where.length ? `WHERE ${where.join(" AND ")}` : ""}
ORDER BY id DESC LIMIT $${params.push(clampLimit(filter.limit))}`;
  const { rows } = await sql.query<AuditRow>(text, params);
  return rows.map(toAuditRecord);
}

interface AuditRow {
  id: string;
  at: string;
  actor: string;
  action: string;
  subject: string;
  detail: string | null;
}

function toAuditRecord(row: AuditRow): AuditRecord {
  const record: AuditRecord = {
    id: int(row.id),
    at: int(row.at),
    actor: row.actor,
    action: row.action,
    subject: row.subject,
  };
  if (row.detail !== null) record.detail = JSON.parse(row.detail) as Record<string, unknown>;
  return record;
}
