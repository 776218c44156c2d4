// A hub whose state lives in PostgreSQL (`--store postgres://…`), connecting as a role that owns its
// schema and nothing more, its password in a file: the core flows work (exact output, logs, cancel,
// tokens and their revocation, SQL, supervised nodes, a seed-000 client's SendCommand), nothing of the state lands in the data dir,
// the password shows in no log, and a hub killed with -9 and started again on the same database finds
// its tasks and tokens.
import { randomBytes } from "node:crypto";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../src/common/wait-for.js";
import { startNodeAgent } from "./support/node-agents.js";
import { generateSeedStubs, seedClientCall } from "./support/seed000.js";
import {
  runCli,
  spawnCli,
  startAgent,
  startHub,
  stopAll,
  tempDir,
  type HubProc,
  waitForTaskState,
} from "./support/processes.js";

const SERVER = "postgres://postgres@127.0.0.1:5432";
const suffix = randomBytes(4).toString("hex");
const DB = `sb_hub_${suffix}`;
const ROLE = `sb_hub_${suffix}`;
const PASSWORD = `pw-${randomBytes(8).toString("hex")}`;

async function asSuperuser(db: string, ...sql: string[]): Promise<void> {
  const c = new pg.Client({ connectionString: `${SERVER}/${db}`, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    for (const q of sql) await c.query(q);
  } finally {
    await c.end();
  }
}

let dataDir: string;
let passwordFile: string;
let hub: HubProc;

function hubArgs(): string[] {
  return ["--store", `postgres://${ROLE}@127.0.0.1:5432/${DB}`];
}

beforeAll(async () => {
  await asSuperuser("postgres", `CREATE ROLE ${ROLE} LOGIN PASSWORD '${PASSWORD}'`, `CREATE DATABASE ${DB}`);
  // The role owns its schema and may not create anything elsewhere, nor is it a superuser.
  await asSuperuser(
    DB,
    `REVOKE ALL ON DATABASE ${DB} FROM PUBLIC`,
    `GRANT CONNECT ON DATABASE ${DB} TO ${ROLE}`,
    "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    `CREATE SCHEMA switchboard AUTHORIZATION ${ROLE}`,
  );
  dataDir = tempDir("hub-pg");
  passwordFile = join(tempDir("hub-pg-secret"), "password");
  writeFileSync(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
  hub = await startHub({
    dataDir,
    args: hubArgs(),
    env: { SWITCHBOARD_STORE_PASSWORD_FILE: passwordFile },
  });
  const lite = join(tempDir("hub-pg-sql"), "shop.db");
  const db = new Database(lite);
  db.exec(
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO items VALUES (1, 'tea'), (2, 'rice');",
  );
  db.close();
  const config = join(tempDir("hub-pg-agent"), "agent.toml");
  writeFileSync(config, `[datasources.shop]\ndriver = "sqlite"\npath = ${JSON.stringify(lite)}\n`);
  await startAgent(hub, { agentId: "pg-1", pool: "pg", args: ["--config", config] });
}, 60_000);

afterAll(async () => {
  await stopAll();
  await asSuperuser("postgres", `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`, `DROP ROLE IF EXISTS ${ROLE}`);
});

describe("a hub on PostgreSQL", () => {
  it("runs tasks with their exact output, keeps logs, cancels, and keeps no state in the data dir", async () => {
    const r = await runCli([...hub.cli, "exec", "--pool", "pg", "--", "printf", "a\\nb\\n"]);
    expect(r).toMatchObject({ code: 0, stdout: "a\nb\n" });

    const detached = await runCli([
      ...hub.cli,
      "exec",
      "--pool",
      "pg",
      "--detach",
      "--shell",
      "echo kept; echo err >&2",
    ]);
    const id = detached.stdout.trim();
    await waitForTaskState(hub, id, "succeeded");
    const logs = await runCli([...hub.cli, "logs", id]);
    expect(logs.stdout).toBe("kept\n");
    expect(logs.stderr).toContain("err");

    const long = spawnCli([...hub.cli, "exec", "--pool", "pg", "--shell", "echo started; sleep 30"]);
    await waitFor(() => long.stdout().includes("started"), { message: "the long task to start" });
    const running = await runCli([...hub.cli, "tasks", "--state", "running", "--output", "json"]);
    const [task] = JSON.parse(running.stdout) as { taskId: string }[];
    const cancel = await runCli([...hub.cli, "cancel", task!.taskId]);
    expect(cancel.code, cancel.stderr).toBe(0);
    expect(await long.exited).not.toBe(0);

    expect(existsSync(join(dataDir, "switchboard.db"))).toBe(false);
    const rows = new pg.Client({ connectionString: `${SERVER}/${DB}` });
    await rows.connect();
    const n = await rows.query<{ n: number }>("SELECT count(*)::int AS n FROM switchboard.tasks");
    await rows.end();
    expect(n.rows[0]!.n).toBeGreaterThanOrEqual(3);
  }, 90_000);

  it("answers SQL queries and supervises nodes, the node registry kept in PostgreSQL", async () => {
    const q = await runCli([
      ...hub.cli,
      "query",
      "--pool",
      "pg",
      "--db",
      "shop",
      "--format",
      "csv",
      "SELECT id, name FROM items ORDER BY id",
    ]);
    expect(q).toMatchObject({ code: 0, stdout: "id,name\n1,tea\n2,rice\n" });

    await startNodeAgent(hub, "pg-nodes", { portRangeStart: 25000 });
    const spawned = await runCli([...hub.cli, "spawn", "--agent", "pg-nodes", "--output", "json"]);
    expect(spawned.code, spawned.stderr).toBe(0);
    const node = JSON.parse(spawned.stdout) as { nodeId: string; status: string };
    expect(node.status).toBe("running");
    const rows = new pg.Client({ connectionString: `${SERVER}/${DB}` });
    await rows.connect();
    const stored = await rows.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM switchboard.nodes WHERE id = $1",
      [node.nodeId],
    );
    await rows.end();
    expect(stored.rows[0]!.n).toBe(1);
    const stopped = await runCli([...hub.cli, "stop", "--node", node.nodeId]);
    expect(stopped.code, stopped.stderr).toBe(0);
  }, 90_000);

  it("answers a seed-000 client's SendCommand, the task kept in PostgreSQL", async () => {
    const sqlTasks = async (): Promise<number> => {
      const c = new pg.Client({ connectionString: `${SERVER}/${DB}` });
      await c.connect();
      try {
        const r = await c.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM switchboard.tasks WHERE kind = 'sql' AND state = 'succeeded'",
        );
        return r.rows[0]!.n;
      } finally {
        await c.end();
      }
    };
    const before = await sqlTasks();
    const query = ["--query", "SELECT id, name FROM items ORDER BY id", "--tbl-name", "items"];
    const r = seedClientCall(
      generateSeedStubs(),
      ["--agent-id", "pg", "--database", "shop", ...query],
      hub.adminToken,
      hub.address,
    );
    expect(r.ok, r.details).toBe(true);
    expect(JSON.parse(r.json!)).toEqual([
      { id: 1, name: "tea" },
      { id: 2, name: "rice" },
    ]);
    expect(await sqlTasks()).toBe(before + 1);
  }, 90_000);

  it("refuses a revoked token, and after kill -9 and a restart still knows its tasks and tokens", async () => {
    const created = await runCli([...hub.cli, "token", "create", "--role", "operator", "--name", "pg-op"]);
    expect(created.code).toBe(0);
    const token = created.stdout.trim().split("\n").pop()!.trim();
    const before = await runCli(["--hub", hub.address, "--token", token, "tasks"]);
    expect(before.code).toBe(0);
    expect((await runCli([...hub.cli, "token", "revoke", "pg-op"])).code).toBe(0);
    const revoked = await runCli(["--hub", hub.address, "--token", token, "tasks"]);
    expect(revoked.code).not.toBe(0);

    const listed = await runCli([...hub.cli, "tasks", "--output", "json"]);
    const ids = (JSON.parse(listed.stdout) as { taskId: string }[]).map((t) => t.taskId).sort();
    expect(ids.length).toBeGreaterThanOrEqual(3);
    expect(ids.every((id) => /^[0-9a-f-]{36}$/.test(id))).toBe(true);
    hub.kill("SIGKILL");
    await hub.exited;
    hub = await startHub({
      dataDir,
      args: hubArgs(),
      env: { SWITCHBOARD_STORE_PASSWORD_FILE: passwordFile },
    });
    const again = await runCli([...hub.cli, "tasks", "--output", "json"]);
    expect((JSON.parse(again.stdout) as { taskId: string }[]).map((t) => t.taskId).sort()).toEqual(ids);
    const still = await runCli(["--hub", hub.address, "--token", token, "tasks"]);
    expect(still.code).not.toBe(0);
    expect(hub.stderr() + hub.stdout()).not.toContain(PASSWORD);
  }, 90_000);

  it("refuses to start on a store it cannot open, in one sentence naming store.url without the password", async () => {
    const r = await runCli([
      "hub",
      "--listen",
      "127.0.0.1:0",
      "--http-listen",
      "off",
      "--data",
      tempDir("hub-pg-bad"),
      "--store",
      `postgres://${ROLE}:${PASSWORD}@127.0.0.1:1/${DB}`,
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(`^error: store\\.url postgres://${ROLE}:\\*\\*\\*@127\\.0\\.0\\.1:1/${DB}: `, "m"),
    );
    expect(r.stderr).not.toContain(PASSWORD);
    expect(r.stderr).not.toMatch(/^\s+at /m);
  }, 60_000);
});
