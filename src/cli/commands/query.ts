// `switchboard query`: run SQL on a datasource an agent reaches and print the result: an aligned table
// on a terminal, CSV, JSON or NDJSON to pipes and files, or straight into a central PostgreSQL table
// with COPY. Rows stream: nothing holds the whole result, and a slow pipe slows the database read.
import { rename, rm } from "node:fs/promises";
import { createWriteStream, type WriteStream } from "node:fs";
import { once } from "node:events";
import type { Command } from "commander";
import { sql, type JsonValue, type QueryEvent, type TaskRequest } from "../../client/index.js";
import { CliError, EXIT, usageError } from "../cli-error.js";
import { clientCommand, targetAction, withClient, type TargetFlags } from "../client-command.js";
import { durationFlag } from "../flags.js";
import { ProgressLine } from "../progress-line.js";
import { createRowSink, FORMATS, tableDescription, type Format } from "../sql-output.js";
import { cancelOnInterruptOrClosedPipe } from "../signals.js";

interface QueryFlags extends TargetFlags {
  db?: string;
  table?: string;
  format?: string;
  out?: string;
  into?: string;
  intoTable?: string;
  maxRows?: string;
  timeout?: string;
  wait?: boolean;
  progress?: boolean;
}

export function registerQuery(program: Command): void {
  const cmd = clientCommand(program, "query", "run SQL on a datasource of an agent and print the rows")
    .argument("<sql>", "one SQL statement; $1.. (postgres) or ? (mysql, sqlite) for parameters")
    .argument("[params...]", 'parameters: JSON values (42, true, null, "text"), anything else a string')
    .requiredOption("--db <name>", "the datasource, as named in the agent's [datasources.NAME]")
    .option("--table <name>", "describe this table (columns, keys, indexes); with --into, the table to fill")
    .option("--format <fmt>", "table, csv, json or ndjson (default: table on a terminal, else csv)")
    .option("-o, --out <file>", "write the result to this file (format from its extension)")
    .option("--into <postgres-url>", "copy the rows into this PostgreSQL database with COPY")
    .option("--into-table <name>", "the table --into fills (default: --table); created when absent")
    .option("--max-rows <n>", "fail when the result has more rows than this")
    .option("--timeout <duration>", "statement timeout (e.g. 30s, 5m)")
    .option("--wait", "queue even when no agent of the target is connected (until --timeout)")
    .option("--no-progress", "no progress line on stderr")
    .addHelpText(
      "after",
      `
Examples:
  switchboard query --pool db --db main "SELECT id, name FROM users LIMIT 10"
  switchboard query --agent eu-1 --db main --format csv -o users.csv "SELECT * FROM users"
  switchboard query --pool db --db main "SELECT * FROM orders WHERE id = $1" 42
  switchboard query --pool db --db main --into postgres://warehouse/dw --into-table staging.orders \\
      "SELECT * FROM orders"

Values keep their meaning: 64-bit integers beyond 2^53 and decimals print as text, dates and times
as ISO 8601, binary as base64, JSON as JSON; NULL is empty in CSV and null in JSON.`,
    );
  targetAction(
    cmd,
    async (target, query: string, rawParams: string[], flags: QueryFlags, command: Command) => {
      const format = chooseFormat(flags);
      if (flags.into !== undefined && flags.out !== undefined)
        throw usageError("give either --into or --out, not both");
      const intoTable = flags.intoTable ?? flags.table;
      if (flags.into !== undefined && intoTable === undefined) {
        throw usageError("--into needs the table to fill", "add --into-table NAME (or --table NAME)");
      }
      if (flags.into !== undefined && !/^postgres(ql)?:\/\//i.test(flags.into)) {
        throw usageError(`--into: expected a postgres:// URL, got "${redactUrl(flags.into)}"`);
      }
      let maxRows = 0;
      if (flags.maxRows !== undefined) {
        maxRows = Number(flags.maxRows);
        if (!Number.isSafeInteger(maxRows) || maxRows < 1)
          throw usageError(`--max-rows: expected a positive integer, got "${flags.maxRows}"`);
      }
      const timeoutMs = flags.timeout !== undefined ? durationFlag("--timeout", flags.timeout) : 0;
      const req: TaskRequest = {
        ...sql({
          datasource: flags.db!,
          query,
          params: rawParams.map(parseParam),
          ...(flags.table !== undefined && flags.into === undefined ? { table: flags.table } : {}),
          ...(maxRows > 0 ? { maxRows } : {}),
          ...(timeoutMs > 0 ? { timeoutMs } : {}),
          // CSV is encoded by the agent and written here as it comes: no parsing on this side.
          ...(format === "csv" && flags.into === undefined ? { format: "csv" as const } : {}),
        }),
        target,
        waitForAgent: flags.wait ?? false,
      };
      const cancel = cancelOnInterruptOrClosedPipe("cancelling the query");
      // On one terminal a progress line would tangle with the table being printed: only when stdout goes elsewhere.
      const progress = new ProgressLine(process.stderr, {
        enabled:
          flags.progress !== false &&
          (flags.out !== undefined || flags.into !== undefined || process.stdout.isTTY !== true),
      });
      try {
        await withClient(command, async (client) => {
          const events = client.query({ ...req, signal: cancel.signal });
          if (flags.into !== undefined) {
            await copyResult(events, flags.into, intoTable!, progress, cancel.signal);
          } else {
            await printResult(events, format, flags.out, progress);
          }
        });
      } catch (e) {
        if (cancel.signal.aborted) throw new CliError("the query was cancelled", EXIT.interrupted);
        throw e;
      } finally {
        progress.done();
        cancel.dispose();
      }
    },
  );
}

function chooseFormat(flags: QueryFlags): Format {
  if (flags.format !== undefined) {
    if (!FORMATS.includes(flags.format as Format)) {
      throw usageError(`--format: expected one of ${FORMATS.join(", ")}, got "${flags.format}"`);
    }
    return flags.format as Format;
  }
  if (flags.out !== undefined) {
    const ext = flags.out.toLowerCase().split(".").pop();
    if (ext === "json") return "json";
    if (ext === "ndjson" || ext === "jsonl") return "ndjson";
    return "csv";
  }
  return process.stdout.isTTY ? "table" : "csv";
}

/** A parameter from the command line: a JSON value when it parses as one, else the text itself. */
export function parseParam(raw: string): JsonValue {
  try {
    return JSON.parse(raw) as JsonValue;
  } catch {
    return raw;
  }
}

function redactUrl(url: string): string {
  return url.replace(/\/\/([^/@:]*):[^/@]*@/, "//$1:***@");
}

async function printResult(
  events: AsyncGenerator<QueryEvent>,
  format: Format,
  outPath: string | undefined,
  progress: ProgressLine,
): Promise<void> {
  // A file is written under a temporary name and renamed once complete: never a partial file under the real name.
  let file: WriteStream | undefined;
  const tmp = outPath !== undefined ? `${outPath}.partial-${process.pid}` : undefined;
  if (tmp !== undefined) {
    file = createWriteStream(tmp, { mode: 0o644 });
    await once(file, "open");
  }
  const out = file ?? process.stdout;
  const sink = createRowSink(format, out, { color: file === undefined && process.stdout.isTTY === true });
  let rows = 0;
  let bytes = 0;
  try {
    for await (const ev of events) {
      if (ev.kind === "header") {
        const table = ev.header.table;
        // CSV and NDJSON carry rows only: the description goes to stderr, where a person sees it.
        if (table && (format === "csv" || format === "ndjson")) process.stderr.write(tableDescription(table));
        await sink.begin(ev.header.columns, format === "table" || format === "json" ? table : null);
      } else if (ev.kind === "rows") {
        rows += ev.rows.length;
        bytes += ev.bytes;
        progress.update(rows, bytes);
        await sink.rows(ev.rows);
      } else if (ev.kind === "csv") {
        bytes += ev.data.length;
        if (progress.enabled) rows += countLines(ev.data);
        progress.update(rows, bytes);
        if (sink.encoded === undefined)
          throw new CliError("the agent sent CSV for a result printed as " + format);
        await sink.encoded(ev.data);
      } else {
        await sink.end({ rowCount: ev.summary.row_count });
        if (ev.summary.affected_rows !== null && ev.summary.affected_rows !== undefined) {
          process.stderr.write(`${ev.summary.affected_rows} rows affected\n`);
        }
      }
    }
    if (file) {
      const f = file;
      await new Promise<void>((resolve, reject) => f.end((e?: Error | null) => (e ? reject(e) : resolve())));
      await rename(tmp!, outPath!);
      file = undefined;
    }
  } finally {
    if (file) {
      file.destroy();
      await rm(tmp!, { force: true });
    }
  }
}

/** Line breaks in a CSV chunk: rows, give or take the line breaks inside quoted values. */
function countLines(data: Buffer): number {
  let n = 0;
  for (let i = data.indexOf(0x0a); i !== -1; i = data.indexOf(0x0a, i + 1)) n++;
  return n;
}

async function copyResult(
  events: AsyncGenerator<QueryEvent>,
  url: string,
  table: string,
  progress: ProgressLine,
  signal: AbortSignal,
): Promise<void> {
  const first = await events.next();
  if (first.done || first.value.kind !== "header") throw new CliError("the query ended without a result");
  const columns = first.value.header.columns;
  if (columns.length === 0) throw usageError("the statement returns no rows: nothing to copy");
  let rows = 0;
  let bytes = 0;
  async function* batches(): AsyncGenerator<JsonValue[][]> {
    for await (const ev of events) {
      if (ev.kind === "rows") {
        rows += ev.rows.length;
        bytes += ev.bytes;
        progress.update(rows, bytes);
        yield ev.rows;
      }
    }
  }
  const { copyInto } = await import("../copy-into.js"); // pg is loaded only for --into
  const r = await copyInto({ url, table, columns, rows: batches(), signal });
  progress.done();
  process.stderr.write(`copied ${r.rowCount} rows into ${table}${r.created ? " (created)" : ""}\n`);
}
