// `switchboard audit`: who did what and when — submissions, cancels, tokens, agents, settings.
import type { Command } from "commander";
import { clientCommand, withClient } from "../client-command.js";
import { intFlag } from "../flags.js";
import { isoTime, outputFormat, printList, type Column } from "../output.js";

interface AuditRow {
  id: number;
  atMs: number;
  actor: string;
  action: string;
  subject: string;
  detail: Record<string, unknown> | null;
}

const COLUMNS: Column<AuditRow>[] = [
  { header: "WHEN", value: (r) => isoTime(r.atMs) ?? "-" },
  { header: "ACTOR", value: (r) => r.actor },
  { header: "ACTION", value: (r) => r.action },
  { header: "SUBJECT", value: (r) => r.subject },
  { header: "DETAIL", value: (r) => (r.detail ? JSON.stringify(r.detail) : "") },
];

export function registerAudit(program: Command): void {
  clientCommand(program, "audit", "the audit log, newest first (admin)")
    .option(
      "--action <action>",
      "only this action, e.g. task.submit, task.cancel, token.revoke, agent.connect",
    )
    .option("--subject <id>", "only entries about this task, token or agent")
    .option("--limit <n>", "at most this many (default 50, max 1000)")
    .option("-o, --output <format>", "table or json", "table")
    .action(
      async (f: { action?: string; subject?: string; limit?: string; output?: string }, cmd: Command) => {
        const format = outputFormat(f.output);
        const entries = await withClient(cmd, (c) =>
          c.admin.listAudit({
            limit: f.limit ? intFlag("--limit", f.limit, 1) : 50,
            ...(f.action ? { action: f.action } : {}),
            ...(f.subject ? { subject: f.subject } : {}),
          }),
        );
        const rows: AuditRow[] = entries.map((e) => ({
          id: e.id,
          atMs: e.atMs,
          actor: e.actor,
          action: e.action,
          subject: e.subject,
          detail: e.detailJson ? (JSON.parse(e.detailJson) as Record<string, unknown>) : null,
        }));
        printList(rows, COLUMNS, format, "no audit entries match");
      },
    );
}
