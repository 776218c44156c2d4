// An agent id belongs to the pool and token it first registered with, end to end, tried as an
// impostor would: a token of another pool (or another token of the same pool) presents a known
// agent's id, while that agent is offline and while it is online, on the gRPC stream, on the HTTP
// long-poll transport and through seed 000's AgntService. Each impostor is refused with
// PERMISSION_DENIED, the id stays where it was, and an admin's exec never reaches the impostor.
// An admin's `agents forget` releases the id; a revoked token's id passes to a new token of its pool;
// agents of a store from before token ownership are claimed by the first token that connects.
import { credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../src/common/logger.js";
import { AgntServiceClient } from "../src/gen/seed000/app.js";
import { migrate } from "../src/hub/store/sqlite/migrate.js";
import { MIGRATIONS } from "../src/hub/store/sqlite/migrations/index.js";
import {
  listAgents,
  runCli,
  spawnCli,
  startAgent,
  startHub,
  stopAll,
  tempDir,
  type AgentProc,
  type HubProc,
} from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

afterAll(stopAll);

/** An agent token for `pool`, with a name to revoke it by. */
async function token(
  hub: HubProc,
  pool: string,
  extra: string[] = [],
): Promise<{ secret: string; name: string }> {
  const name = `agent-${pool}-${Math.random().toString(36).slice(2, 8)}`;
  const r = await runCli([
    ...hub.cli,
    "token",
    "create",
    "--role",
    "agent",
    "--pool",
    pool,
    "--name",
    name,
    ...extra,
  ]);
  expect(r.code, r.stderr).toBe(0);
  return { secret: r.stdout.trim().split("\n").pop()!.trim(), name };
}

type Transport = "grpc" | "http";

/** A real agent process whose shell tasks print `who`: which process ran a task is never in doubt. */
function agent(
  hub: HubProc,
  o: { id: string; pool: string; token: string; transport: Transport; who: string; wait?: boolean },
): Promise<AgentProc> {
  return startAgent(hub, {
    agentId: o.id,
    pool: o.pool,
    token: o.token,
    args: ["--transport", o.transport],
    env: { WHO: o.who },
    waitConnected: o.wait ?? true,
  });
}

async function agentRow(hub: HubProc, id: string): Promise<{ pool: string; connected: boolean } | undefined> {
  return (await listAgents(hub)).find((a) => a.agentId === id);
}

async function stopped(hub: HubProc, p: AgentProc): Promise<void> {
  p.kill("SIGTERM");
  await p.exited;
  await waitFor(async () => (await agentRow(hub, p.agentId))?.connected === false, {
    message: `${p.agentId} to be offline`,
  });
}

/** Waits for the agent to log the hub's refusal; returns its log line. */
async function refusal(p: AgentProc): Promise<string> {
  return waitFor(
    () =>
      p
        .stderr()
        .split("\n")
        .find((l) => l.includes("the hub refused agent")),
    { timeout: 20_000, interval: 100, message: `${p.agentId} to be refused` },
  );
}

/** What `exec --agent ID -- sh -c 'echo $WHO'` printed, and its exit code. */
async function whoRuns(hub: HubProc, id: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return runCli([...hub.cli, "exec", "--agent", id, "--", "sh", "-c", "echo $WHO"]);
}

const registeredElsewhere = (id: string, pool: string): string =>
  `agent id ${id} is registered to pool ${pool} with another token`;

describe.each<Transport>(["grpc", "http"])("an impostor on the %s transport", (transport) => {
  let hub: HubProc;
  const poolA = `a-${transport}`;
  const poolB = `b-${transport}`;
  beforeAll(async () => {
    hub = await startHub();
  });

  it("cannot take an offline agent's id with another pool's token; admin exec never reaches it", async () => {
    const id = `b1-${transport}`;
    const real = await agent(hub, {
      id,
      pool: poolB,
      token: (await token(hub, poolB)).secret,
      transport,
      who: "real",
    });
    await stopped(hub, real);

    const tokenA = await token(hub, poolA);
    const impostor = await agent(hub, {
      id,
      pool: poolA,
      token: tokenA.secret,
      transport,
      who: "impostor",
      wait: false,
    });
    const line = await refusal(impostor);
    expect(line).toContain('"code":"PERMISSION_DENIED"');
    expect(line).toContain(`${registeredElsewhere(id, poolB)}, not ${poolA}`);
    expect(line).toContain(`switchboard agents forget ${id}`);
    expect(hub.stderr()).toContain("agent stream refused");

    // The id stays pool B's, offline; the admin's exec fails instead of running on the impostor.
    expect(await agentRow(hub, id)).toMatchObject({ pool: poolB, connected: false });
    const r = await whoRuns(hub, id);
    expect(r.stdout).not.toContain("impostor");
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/UNAVAILABLE|not connected/);
    impostor.kill("SIGTERM");
    await impostor.exited;
  }, 180_000);

  it("cannot take an online agent's id with another pool's token, nor with another token of its own pool", async () => {
    const id = `b2-${transport}`;
    const real = await agent(hub, {
      id,
      pool: poolB,
      token: (await token(hub, poolB)).secret,
      transport,
      who: "real",
    });

    const fromA = await agent(hub, {
      id,
      pool: poolA,
      token: (await token(hub, poolA)).secret,
      transport,
      who: "impostor",
      wait: false,
    });
    const fromB = await agent(hub, {
      id,
      pool: poolB,
      token: (await token(hub, poolB)).secret,
      transport,
      who: "impostor",
      wait: false,
    });
    const [lineA, lineB] = await Promise.all([refusal(fromA), refusal(fromB)]);
    expect(lineA).toContain('"code":"PERMISSION_DENIED"');
    expect(lineA).toContain(`${registeredElsewhere(id, poolB)}, not ${poolA}`);
    expect(lineB).toContain('"code":"PERMISSION_DENIED"');
    expect(lineB).toContain(`${registeredElsewhere(id, poolB)};`);

    expect(await agentRow(hub, id)).toMatchObject({ pool: poolB, connected: true });
    const r = await whoRuns(hub, id);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe("real\n");
    // Offline, another token of the same pool is refused all the same.
    await stopped(hub, real);
    const again = await agent(hub, {
      id,
      pool: poolB,
      token: (await token(hub, poolB)).secret,
      transport,
      who: "impostor",
      wait: false,
    });
    expect(await refusal(again)).toContain(`${registeredElsewhere(id, poolB)};`);
    expect(await agentRow(hub, id)).toMatchObject({ pool: poolB, connected: false });
    for (const p of [fromA, fromB, again]) p.kill("SIGTERM");
    await Promise.all([fromA.exited, fromB.exited, again.exited]);
  }, 180_000);

  it("takes the id once an admin forgets it, and the forget is audited", async () => {
    const id = `b3-${transport}`;
    const tokenB = await token(hub, poolB);
    const real = await agent(hub, { id, pool: poolB, token: tokenB.secret, transport, who: "real" });

    // Not while it is connected, and not by an operator.
    const live = await runCli([...hub.cli, "agents", "forget", id]);
    expect(live.code).toBe(1);
    expect(live.stderr).toContain(`agent ${id} is connected`);
    await stopped(hub, real);
    // Work queued for the agent while it is away is the real agent's: forgetting the id cancels it.
    const queued = await runCli([
      ...hub.cli,
      "exec",
      "--agent",
      id,
      "--wait",
      "--timeout",
      "5m",
      "--detach",
      "--",
      "sh",
      "-c",
      "echo $WHO",
    ]);
    expect(queued.code, queued.stderr).toBe(0);
    const queuedId = queued.stdout.trim();
    const op = await runCli([...hub.cli, "token", "create", "--role", "operator"]);
    const opToken = op.stdout.trim().split("\n").pop()!.trim();
    const denied = await runCli(["--hub", hub.address, "--token", opToken, "agents", "forget", id], {
      env: { SWITCHBOARD_DATA: tempDir("empty") },
    });
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/PERMISSION_DENIED|role operator/);

    const forgot = await runCli([...hub.cli, "agents", "forget", id]);
    expect(forgot.code, forgot.stderr).toBe(0);
    expect(forgot.stdout).toBe(
      `forgot agent ${id} (pool ${poolB}, token ${tokenB.name}): the next agent to connect with this id claims it\n`,
    );
    expect(await agentRow(hub, id)).toBeUndefined();
    const cancelled = JSON.parse(
      (await runCli([...hub.cli, "task", queuedId, "--output", "json"])).stdout,
    ) as { state: string; reason: string };
    expect(cancelled.state).toBe("cancelled");
    expect(cancelled.reason).toContain(`agent ${id} was forgotten`);
    const audit = await runCli([
      ...hub.cli,
      "audit",
      "--action",
      "agent.forget",
      "--subject",
      id,
      "--output",
      "json",
    ]);
    const entries = JSON.parse(audit.stdout) as { actor: string; detail: Record<string, unknown> }[];
    expect(entries).toHaveLength(1);
    expect(entries[0]!.detail).toEqual({ pool: poolB, token: tokenB.name });
    const unknown = await runCli([...hub.cli, "agents", "forget", id]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain(`no agent ${id} is known to this hub`);

    // Pool A's token now registers the id, and the admin's exec runs there, as the admin meant.
    const tokenA = await token(hub, poolA);
    const moved = await agent(hub, { id, pool: poolA, token: tokenA.secret, transport, who: "new owner" });
    expect(await agentRow(hub, id)).toMatchObject({ pool: poolA, connected: true });
    expect((await whoRuns(hub, id)).stdout).toBe("new owner\n");
    // The cancelled task never reached the new holder of the id.
    const after = JSON.parse((await runCli([...hub.cli, "task", queuedId, "--output", "json"])).stdout) as {
      state: string;
      stdoutBytes: number;
    };
    expect(after).toMatchObject({ state: "cancelled", stdoutBytes: 0 });
    // ... and it is pool A's token's now: pool B's old token is the impostor.
    await stopped(hub, moved);
    const old = await agent(hub, {
      id,
      pool: poolB,
      token: tokenB.secret,
      transport,
      who: "old",
      wait: false,
    });
    expect(await refusal(old)).toContain(`${registeredElsewhere(id, poolA)}, not ${poolB}`);
    old.kill("SIGTERM");
    await old.exited;
  }, 180_000);
});

describe("an agent id changing hands", () => {
  it("passes to a new token of its pool once its token is revoked, never to another pool's", async () => {
    const hub = await startHub();
    const first = await token(hub, "rot");
    const real = await agent(hub, {
      id: "r1",
      pool: "rot",
      token: first.secret,
      transport: "grpc",
      who: "first",
    });
    // Revoking ends the live session at once: the id is offline and its token revoked.
    expect((await runCli([...hub.cli, "token", "revoke", first.name])).code).toBe(0);
    await waitFor(async () => (await agentRow(hub, "r1"))?.connected === false, {
      message: "r1 to be offline",
    });
    real.kill("SIGTERM");
    await real.exited;

    const other = await agent(hub, {
      id: "r1",
      pool: "elsewhere",
      token: (await token(hub, "elsewhere")).secret,
      transport: "grpc",
      who: "impostor",
      wait: false,
    });
    expect(await refusal(other)).toContain(
      "agent id r1 is registered to pool rot with another token, not elsewhere",
    );
    other.kill("SIGTERM");
    await other.exited;

    const second = await token(hub, "rot");
    await agent(hub, { id: "r1", pool: "rot", token: second.secret, transport: "http", who: "second" });
    expect((await whoRuns(hub, "r1")).stdout).toBe("second\n");
    const audit = await runCli([
      ...hub.cli,
      "audit",
      "--action",
      "agent.connect",
      "--subject",
      "r1",
      "--output",
      "json",
    ]);
    const claims = (JSON.parse(audit.stdout) as { actor: string; detail: { claim?: string } }[]).map((e) => [
      e.actor,
      e.detail.claim,
    ]);
    expect(claims).toEqual([
      [second.name, "owner-revoked"],
      [first.name, "new"],
    ]);
  }, 180_000);

  it("is claimed by the first token that connects when the store predates token ownership", async () => {
    // A data directory from before this change: schema version 4, agent rows without a token.
    const dataDir = tempDir("legacy-hub");
    const db = new Database(join(dataDir, "switchboard.db"));
    migrate(db, MIGRATIONS.slice(0, 4), silentLogger());
    db.prepare(
      `INSERT INTO agents (id, pool, labels, hostname, platform, version, task_kinds, max_concurrency,
         first_seen_at, last_seen_at, last_session_id, connected)
       VALUES ('old-1', 'legacy', '{}', 'h', 'linux', '0', '["shell"]', 1, 1, 2, NULL, 0)`,
    ).run();
    db.close();
    const hub = await startHub({ dataDir });
    expect(await agentRow(hub, "old-1")).toMatchObject({ pool: "legacy", connected: false });

    // Not into another pool, even unclaimed ...
    const other = await agent(hub, {
      id: "old-1",
      pool: "elsewhere",
      token: (await token(hub, "elsewhere")).secret,
      transport: "grpc",
      who: "impostor",
      wait: false,
    });
    expect(await refusal(other)).toContain("agent id old-1 is registered to pool legacy, not elsewhere");
    other.kill("SIGTERM");
    await other.exited;
    // ... but the first token of its pool claims it, and from then on it is that token's.
    const claimed = await agent(hub, {
      id: "old-1",
      pool: "legacy",
      token: (await token(hub, "legacy")).secret,
      transport: "grpc",
      who: "claimed",
    });
    await stopped(hub, claimed);
    const late = await agent(hub, {
      id: "old-1",
      pool: "legacy",
      token: (await token(hub, "legacy")).secret,
      transport: "grpc",
      who: "late",
      wait: false,
    });
    expect(await refusal(late)).toContain("agent id old-1 is registered to pool legacy with another token;");
    late.kill("SIGTERM");
    await late.exited;
  }, 180_000);

  it("lets the demo, started again on its data dir, have its agents back", async () => {
    const dataDir = tempDir("demo-again");
    for (const run of [1, 2]) {
      const demo = spawnCli(["demo", "--listen", "127.0.0.1:0", "--data", dataDir]);
      await waitFor(
        () => {
          if (demo.child.exitCode !== null) throw new Error(`demo exited: ${demo.stderr()}`);
          return demo.stdout().includes("switchboard exec --pool demo");
        },
        { timeout: 60_000, interval: 200, message: `demo run ${run} to print what to try` },
      );
      const r = await runCli(["agents", "--output", "json"], { env: { SWITCHBOARD_DATA: dataDir } });
      const up = (JSON.parse(r.stdout) as { agentId: string; connected: boolean }[]).filter(
        (a) => a.connected,
      );
      expect(up.map((a) => a.agentId).sort()).toEqual(["demo-1", "demo-2"]);
      demo.kill("SIGINT");
      expect(await demo.exited).toBe(0);
    }
  }, 150_000);

  it("holds for seed-000 workers too: worker agent_id:worker_id belongs to the token it joined with", async () => {
    const hub = await startHub();
    const client = new AgntServiceClient(hub.address, credentials.createInsecure());
    /** Joins pool `seedpool` as worker w1; resolves with the status the stream ended with, or "open". */
    const join = (secret: string): { ended: Promise<ServiceError | "ended">; close(): void } => {
      const md = new Metadata();
      md.set("authorization", `Bearer ${secret}`);
      const call = client.connect(md);
      call.on("data", () => undefined);
      const ended = new Promise<ServiceError | "ended">((resolve) => {
        call.on("error", (e: ServiceError) => resolve(e));
        call.on("end", () => resolve("ended"));
      });
      call.write({
        agentId: "seedpool",
        workerId: "w1",
        heartbeat: undefined,
        queryResult: undefined,
        message: "",
      });
      return { ended, close: () => call.end() };
    };
    try {
      const first = join((await token(hub, "seedpool")).secret);
      await waitFor(async () => (await agentRow(hub, "seedpool:w1"))?.connected, {
        message: "worker seedpool:w1 to join",
      });
      first.close();
      await waitFor(async () => (await agentRow(hub, "seedpool:w1"))?.connected === false, {
        message: "seedpool:w1 to be offline",
      });
      const second = join((await token(hub, "seedpool")).secret);
      const end = await second.ended;
      expect(end).toMatchObject({
        code: 7, // PERMISSION_DENIED
        details: expect.stringContaining(registeredElsewhere("seedpool:w1", "seedpool")) as string,
      });
      expect(await agentRow(hub, "seedpool:w1")).toMatchObject({ connected: false });
    } finally {
      client.close();
    }
  }, 60_000);
});
