// The PostgreSQL store against a real server (127.0.0.1:5432, trust auth, user postgres), in a
// database of its own created for this file and dropped after. What must hold: every call round-
// trips; output is capped exactly as the SQLite store caps it (both fed the same writes); a burst
// of writes costs a few commits; hubs opening one empty database together migrate it once; and a
// database that goes away loses nothing written meanwhile, refuses inserts, and is written again
// by itself when it is back. The password never shows.
import { randomBytes } from "node:crypto";
import pg from "pg";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Code, SwitchboardError } from "../../../common/errors.js";
import { waitFor } from "../../../common/wait-for.js";
import type { AgentRecord, NodeRow, OutputStreamName, TokenRecord } from "../interfaces.js";
import { openSqliteStore } from "../sqlite/store.js";
import { describeStoreConformance } from "../testing/conformance.js";
import { newTask, tempDir } from "../testing/fixtures.js";
import { StoreTcpProxy } from "../testing/tcp-proxy.js";
import type { StoreWriteFailure } from "../write-failure.js";
import type { PostgresStoreOptions } from "./options.js";
import { openPostgresStore, type PostgresStore } from "./store.js";

const SERVER = "postgres://postgres@127.0.0.1:5432";
const DB = `sb_store_${randomBytes(6).toString("hex")}`;
const URL_ = `${SERVER}/${DB}`;

async function admin(fn: (c: pg.Client) => Promise<unknown>, db = "postgres"): Promise<void> {
  const c = new pg.Client({ connectionString: `${SERVER}/${db}`, connectionTimeoutMillis: 10_000 });
  c.on("error", () => undefined);
  await c.connect().catch((e: unknown) => {
    throw new Error(`cannot connect to the test PostgreSQL server at ${SERVER}: ${String(e)}`);
  });
  try {
    await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** Rows of a query on the test database, through a connection of its own. */
async function peek<R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<R[]> {
  let rows: R[] = [];
  await admin(async (c) => {
    rows = (await c.query<R>(text, values)).rows;
  }, DB);
  return rows;
}

beforeAll(async () => {
  await admin((c) => c.query(`CREATE DATABASE ${DB}`));
});

afterAll(async () => {
  await admin((c) => c.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`));
});

const open: PostgresStore[] = [];
let schemaSeq = 0;

afterEach(async () => {
  for (const s of open.splice(0)) await s.close().catch(() => undefined);
});

// The Store contract, as the SQLite store passes it: each test in a fresh schema; a store opened
// again on that schema sees what the last one committed.
let conformanceSchema = "";
describeStoreConformance("postgres", {
  setup: () => {
    conformanceSchema = `c${++schemaSeq}_${randomBytes(3).toString("hex")}`;
    return Promise.resolve();
  },
  teardown: () => admin((c) => c.query(`DROP SCHEMA IF EXISTS ${conformanceSchema} CASCADE`), DB),
  open: (opts) => openPostgresStore({ url: URL_, schema: conformanceSchema, retryFirstMs: 20, ...opts }),
});

interface Logged {
  msg: string;
  [k: string]: unknown;
}

/** A store in a schema of its own (so tests do not see each other's rows), and what it logged. */
async function openStore(
  opts: Partial<PostgresStoreOptions> = {},
): Promise<{ store: PostgresStore; logs: Logged[]; schema: string }> {
  const logs: Logged[] = [];
  const logger = pino(
    { level: "debug" },
    { write: (line: string) => void logs.push(JSON.parse(line) as Logged) },
  );
  const schema = opts.schema ?? `t${++schemaSeq}_${randomBytes(3).toString("hex")}`;
  const store = await openPostgresStore({ url: URL_, schema, logger, retryFirstMs: 20, ...opts });
  open.push(store);
  return { store, logs, schema };
}

/** A task's kept stdout, head and tail, as text. */
async function keptStdout(store: PostgresStore, id: string): Promise<string> {
  const { stdout } = await store.getOutput(id);
  return Buffer.concat([stdout.head, stdout.tail]).toString();
}

function agent(id: string, overrides: Partial<AgentRecord> = {}): AgentRecord {
  return {
    id,
    pool: "edge",
    labels: { zone: "a" },
    hostname: "h1",
    platform: "linux/amd64",
    version: "1.0.0",
    taskKinds: ["echo", "shell"],
    maxConcurrency: 4,
    firstSeenAt: 1_000,
    lastSeenAt: 2_000,
    lastSessionId: "s1",
    connected: true,
    tokenId: "tok_a",
    ...overrides,
  };
}

function token(id: string, overrides: Partial<TokenRecord> = {}): TokenRecord {
  return {
    id,
    name: `name-${id}`,
    role: "operator",
    pools: ["edge"],
    agentId: null,
    allowTakeover: false,
    hash: `hash-${id}`,
    createdAt: 5_000,
    revokedAt: null,
    lastUsedAt: null,
    ...overrides,
  };
}

function node(id: string, overrides: Partial<NodeRow> = {}): NodeRow {
  return {
    id,
    agentId: "a1",
    desired: "running",
    spec: new Uint8Array([9, 8]),
    record: null,
    recordAt: null,
    reschedule: true,
    pool: "edge",
    labels: { k: "v" },
    createdAt: 10,
    updatedAt: 11,
    ...overrides,
  };
}

const bytes = (x: Uint8Array | null): number[] | null => (x ? [...x] : null);

describe("round trips", () => {
  it("tasks: insert, update, get, list by filter, unfinished, count; a duplicate id is ALREADY_EXISTS", async () => {
    const { store } = await openStore();
    const a = newTask({
      target: { pool: "edge", labels: { gpu: "yes" } },
      spec: new Uint8Array([0, 255]),
      deadlineAt: 99,
    });
    const b = newTask({ state: "assigned", agentId: "a1", assignedAt: 7 });
    await Promise.all([store.insertTask(a), store.insertTask(b)]);
    store.updateTask(a.id, { state: "running", startedAt: 10 });
    store.updateTask(a.id, {
      state: "succeeded",
      finishedAt: 20,
      exitCode: 0,
      result: new Uint8Array([1]),
      agentId: null,
    });
    const got = await store.getTask(a.id); // without a flush: reads see the writes before them
    expect({ ...got, spec: bytes(got!.spec), result: bytes(got!.result) }).toMatchObject({
      id: a.id,
      target: { pool: "edge", labels: { gpu: "yes" } },
      spec: [0, 255],
      state: "succeeded",
      startedAt: 10,
      finishedAt: 20,
      exitCode: 0,
      result: [1],
      deadlineAt: 99,
      agentId: null,
      stdoutBytes: 0,
    });
    expect(await store.getTask("nope")).toBeUndefined();
    expect((await store.listTasks({})).map((t) => t.id)).toEqual([b.id, a.id]);
    expect((await store.listTasks({ agentId: "a1" })).map((t) => t.id)).toEqual([b.id]);
    expect((await store.listTasks({ pool: "edge" })).map((t) => t.id)).toEqual([a.id]);
    expect((await store.listTasks({ states: ["succeeded"] })).map((t) => t.id)).toEqual([a.id]);
    expect((await store.listTasks({ beforeId: b.id, limit: 1 })).map((t) => t.id)).toEqual([a.id]);
    expect((await store.listUnfinishedTasks()).map((t) => t.id)).toEqual([b.id]);
    expect(await store.countTasks()).toBe(2);
    const dup = await store.insertTask(a).catch((e: unknown) => e);
    expect(dup).toBeInstanceOf(SwitchboardError);
    expect((dup as SwitchboardError).code).toBe(Code.ALREADY_EXISTS);
  });

  it("agents: upsert keeps the first first-seen, get reads through pending, forget, all disconnected", async () => {
    const { store } = await openStore();
    store.upsertAgent(agent("a1"));
    expect((await store.getAgent("a1"))?.hostname).toBe("h1");
    await store.flush();
    store.upsertAgent(agent("a1", { firstSeenAt: 5_000, hostname: "h2" }));
    store.upsertAgent(agent("a2", { connected: false, tokenId: null }));
    expect(await store.getAgent("a1")).toEqual(agent("a1", { hostname: "h2" }));
    expect(await store.listAgents()).toEqual([
      agent("a1", { hostname: "h2" }),
      agent("a2", { connected: false, tokenId: null }),
    ]);
    store.markAllAgentsDisconnected();
    store.upsertAgent(agent("a3")); // after the call: stays connected
    expect((await store.listAgents()).map((a) => [a.id, a.connected])).toEqual([
      ["a1", false],
      ["a2", false],
      ["a3", true],
    ]);
    expect(await store.forgetAgent("a2")).toBe(true);
    expect(await store.forgetAgent("a2")).toBe(false);
    expect(await store.getAgent("a2")).toBeUndefined();
  });

  it("nodes: upsert keeps created_at, delete, list", async () => {
    const { store } = await openStore();
    await store.upsertNode(node("n1"));
    await store.upsertNode(node("n2", { createdAt: 20, record: new Uint8Array([3]), recordAt: 21 }));
    await store.upsertNode(node("n1", { createdAt: 99, desired: "stopped", updatedAt: 12 }));
    const listed = await store.listNodes();
    expect(listed.map((n) => ({ ...n, spec: bytes(n.spec), record: bytes(n.record) }))).toEqual([
      { ...node("n1", { desired: "stopped", updatedAt: 12 }), spec: [9, 8], record: null },
      { ...node("n2", { createdAt: 20, recordAt: 21 }), spec: [9, 8], record: [3] },
    ]);
    await store.deleteNode("n1");
    expect((await store.listNodes()).map((n) => n.id)).toEqual(["n2"]);
  });

  it("tokens: insert, find by hash, id and live name, list, touch, revoke; a live name is unique", async () => {
    const { store } = await openStore();
    await store.insertToken(token("tok_1", { allowTakeover: true, agentId: "a1", role: "agent" }));
    await store.insertToken(token("tok_2", { createdAt: 6_000 }));
    expect(await store.findTokenByHash("hash-tok_1")).toEqual(
      token("tok_1", { allowTakeover: true, agentId: "a1", role: "agent" }),
    );
    store.touchToken("tok_2", 7_000);
    store.touchToken("tok_2", 6_500); // an earlier touch does not go back
    expect((await store.findToken("name-tok_2"))?.lastUsedAt).toBe(7_000);
    await store.flush();
    expect((await store.findToken("tok_2"))?.lastUsedAt).toBe(7_000);
    const dup = await store.insertToken(token("tok_3", { name: "name-tok_2" })).catch((e: unknown) => e);
    expect((dup as SwitchboardError).code).toBe(Code.ALREADY_EXISTS);
    expect((dup as Error).message).toContain('a live token named "name-tok_2"');
    await store.revokeToken("tok_2", 8_000);
    await store.revokeToken("tok_2", 9_000); // keeps the first time
    expect((await store.listTokens(false)).map((t) => t.id)).toEqual(["tok_1"]);
    expect((await store.listTokens(true)).map((t) => [t.id, t.revokedAt])).toEqual([
      ["tok_1", null],
      ["tok_2", 8_000],
    ]);
    const missing = await store.revokeToken("tok_x", 1).catch((e: unknown) => e);
    expect((missing as SwitchboardError).code).toBe(Code.NOT_FOUND);
    expect(await store.findToken("name-tok_2")).toBeUndefined(); // revoked: its name is free
  });

  it("audit: in order, newest first, filtered by action and subject, detail kept", async () => {
    const { store } = await openStore();
    store.audit({ at: 1, actor: "x", action: "task.submit", subject: "t1", detail: { n: 1 } });
    store.audit({ at: 2, actor: "x", action: "task.cancel", subject: "t1" });
    store.audit({ at: 3, actor: "y", action: "task.submit", subject: "t2" });
    const all = await store.listAudit({});
    expect(all.map((e) => e.at)).toEqual([3, 2, 1]);
    expect(all[2]).toMatchObject({ actor: "x", action: "task.submit", subject: "t1", detail: { n: 1 } });
    expect(all[1]!.detail).toBeUndefined();
    expect((await store.listAudit({ action: "task.submit" })).map((e) => e.at)).toEqual([3, 1]);
    expect((await store.listAudit({ action: "task.submit", subject: "t1" })).map((e) => e.at)).toEqual([1]);
    expect((await store.listAudit({ limit: 1 })).map((e) => e.at)).toEqual([3]);
  });

  it("committed() resolves once what was written before it is committed", async () => {
    const { store } = await openStore({ flushIntervalMs: 60_000 });
    const t = newTask();
    await store.insertTask(t);
    const before = store.commitCount;
    store.updateTask(t.id, { state: "running" });
    await store.committed();
    expect(store.commitCount).toBeGreaterThan(before);
    expect(
      await peek(`SELECT state FROM ${store.location.match(/schema (\w+)/)![1]}.tasks WHERE id = $1`, [t.id]),
    ).toEqual([{ state: "running" }]);
  });
});

describe("output", () => {
  /** A deterministic pseudo-random sequence, so that a failure can be replayed. */
  function rng(seed: number): () => number {
    let s = seed;
    return () => (s = (s * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
  }

  it.each([1, 2, 3])(
    "keeps the same head and tail as the SQLite store fed the same writes (seed %i)",
    async (seed) => {
      const cap = 64;
      const dir = tempDir();
      try {
        let sqlite = openSqliteStore(dir.file("hub.db"), { outputCapBytes: cap, flushIntervalMs: 60_000 });
        const { store: pgStore, schema } = await openStore({ outputCapBytes: cap, flushIntervalMs: 60_000 });
        let pgs = pgStore;
        const tasks = [newTask(), newTask(), newTask()];
        for (const t of tasks) {
          await sqlite.insertTask(t);
          await pgs.insertTask(t);
        }
        const random = rng(seed);
        for (let i = 0; i < 120; i++) {
          const t = tasks[Math.floor(random() * tasks.length)]!;
          const stream: OutputStreamName = random() < 0.6 ? "stdout" : "stderr";
          const data = Buffer.from(`${i}:${"x".repeat(Math.floor(random() * 30))};`);
          sqlite.appendOutput(t.id, stream, data);
          pgs.appendOutput(t.id, stream, data);
          const r = random();
          if (r < 0.1) {
            await sqlite.flush();
            await pgs.flush();
          } else if (i === 60) {
            // Both restart: their output buffers carry on from what is stored.
            await sqlite.close();
            await pgs.close();
            sqlite = openSqliteStore(dir.file("hub.db"), { outputCapBytes: cap, flushIntervalMs: 60_000 });
            pgs = (await openStore({ outputCapBytes: cap, flushIntervalMs: 60_000, schema })).store;
          } else if (r < 0.15) {
            sqlite.updateTask(t.id, { state: "succeeded" }); // late output after this reads back too
            pgs.updateTask(t.id, { state: "succeeded" });
          }
        }
        for (const t of tasks) {
          const expected = await sqlite.getOutput(t.id);
          const actual = await pgs.getOutput(t.id);
          expect(actual).toEqual(expected);
          expect(expected.stdout.droppedBytes + expected.stderr.droppedBytes).toBeGreaterThan(0);
          const [st, pt] = [(await sqlite.getTask(t.id))!, (await pgs.getTask(t.id))!];
          expect([pt.stdoutBytes, pt.stderrBytes]).toEqual([st.stdoutBytes, st.stderrBytes]);
        }
        await sqlite.close();
      } finally {
        dir.remove();
      }
    },
  );
});

describe("batching", () => {
  it("commits a burst of 1,000 updates in a few commits of one statement each", async () => {
    const { store } = await openStore({ flushIntervalMs: 10 });
    const tasks = Array.from({ length: 100 }, () => newTask());
    const insertCommits = store.commitCount;
    await Promise.all(tasks.map((t) => store.insertTask(t)));
    const insertsTook = store.commitCount - insertCommits;
    expect(insertsTook).toBeLessThanOrEqual(2); // grouped: one commit for inserts made in one turn

    const commits = store.commitCount;
    const statements = store.statementCount;
    for (let i = 0; i < 1_000; i++) {
      const t = tasks[i % tasks.length]!;
      store.updateTask(t.id, { state: "running", startedAt: i });
      store.audit({ at: i, actor: "system", action: "task.update", subject: t.id });
    }
    await store.flush();
    const took = store.commitCount - commits;
    const sent = store.statementCount - statements;
    console.log(
      `1,000 updates + 1,000 audit entries: ${took} commits, ${sent} statements (inserts of 100: ${insertsTook})`,
    );
    expect(took).toBeLessThanOrEqual(5);
    expect(sent).toBe(took);
    expect((await store.getTask(tasks[99]!.id))?.startedAt).toBe(999);
    expect((await store.listAudit({ limit: 1000 })).length).toBe(1000);
  });

  it("writes the output of a task it inserted without reading the store first", async () => {
    const { store, schema } = await openStore({ flushIntervalMs: 10 });
    const task = newTask();
    await store.insertTask(task);
    const statements = store.statementCount;
    const commits = store.commitCount;
    store.updateTask(task.id, { state: "running", startedAt: 1 });
    store.appendOutput(task.id, "stdout", Buffer.from("hello\n"));
    store.updateTask(task.id, { state: "succeeded", finishedAt: 2, exitCode: 0 });
    await store.flush();
    expect(store.statementCount - statements).toBe(store.commitCount - commits);
    expect(await keptStdout(store, task.id)).toBe("hello\n");
    // A task it did not insert (another hub's, or its own before a restart) is read back first.
    const { store: other } = await openStore({ schema });
    const before = other.statementCount;
    other.appendOutput(task.id, "stdout", Buffer.from("late\n"));
    await other.flush();
    expect(other.statementCount - before).toBeGreaterThan(other.commitCount);
    expect(await keptStdout(other, task.id)).toBe("hello\nlate\n");
  });
});

describe("migrations", () => {
  it("two stores opening the same empty schema together migrate it once", async () => {
    const schema = `m_${randomBytes(3).toString("hex")}`;
    const [a, b] = await Promise.all([openStore({ schema }), openStore({ schema })]);
    expect(a.store.schemaVersion).toBe(5);
    expect(b.store.schemaVersion).toBe(5);
    const applied = [...a.logs, ...b.logs].filter((l) => l.msg === "store migration applied");
    expect(applied).toHaveLength(5);
    expect(await peek(`SELECT version, name FROM ${schema}.schema_migrations ORDER BY version`)).toEqual([
      { version: 1, name: "initial" },
      { version: 2, name: "write_batch" },
      { version: 3, name: "hot_task_updates" },
      { version: 4, name: "task_page_room" },
      { version: 5, name: "hubs" },
    ]);
  });

  it("refuses a schema from newer code", async () => {
    const { schema } = await openStore();
    await admin((c) => c.query(`INSERT INTO ${schema}.schema_migrations VALUES (99, 'future', 0)`), DB);
    const err = await openPostgresStore({ url: URL_, schema }).catch((e: unknown) => e);
    expect((err as SwitchboardError).code).toBe(Code.FAILED_PRECONDITION);
    expect((err as Error).message).toMatch(/version 99/);
  });
});

describe("while the database is out of reach", () => {
  it("a commit whose answer was lost: the insert it refused ends cancelled, and its audit entry is written once", async () => {
    const proxy = await StoreTcpProxy.start({ host: "127.0.0.1", port: 5432 });
    try {
      const { store, schema } = await openStore({
        url: `postgres://postgres@127.0.0.1:${proxy.port}/${DB}`,
        connectTimeoutMs: 500,
        poolSize: 1,
      });
      await store.insertTask(newTask()); // the one connection is open

      proxy.holdReplies();
      const task = newTask();
      store.audit({ at: 1, actor: "x", action: "answer.lost", subject: task.id });
      const refused = store.insertTask(task).catch((e: unknown) => e);
      // It committed on the server; the store never hears so.
      await waitFor(
        async () => (await peek(`SELECT 1 FROM ${schema}.tasks WHERE id = $1`, [task.id])).length > 0,
        {
          message: "the commit to reach the database",
        },
      );
      proxy.down();
      const err = await refused;
      expect((err as SwitchboardError).code).toBe(Code.UNAVAILABLE);
      expect((err as Error).message).toContain("was not accepted");

      proxy.up();
      await waitFor(() => store.writeFailure === undefined, {
        timeout: 10_000,
        message: "the store to write again",
      });
      await store.flush();
      // Its client was told it was not accepted: it must never run, and says why.
      const [row] = await peek<{ state: string; reason: string }>(
        `SELECT state, reason FROM ${schema}.tasks WHERE id = $1`,
        [task.id],
      );
      expect(row?.state).toBe("cancelled");
      expect(row?.reason).toMatch(/not accepted: the database's answer to its commit was lost/);
      expect((await store.listAudit({ action: "answer.lost" })).length).toBe(1);
    } finally {
      await proxy.close();
    }
  });

  it("holds the writes, refuses inserts, and commits them by itself once it is back; the password never shows", async () => {
    const proxy = await StoreTcpProxy.start({ host: "127.0.0.1", port: 5432 });
    try {
      const password = "s3cret-pw";
      const { store, logs, schema } = await openStore({
        url: `postgres://postgres:${password}@127.0.0.1:${proxy.port}/${DB}`,
        connectTimeoutMs: 500,
      });
      const changes: (StoreWriteFailure | undefined)[] = [];
      store.onWriteFailureChange((f) => changes.push(f));
      const t = newTask();
      await store.insertTask(t);

      proxy.down();
      store.updateTask(t.id, { state: "running", startedAt: 42 });
      store.appendOutput(t.id, "stdout", Buffer.from("hello"));
      store.audit({ at: 1, actor: "x", action: "held.entry", subject: t.id });
      const failure = await waitFor(() => store.writeFailure, {
        message: "the store to report that it cannot write",
      });
      expect(failure.location).toContain(`127.0.0.1:${proxy.port}/${DB}`);
      const refused = await store.insertTask(newTask()).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(SwitchboardError);
      expect((refused as SwitchboardError).code).toBe(Code.UNAVAILABLE);
      expect((refused as Error).message).toContain(DB);
      expect((refused as Error).message).toContain("was not accepted");
      // The sentence names a database, not a data dir.
      expect((refused as Error).message).toContain(`(database ${store.location}); retrying`);
      const tokenRefused = await store.insertToken(token("tok_x")).catch((e: unknown) => e);
      expect((tokenRefused as SwitchboardError).code).toBe(Code.UNAVAILABLE);
      // Nothing reached the database meanwhile.
      expect(await peek(`SELECT state FROM ${schema}.tasks WHERE id = $1`, [t.id])).toEqual([
        { state: "queued" },
      ]);

      proxy.up();
      await waitFor(() => store.writeFailure === undefined, { message: "the store to write again" });
      expect(changes.map((c) => c === undefined)).toEqual([false, true]);
      expect(
        await peek(`SELECT state, started_at, stdout_bytes FROM ${schema}.tasks WHERE id = $1`, [t.id]),
      ).toEqual([{ state: "running", started_at: "42", stdout_bytes: "5" }]);
      const actions = (await store.listAudit({})).map((e) => e.action);
      expect(actions).toContain("held.entry");
      expect(actions).toContain("store.unwritable");
      await store.insertTask(newTask()); // accepted again

      const shown = JSON.stringify({
        logs,
        failure,
        refused: (refused as Error).message,
        location: store.location,
      });
      expect(shown).not.toContain(password);
      expect(logs.filter((l) => l.msg.startsWith("store cannot write"))).toHaveLength(1);
      expect(logs.filter((l) => l.msg === "store writable again")).toHaveLength(1);
    } finally {
      for (const s of open.splice(0)) await s.close().catch(() => undefined);
      await proxy.close();
    }
  });
});
