// The program a SQLite worker process runs (sqlite-worker.ts starts `node -e SOURCE PARENT_PID`): it owns
// one better-sqlite3 connection and answers the requests of sqlite-worker.ts over the IPC channel. It is
// kept as plain CommonJS text so that it runs the same from the compiled output and from the TS sources.
//
// Protocol (messages are structured clones, see WorkerRequest/WorkerReply in sqlite-worker.ts):
//   first message            {op:"init", path, readOnly, betterSqlite3}   -> {type:"ready"} once loaded
//   {op:"query", sql, params, batchRows}  -> batch (with columns) | error
//   {op:"next"}                           -> batch | error      (only while a statement is open)
//   {op:"end"}                            no reply: closes the open statement
// A batch is {type:"batch", columns?, rows, done}; done is null while the statement stays open, and then
// nothing more is read until "next" arrives: the parent's consumer sets the pace. A worker serves one task
// after another, so its connection outlives a statement only when that left no session state (settle()).

export const SQLITE_WORKER_SOURCE = String.raw`
"use strict";
const { Worker } = require("node:worker_threads");

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MIN_SAFE = -MAX_SAFE;

// A statement runs inside SQLite without returning to JavaScript, so this thread cannot notice that its
// parent died; a second thread does, and kills the process rather than leave it running orphaned. The
// parent's pid comes as the first argument: process.ppid read here may already be the adopter's.
new Worker(
  "const { workerData } = require('node:worker_threads');" +
    "const check = () => { if (process.ppid !== workerData) process.kill(process.pid, 'SIGKILL'); };" +
    "check(); setInterval(check, 1000);",
  { eval: true, workerData: Number(process.argv[1]) },
).unref();

const inbox = [];
let wake = null;
process.on("message", (message) => {
  inbox.push(message);
  if (wake !== null) {
    const w = wake;
    wake = null;
    w();
  }
});

let Database = null;
let config = null;
let db = null;
// Nullability of the columns of tables, by "database.table"; valid while that schema_version holds.
const nullableCache = new Map();

process.on("disconnect", () => {
  if (db !== null) db.close();
  process.exit(0);
});

function receive() {
  if (inbox.length > 0) return Promise.resolve(inbox.shift());
  return new Promise((resolve) => {
    wake = () => resolve(inbox.shift());
  });
}

function failure(phase, e) {
  const err = e instanceof Error ? e : new Error(String(e));
  return {
    type: "error",
    phase,
    name: err.name,
    code: typeof err.code === "string" ? err.code : null,
    message: err.message,
  };
}

function connect() {
  if (db !== null) return db;
  const conn = new Database(config.path, { readonly: config.readOnly, fileMustExist: true });
  try {
    if (config.readOnly) conn.pragma("query_only = ON");
    // Reads the file header, so that a file that is not a database fails here, as an open failure.
    conn.pragma("schema_version", { simple: true });
  } catch (e) {
    conn.close();
    throw e;
  }
  db = conn;
  return conn;
}

function quoteIdent(name) {
  return '"' + name.replace(/"/g, '""') + '"';
}

/** column name -> nullable, for one table. */
function nullableColumns(database, table) {
  const version = db.pragma(quoteIdent(database) + ".schema_version", { simple: true });
  const key = database + "." + table;
  const cached = nullableCache.get(key);
  if (cached !== undefined && cached.version === version) return cached.columns;
  const info = db
    .prepare('SELECT name, type, "notnull", pk FROM pragma_table_info(?, ?)')
    .all(table, database);
  const pkCount = info.filter((c) => c.pk > 0).length;
  const columns = new Map();
  for (const c of info) {
    // An INTEGER PRIMARY KEY is the rowid, which is never NULL, though the catalog does not say NOT NULL.
    const rowid = c.pk > 0 && pkCount === 1 && String(c.type).toUpperCase() === "INTEGER";
    columns.set(c.name, !(c.notnull || rowid));
  }
  nullableCache.set(key, { version, columns });
  return columns;
}

function columnsOf(stmt) {
  return stmt.columns().map((c) => {
    let nullable = null;
    if (c.table !== null && c.column !== null) {
      try {
        const known = nullableColumns(c.database === null ? "main" : c.database, c.table).get(c.column);
        if (known !== undefined) nullable = known;
      } catch {
        // Unknown is an answer too: the statement itself prepared fine.
      }
    }
    return { name: c.name, type: c.type === null ? "" : c.type.toLowerCase(), nullable };
  });
}

function toJson(v) {
  switch (typeof v) {
    case "bigint":
      return v >= MIN_SAFE && v <= MAX_SAFE ? Number(v) : v.toString();
    case "number":
      if (Number.isFinite(v)) return v;
      return Number.isNaN(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity";
    case "string":
      return v;
    default:
      if (v === null || v === undefined) return null;
      if (v instanceof Uint8Array) {
        return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64");
      }
      return String(v);
  }
}

/** The statement's text from its first keyword on (comments and blanks before it skipped). */
function firstKeyword(sql) {
  let rest = sql;
  for (;;) {
    rest = rest.trimStart();
    if (rest.startsWith("--")) {
      const nl = rest.indexOf("\n");
      rest = nl === -1 ? "" : rest.slice(nl + 1);
    } else if (rest.startsWith("/*")) {
      const end = rest.indexOf("*/", 2);
      rest = end === -1 ? "" : rest.slice(end + 2);
    } else {
      return (/^[A-Za-z]+/.exec(rest) || [""])[0].toUpperCase();
    }
  }
}

// What one statement may leave in the connection for the next task: a pragma (case_sensitive_like,
// query_only, locking_mode...), a transaction left open with the locks it holds, temporary tables, views or
// triggers. A statement that only read leaves none of these; after any other the connection is closed, unless
// it is as a new one would be, and the next statement opens a fresh one.
function settle(conn, stmt, sql) {
  if (db !== conn) return;
  let clean = !conn.inTransaction && firstKeyword(sql) !== "PRAGMA";
  if (clean && !(stmt !== undefined && stmt.reader && stmt.readonly)) {
    try {
      clean = conn.prepare("SELECT count(*) FROM temp.sqlite_master").pluck().get() === 0;
    } catch {
      clean = false;
    }
  }
  if (clean) return;
  db = null;
  try {
    // Rolls back a transaction left open, releasing its locks.
    conn.close();
  } catch {
    // Closed or not, this connection is not used again.
  }
}

async function runQuery(request) {
  let conn;
  try {
    conn = connect();
  } catch (e) {
    process.send(failure("open", e));
    return;
  }
  const ran = { stmt: undefined };
  try {
    await runStatement(conn, request, ran);
  } finally {
    settle(conn, ran.stmt, request.sql);
  }
}

async function runStatement(conn, request, ran) {
  let stmt;
  let columns;
  let rows;
  try {
    stmt = conn.prepare(request.sql);
    ran.stmt = stmt;
    if (!stmt.reader) {
      const result = stmt.run(...request.params);
      const done = { rowCount: 0, affectedRows: result.changes };
      process.send({ type: "batch", columns: [], rows: [], done });
      return;
    }
    stmt.safeIntegers(true);
    stmt.raw(true);
    columns = columnsOf(stmt);
    rows = stmt.iterate(...request.params);
  } catch (e) {
    process.send(failure("statement", e));
    return;
  }
  let rowCount = 0;
  try {
    for (;;) {
      const batch = [];
      let finished = false;
      while (batch.length < request.batchRows) {
        const next = rows.next();
        if (next.done) {
          finished = true;
          break;
        }
        const row = next.value;
        for (let i = 0; i < row.length; i++) row[i] = toJson(row[i]);
        batch.push(row);
      }
      rowCount += batch.length;
      if (finished) {
        const done = { rowCount };
        // INSERT/UPDATE/DELETE ... RETURNING: rows and a count of changes.
        if (!stmt.readonly) done.affectedRows = conn.prepare("SELECT changes()").pluck().get();
        process.send({ type: "batch", columns, rows: batch, done });
        return;
      }
      process.send({ type: "batch", columns, rows: batch, done: null });
      columns = undefined;
      const reply = await receive();
      if (reply.op === "next") continue;
      if (reply.op !== "end") inbox.unshift(reply);
      return;
    }
  } catch (e) {
    process.send(failure("statement", e));
  } finally {
    try {
      rows.return();
    } catch {
      // The statement already failed; its error went out above.
    }
  }
}

async function main() {
  config = await receive();
  Database = require(config.betterSqlite3);
  // Starting a process and loading the addon takes a while on a busy machine: not the statement's time.
  process.send({ type: "ready" });
  for (;;) {
    const request = await receive();
    if (request.op === "query") await runQuery(request);
  }
}

main().catch((e) => {
  process.stderr.write("sqlite worker failed: " + (e instanceof Error ? e.stack : String(e)) + "\n");
  process.exit(1);
});
`;
