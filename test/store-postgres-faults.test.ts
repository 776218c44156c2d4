// A hub whose state lives in PostgreSQL, on a bad day. The database is a server of the test's own
// (test/support/postgres-server.ts), so that it can be crashed and restarted under the hub without
// touching the machine's. Every task appends its number to one marker file each time it runs, so
// that a task run twice cannot hide behind one `succeeded`.
//
// - kill -9 of the hub while several clients submit thousands of tasks; started again on the same
//   database: every accepted task ends in one state a client can see, none ran twice, and one
//   that succeeded ran exactly once.
// - two hubs started at once on an empty database migrate its schema once;
// - the database crashes and stays down under a running hub: the hub says so, refuses new work
//   with UNAVAILABLE naming the database, keeps relaying the output of what runs, and once the
//   database is back carries on by itself; nothing accepted is lost or run twice, and a refused
//   submission never runs.
import { MIGRATIONS } from "../src/hub/store/postgres/migrations/index.js";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SwitchboardClient, shell } from "../src/client/index.js";
import { waitFor } from "../src/common/wait-for.js";
import { submitRecorded, type Submission } from "./support/submissions.js";
import { isTerminalWire } from "../src/common/task-state.js";
import { TaskState } from "../src/gen/switchboard/v1/task.js";
import { PostgresServer } from "./support/postgres-server.js";
import { freePort, startAgent, startHub, stopAll, tempDir, type HubProc } from "./support/processes.js";

let server: PostgresServer;

beforeAll(async () => {
  server = await PostgresServer.create();
}, 120_000);

afterAll(async () => {
  await stopAll();
  server?.remove();
});

/** Submissions of shell tasks that append their number to one marker file each time they run. */
class Load {
  readonly subs: Submission[] = [];
  constructor(
    readonly marks: string,
    private readonly pool: string,
    private readonly sleep = "0",
  ) {}

  async submit(client: SwitchboardClient): Promise<Submission> {
    const sub: Submission = { n: this.subs.length };
    this.subs.push(sub);
    return submitRecorded(
      client,
      {
        ...shell({ argv: ["sh", "-c", `echo ${sub.n} >> ${this.marks}; sleep ${this.sleep}`] }),
        target: { pool: this.pool },
      },
      sub,
    );
  }

  accepted(): Submission[] {
    return this.subs.filter((s) => s.id !== undefined);
  }

  /** How many times each submission ran. */
  runs(): Map<number, number> {
    const counts = new Map<number, number>();
    if (!existsSync(this.marks)) return counts;
    for (const line of readFileSync(this.marks, "utf8").split("\n")) {
      if (line === "") continue;
      const n = Number(line);
      counts.set(n, (counts.get(n) ?? 0) + 1);
    }
    return counts;
  }
}

/**
 * Waits until every accepted task has ended, then checks what each one's end says against its
 * runs; returns how many ended in each state.
 */
async function expectEveryAcceptedTaskEndedOnce(
  client: SwitchboardClient,
  load: Load,
): Promise<Record<string, number>> {
  const accepted = load.accepted();
  const finals = new Map<number, { state: TaskState; reason: string }>();
  await waitFor(
    async () => {
      for (const s of accepted) {
        if (finals.has(s.n)) continue;
        const info = (await client.getTask(s.id!)).info!;
        if (isTerminalWire(info.state)) finals.set(s.n, { state: info.state, reason: info.reason });
      }
      return finals.size === accepted.length;
    },
    { timeout: 90_000, interval: 500, message: "every accepted task to end" },
  );
  const runs = load.runs();
  const twice = [...runs].filter(([, c]) => c > 1).map(([n]) => n);
  expect(twice, "tasks that ran more than once").toEqual([]);
  for (const s of accepted) {
    const { state, reason } = finals.get(s.n)!;
    if (state === TaskState.TASK_STATE_SUCCEEDED) expect(runs.get(s.n), `task ${s.n} succeeded`).toBe(1);
    else {
      expect(state, `task ${s.n}: ${reason}`).toBe(TaskState.TASK_STATE_LOST);
      expect(reason).toMatch(/hub restarted/);
    }
  }
  const byState: Record<string, number> = {};
  for (const { state } of finals.values()) byState[TaskState[state]] = (byState[TaskState[state]] ?? 0) + 1;
  return byState;
}

describe("a hub on PostgreSQL", () => {
  it("killed with -9 while several clients submit thousands of tasks: restarted, none is lost or run twice", async () => {
    const db = "killed";
    await createDatabase(db);
    const dataDir = tempDir("pg-kill");
    const port = await freePort();
    const args = ["--listen", `127.0.0.1:${port}`, "--store", server.url(db)];
    let hub: HubProc = await startHub({ dataDir, args });
    await startAgent(hub, { agentId: "pg-kill-1", pool: "kill", args: ["--pool-size", "16"] });
    const load = new Load(join(tempDir("pg-kill-marks"), "runs"), "kill");
    const clients = Array.from(
      { length: 4 },
      () => new SwitchboardClient({ hub: hub.address, token: hub.adminToken }),
    );
    let counting: NodeJS.Timeout | undefined;
    try {
      // Four clients, each with 16 submissions in flight, 750 tasks each, until the hub dies; they
      // keep the backlog within the hub's queue bound, so that the hub accepts what they submit.
      let dead = false;
      let ran = 0;
      counting = setInterval(() => (ran = load.runs().size), 50);
      const submitting = clients.map(async (client) => {
        const one = async (): Promise<void> => {
          for (let i = 0; i < 750 / 16 && !dead; i++) {
            while (!dead && load.accepted().length - ran > 400) await new Promise((r) => setTimeout(r, 20));
            await load.submit(client);
          }
        };
        await Promise.all(Array.from({ length: 16 }, one));
      });
      await waitFor(() => ran >= 2_000, {
        timeout: 60_000,
        interval: 20,
        message: "two thousand tasks to run",
      });
      clearInterval(counting);
      hub.kill("SIGKILL");
      dead = true;
      await hub.exited;
      await Promise.all(submitting);
      for (const c of clients) c.close();
      expect(load.accepted().length).toBeGreaterThan(2_000);

      hub = await startHub({ dataDir, args });
      const client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
      try {
        // A submission the hub never answered may have run, but never twice (checked here too).
        const ended = await expectEveryAcceptedTaskEndedOnce(client, load);
        console.log(
          `kill -9 under load: ${load.subs.length} submitted, ${load.accepted().length} accepted, ended ${JSON.stringify(ended)}`,
        );
      } finally {
        client.close();
      }
    } finally {
      clearInterval(counting);
      for (const c of clients) c.close();
      hub.kill("SIGTERM");
      await hub.exited;
    }
  }, 240_000);

  it("two hubs started at once on an empty database: the schema is migrated once, and both serve", async () => {
    const db = "together";
    await createDatabase(db);
    const args = ["--store", server.url(db)];
    const [a, b] = await Promise.all([
      startHub({ dataDir: tempDir("pg-together-a"), args, sharedStore: true }),
      startHub({ dataDir: tempDir("pg-together-b"), args, sharedStore: true }),
    ]);
    // The first to open the store wrote the admin token; it serves on both.
    const token = a.adminToken || b.adminToken;
    expect([a.adminToken, b.adminToken].filter((t) => t !== "")).toHaveLength(1);
    try {
      const applied = (hub: HubProc): string[] =>
        (hub.stdout() + hub.stderr())
          .split("\n")
          .filter((line) => line.includes('"store migration applied"'))
          .map((line) => String((JSON.parse(line) as { name: string }).name));
      // Every migration was applied by one of them, once; the other found nothing left to do.
      expect([...applied(a), ...applied(b)].sort()).toEqual(MIGRATIONS.map((m) => m.name).sort());
      const c = new pg.Client({ connectionString: server.url(db), connectionTimeoutMillis: 10_000 });
      await c.connect();
      try {
        const { rows } = await c.query<{ version: number }>(
          "SELECT version FROM switchboard.schema_migrations ORDER BY version",
        );
        expect(rows.map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version));
      } finally {
        await c.end();
      }
      for (const hub of [a, b]) {
        const client = new SwitchboardClient({ hub: hub.address, token });
        try {
          expect((await client.admin.listAgents()).length).toBe(0);
        } finally {
          client.close();
        }
      }
    } finally {
      for (const hub of [a, b]) {
        hub.kill("SIGTERM");
        expect(await hub.exited).toBe(0);
      }
    }
  }, 120_000);

  it("carries on by itself when its database crashes and comes back; meanwhile it refuses new work", async () => {
    const db = "restarted";
    await createDatabase(db);
    const dataDir = tempDir("pg-restart");
    const args = ["--listen", `127.0.0.1:${await freePort()}`, "--store", server.url(db)];
    let hub = await startHub({ dataDir, args });
    await startAgent(hub, { agentId: "pg-restart-1", pool: "restart", args: ["--pool-size", "4"] });
    let client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
    const load = new Load(join(tempDir("pg-restart-marks"), "runs"), "restart", "0.05");
    try {
      // A task that prints until told to stop, followed by a client as it runs.
      const stopFile = join(tempDir("pg-restart-stop"), "stop");
      let lines = 0;
      let watchedId: string | undefined;
      const watched = (async () => {
        const argv = ["sh", "-c", `while [ ! -e ${stopFile} ]; do echo tick; sleep 0.1; done`];
        for await (const ev of client.run(
          { ...shell({ argv }), target: { pool: "restart" } },
          { onTaskId: (t) => (watchedId = t) },
        )) {
          if (ev.event?.$case === "output")
            lines += Buffer.from(ev.event.value.data).toString().split("\n").length - 1;
          if (ev.event?.$case === "finished") return ev.event.value.state;
        }
        return undefined;
      })();
      await waitFor(() => lines > 0, { timeout: 20_000, message: "the watched task to print" });
      await Promise.all(Array.from({ length: 40 }, () => load.submit(client)));
      expect(load.accepted().length).toBe(40);

      // Submissions keep coming while the database crashes: some are in a commit when it does.
      let streaming = true;
      const stream = Promise.all(
        Array.from({ length: 4 }, async () => {
          while (streaming) {
            await load.submit(client);
            await new Promise((r) => setTimeout(r, 10));
          }
        }),
      );
      await waitFor(() => load.accepted().length >= 60, {
        timeout: 20_000,
        message: "the stream to be accepted",
      });

      // The database crashes and stays down.
      server.stop("immediate");
      const refusal = await waitFor(
        async () => {
          const sub = await load.submit(client);
          return sub.err?.code === "UNAVAILABLE" ? sub.err : undefined;
        },
        { timeout: 30_000, interval: 100, message: "the hub to refuse work while its database is down" },
      );
      expect(refusal.message).toMatch(/store cannot write/);
      expect(refusal.message).toContain(`127.0.0.1:${server.port}/${db}`);
      await waitFor(() => /store cannot write/.test(hub.stderr() + hub.stdout()), {
        timeout: 10_000,
        message: "the hub to say its store cannot write",
      });
      // What runs goes on, and its output still reaches the client watching it.
      const before = lines;
      await waitFor(() => lines >= before + 5, {
        timeout: 20_000,
        message: "more output while the database is down",
      });
      // Every further submission meanwhile is refused the same way.
      streaming = false;
      await stream;
      for (let i = 0; i < 5; i++) expect((await load.submit(client)).err?.code).toBe("UNAVAILABLE");

      // Back: the hub notices by itself and takes work again.
      server.start();
      await waitFor(async () => (await load.submit(client)).id !== undefined, {
        timeout: 60_000,
        interval: 200,
        message: "the hub to accept work again",
      });
      await waitFor(() => /store writable again/.test(hub.stderr() + hub.stdout()), {
        timeout: 10_000,
        message: "the hub to say its store writes again",
      });
      writeFileSync(stopFile, "");
      expect(await watched).toBe(TaskState.TASK_STATE_SUCCEEDED);
      expect((await client.getTask(watchedId!)).info?.state).toBe(TaskState.TASK_STATE_SUCCEEDED);

      await expectEveryAcceptedTaskEndedOnce(client, load);

      // A restart finds nothing it should run: a submission refused while its commit's outcome
      // was lost with the database must not come back to life from the store.
      hub.kill("SIGTERM");
      expect(await hub.exited).toBe(0);
      client.close();
      hub = await startHub({ dataDir, args });
      client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
      await waitFor(
        async () => {
          const listed = await client.listTasks({ pool: "restart", limit: 1000 });
          return listed.length > 0 && listed.every((t) => isTerminalWire(t.state));
        },
        { timeout: 30_000, interval: 300, message: "every stored task of the pool to have ended" },
      );
      await expectEveryAcceptedTaskEndedOnce(client, load);
      const runs = load.runs();
      const refused = load.subs.filter((s) => s.err !== undefined);
      expect(refused.length).toBeGreaterThan(5);
      expect(
        refused.filter((s) => runs.has(s.n)).map((s) => s.n),
        "refused submissions that ran",
      ).toEqual([]);
    } finally {
      client.close();
    }
  }, 240_000);
});

async function createDatabase(db: string): Promise<void> {
  const c = new pg.Client({ connectionString: server.url(), connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    await c.query(`CREATE DATABASE ${db}`);
  } finally {
    await c.end();
  }
}
