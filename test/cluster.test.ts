// Hubs of a cluster (`--store postgres://… --nats nats://…`), as real processes on one PostgreSQL
// database and the machine's NATS: each lists all of them (`switchboard hubs`, `status`); a token
// made through one hub works on another; a token revoked on one hub ends its sessions on the others
// through NATS at once, and through the store when the NATS message is lost (a hub whose NATS link
// is down); a second hub with a live hub's id is refused; a hub killed with -9 shows gone when its
// lease lapses, one stopped cleanly at once; and the settings that cannot make a cluster say why.
import { createHash, createHmac, randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect, headers as natsHeaders } from "@nats-io/transport-node";
import { SubmitRequest } from "../src/gen/switchboard/v1/client.js";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../src/common/wait-for.js";
import { generateSeedStubs, seedClientCall } from "./support/seed000.js";
import { TcpProxy } from "./support/tcp-proxy.js";
import {
  agentToken,
  freePort,
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

const SERVER = "postgres://postgres@127.0.0.1:5432";
const NATS = "127.0.0.1:4222";
const DB = `sb_cluster_${randomBytes(4).toString("hex")}`;
const STORE = `${SERVER}/${DB}`;

async function onServer(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: `${SERVER}/postgres`, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** A config file setting the hub's lease (no flag: an operator rarely changes it). */
function leaseConfig(secs: number): string {
  const file = join(tempDir("cluster-cfg"), "hub.toml");
  writeFileSync(file, `[cluster]\nlease_secs = ${secs}\n`);
  return file;
}

interface HubRow {
  id: string;
  address: string;
  live: boolean;
  answering: boolean;
  agents: number;
  draining: boolean;
}

async function hubsSeenBy(hub: HubProc, all = false): Promise<HubRow[]> {
  const r = await runCli([...hub.cli, "hubs", "--output", "json", ...(all ? ["--all"] : [])]);
  if (r.code !== 0) throw new Error(`hubs failed (${r.code}): ${r.stderr}`);
  return (JSON.parse(r.stdout) as { hubs: HubRow[] }).hubs;
}

let a: HubProc;
let b: HubProc;
/** The subject hub A published a revocation on (learnt by listening). */
let revocationSubject = "";

/** Listens for the hubs' revocations; `next` is the first one heard. */
async function natsListener(): Promise<{ next: Promise<{ subject: string }> }> {
  const nc = await connect({ servers: NATS });
  // Revocations only: hubs of other clusters on this NATS (another test's) publish too.
  const sub = nc.subscribe("switchboard.*.tokens.revoked", { max: 1 });
  await nc.flush();
  const next = (async () => {
    for await (const m of sub) {
      await nc.close();
      return { subject: m.subject };
    }
    throw new Error("no revocation heard on NATS");
  })();
  return { next };
}

/** A hub of the cluster; the CLI args use hub A's admin token (the shared store made it). */
async function clusterHub(
  id: string,
  extra: string[] = [],
  nats = `nats://${NATS}`,
  dataDir?: string,
): Promise<HubProc> {
  const h = await startHub({
    args: ["--store", STORE, "--nats", nats, "--hub-id", id, ...extra],
    sharedStore: a !== undefined,
    ...(dataDir !== undefined ? { dataDir } : {}),
  });
  const token = a?.adminToken ?? h.adminToken;
  return { ...h, adminToken: token, cli: ["--hub", h.address, "--token", token] };
}

beforeAll(async () => {
  // NATS runs on this machine as PostgreSQL does (scripts/setup.sh starts it): without it, fail.
  const probe = await TcpProxy.start(NATS);
  await probe.close();
  await onServer(`CREATE DATABASE ${DB}`);
  a = await clusterHub("hub-a");
  b = await clusterHub("hub-b", ["--config", leaseConfig(30)]);
}, 60_000);

afterAll(async () => {
  await stopAll();
  await onServer(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
});

describe("a cluster of hubs", () => {
  it("lists every live hub on each of them, and in status", async () => {
    for (const [hub, me] of [
      [a, "hub-a"],
      [b, "hub-b"],
    ] as const) {
      const hubs = await hubsSeenBy(hub);
      expect(hubs.map((h) => h.id)).toEqual(["hub-a", "hub-b"]);
      expect(hubs.every((h) => h.live)).toBe(true);
      expect(hubs.find((h) => h.answering)?.id).toBe(me);
    }
    const table = await runCli([...a.cli, "hubs"]);
    expect(table.stdout).toMatch(/^HUB\s+ADDRESS\s+STATE/m);
    expect(table.stdout).toMatch(/^hub-a \*\s+\S+\s+live/m);
    const status = await runCli([...b.cli, "status"]);
    expect(status.stdout).toMatch(/cluster\s+2 live hubs \(hub-a, hub-b\); this is hub-b/);
  });

  it("admits on one hub a token made through another, and counts its agent there", async () => {
    const token = await agentToken(a, "shared");
    const agent = await startAgent(b, { agentId: "shared-1", pool: "shared", token });
    const r = await runCli([...b.cli, "exec", "--agent", "shared-1", "--", "echo", "on b"]);
    expect(r.stdout).toBe("on b\n");
    // Its lease row carries its agents: hub A sees hub B's at B's next renewal (forced by a drain
    // or the timer), and B's own answer counts it at once.
    expect((await hubsSeenBy(b)).find((h) => h.id === "hub-b")?.agents).toBe(1);
    agent.kill("SIGTERM");
    await agent.exited;
  });

  it("ends on every hub, at once, the sessions of a token revoked on one", async () => {
    const token = await agentToken(a, "revoked-everywhere");
    const agent = await startAgent(b, { agentId: "rev-1", pool: "revoked-everywhere", token });
    const name = await tokenIdOf(a, "revoked-everywhere");
    const heard = await natsListener();
    const revoked = await runCli([...a.cli, "token", "revoke", name]);
    expect(revoked.code).toBe(0);
    const t0 = Date.now();
    // Hub B renews (and reads revocations from the store) every 10 s: ending within 3 s is NATS's doing.
    await waitFor(() => /revoked/i.test(agent.stderr()), {
      timeout: 3_000,
      message: "the agent on hub B to hear its token was revoked on hub A",
    });
    expect(Date.now() - t0).toBeLessThan(3_000);
    expect(b.stderr()).toMatch(/"by":"hub-a","msg":"token revoked by another hub"/);
    revocationSubject = (await heard.next).subject;
    expect((await listAgents(b)).some((x) => x.agentId === "rev-1" && x.connected)).toBe(false);
    // And B admits it no more.
    const again = await runCli([
      "exec",
      "--hub",
      b.address,
      "--token",
      token,
      "--agent",
      "rev-1",
      "--",
      "true",
    ]);
    expect(again.code).not.toBe(0);
    agent.kill("SIGTERM");
    await agent.exited;
  });

  it("ignores a revocation forged on NATS: the store does not hold it", async () => {
    expect(revocationSubject).toMatch(/^switchboard\.\w+\.tokens\.revoked$/);
    const token = await agentToken(a, "forged");
    const agent = await startAgent(b, { agentId: "forged-1", pool: "forged", token });
    const id = await tokenIdOf(a, "forged");
    const nc = await connect({ servers: NATS });
    nc.publish(revocationSubject, JSON.stringify({ tokenId: id, hub: "hub-a" }));
    await nc.flush();
    await nc.close();
    await waitFor(() => /a revocation the store does not hold was ignored/.test(b.stderr()), {
      timeout: 5_000,
      message: "hub B to check the forged revocation against the store",
    });
    expect(agent.stderr()).not.toMatch(/revoked/i);
    expect((await listAgents(b)).some((x) => x.agentId === "forged-1" && x.connected)).toBe(true);
    const r = await runCli([
      "exec",
      "--hub",
      b.address,
      "--token",
      a.adminToken,
      "--agent",
      "forged-1",
      "--",
      "echo",
      "still",
    ]);
    expect(r.stdout).toBe("still\n");
    agent.kill("SIGTERM");
    await agent.exited;
  });

  it("ends them through the store when the NATS message is lost: a hub whose NATS link is down", async () => {
    const link = await TcpProxy.start(NATS);
    // Lease 3 s: it renews, and reads revocations from the store, every second.
    const c = await clusterHub("hub-c", ["--config", leaseConfig(3)], `nats://${link.address}`);
    const token = await agentToken(a, "lost-message");
    const agent = await startAgent(c, { agentId: "lost-1", pool: "lost-message", token });
    link.down();
    const revoked = await runCli([...a.cli, "token", "revoke", await tokenIdOf(a, "lost-message")]);
    expect(revoked.code).toBe(0);
    await waitFor(() => /revoked/i.test(agent.stderr()), {
      timeout: 5_000,
      message: "hub C to find the revocation in the store",
    });
    expect(c.stderr()).toMatch(/token revoked by another hub \(seen in the store\)/);
    link.up();
    agent.kill("SIGTERM");
    await agent.exited;
    c.kill("SIGTERM");
    await c.exited;
    await link.close();
  });

  it("refuses a second hub with a live hub's id, naming the holder", async () => {
    const p = spawnCli([
      "hub",
      "--listen",
      "127.0.0.1:0",
      "--http-listen",
      "off",
      "--data",
      tempDir("clash"),
      "--store",
      STORE,
      "--nats",
      `nats://${NATS}`,
      "--hub-id",
      "hub-a",
    ]);
    expect(await p.exited).not.toBe(0);
    expect(p.stderr()).toMatch(/hub id hub-a is held by a live hub at \S+ .*--hub-id/);
    expect((await hubsSeenBy(a)).filter((h) => h.id === "hub-a")).toHaveLength(1);
  });

  it("shows a hub killed with -9 gone once its lease lapses, and one stopped cleanly gone at once", async () => {
    const d = await clusterHub("hub-d", ["--config", leaseConfig(2)]);
    const e = await clusterHub("hub-e");
    expect((await hubsSeenBy(a)).map((h) => h.id)).toEqual(expect.arrayContaining(["hub-d", "hub-e"]));
    d.kill("SIGKILL");
    await d.exited;
    // Within its 2 s lease it still counts; after, it is gone (and listed with --all).
    await waitFor(async () => !(await hubsSeenBy(a)).some((h) => h.id === "hub-d"), {
      timeout: 6_000,
      message: "hub D's lease to lapse",
    });
    expect((await hubsSeenBy(a, true)).find((h) => h.id === "hub-d")?.live).toBe(false);
    e.kill("SIGTERM");
    expect(await e.exited).toBe(0);
    expect((await hubsSeenBy(a, true)).some((h) => h.id === "hub-e")).toBe(false);
    // The id is free again: a new hub-d starts.
    const d2 = await clusterHub("hub-d");
    expect((await hubsSeenBy(d2)).find((h) => h.id === "hub-d")?.answering).toBe(true);
    d2.kill("SIGTERM");
    await d2.exited;
  });
});

describe("tasks across hubs: the client on hub A, the agent on hub B", () => {
  let agent: AgentProc;
  beforeAll(async () => {
    agent = await startAgent(b, { agentId: "x-1", pool: "across", token: await agentToken(a, "across") });
  }, 30_000);
  afterAll(async () => {
    agent.kill("SIGTERM");
    await agent.exited;
  });

  it("runs it there: exact output on both streams and the exit code", async () => {
    const r = await runCli([
      ...a.cli,
      "exec",
      "--agent",
      "x-1",
      "--shell",
      "printf 'out\\n'; printf 'err\\n' >&2; exit 3",
    ]);
    expect(r).toMatchObject({ code: 3, stdout: "out\n", stderr: "err\n" });
    // The record is hub B's, in the store both read: hub A lists it as B's agent ran it.
    const tasks = await runCli([...a.cli, "tasks", "--agent", "x-1", "--output", "json"]);
    expect(JSON.parse(tasks.stdout)).toContainEqual(
      expect.objectContaining({ agentId: "x-1", state: "failed" }),
    );
  });

  it("streams 100 MB through both hubs byte-exact (numbered lines: no gap, no duplicate)", async () => {
    const lines = 12_000_000;
    const p = spawnCli([...a.cli, "exec", "--agent", "x-1", "--", "seq", "1", String(lines)]);
    const hash = createHash("sha256");
    let bytes = 0;
    p.child.stdout!.on("data", (d: Buffer) => {
      hash.update(d);
      bytes += d.length;
    });
    expect(await p.exited).toBe(0);
    const want = createHash("sha256");
    let wantBytes = 0;
    for (let i = 1; i <= lines; i += 100_000) {
      let chunk = "";
      for (let j = i; j < i + 100_000 && j <= lines; j++) chunk += `${j}\n`;
      want.update(chunk);
      wantBytes += chunk.length;
    }
    expect(bytes).toBe(wantBytes);
    expect(hash.digest("hex")).toBe(want.digest("hex"));
  }, 120_000);

  it("holds back the agent on hub B while the client on hub A does not read: no hub buffers it", async () => {
    const rss = (pid: number): number =>
      Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) * 1024;
    const before = { a: rss(a.child.pid!), b: rss(b.child.pid!) };
    const p = spawnCli([...a.cli, "exec", "--agent", "x-1", "--", "head", "-c", "2000000000", "/dev/zero"]);
    p.child.stdout!.pause(); // a client that reads nothing
    const produced = async (): Promise<number> => {
      const r = await runCli([...b.cli, "tasks", "--agent", "x-1", "--state", "running", "--output", "json"]);
      const running = JSON.parse(r.stdout) as { stdoutBytes?: number | string }[];
      return Number(running[0]?.stdoutBytes ?? 0);
    };
    await waitFor(async () => (await produced()) > 0, { timeout: 10_000, message: "the task to run" });
    await new Promise((r) => setTimeout(r, 2_000));
    const first = await produced();
    await new Promise((r) => setTimeout(r, 2_000));
    const second = await produced();
    // Stalled: the agent sends only what the windows of both hubs and the pipes hold.
    expect(second).toBe(first);
    expect(second).toBeLessThan(64 * 1024 * 1024);
    expect(rss(a.child.pid!) - before.a).toBeLessThan(64 * 1024 * 1024);
    expect(rss(b.child.pid!) - before.b).toBeLessThan(64 * 1024 * 1024);
    p.kill("SIGKILL");
    await p.exited;
    const running = await runCli([
      ...b.cli,
      "tasks",
      "--agent",
      "x-1",
      "--state",
      "running",
      "--output",
      "json",
    ]);
    for (const t of JSON.parse(running.stdout) as { taskId: string }[])
      expect((await runCli([...a.cli, "cancel", t.taskId])).code).toBe(0);
  }, 60_000);

  it("cancels it from hub A: the process on hub B's agent is gone", async () => {
    const marker = join(tempDir("cancel-across"), "alive");
    const d = await runCli([
      ...a.cli,
      "exec",
      "--detach",
      "--agent",
      "x-1",
      "--shell",
      `while true; do date +%s%N > ${marker}; sleep 0.1; done`,
    ]);
    expect(d.code).toBe(0);
    const id = d.stdout.trim();
    await waitFor(() => existsSync(marker), { timeout: 10_000, message: "the task to start" });
    const c = await runCli([...a.cli, "cancel", id]);
    expect(c.code).toBe(0);
    await waitFor(
      async () => {
        const t = await runCli([...a.cli, "task", id, "--output", "json"]);
        return (JSON.parse(t.stdout) as { state: string }).state === "cancelled";
      },
      { timeout: 15_000, message: "the task to end cancelled" },
    );
    const last = readFileSync(marker, "utf8");
    await new Promise((r) => setTimeout(r, 500));
    expect(readFileSync(marker, "utf8")).toBe(last); // nothing writes it any more
  });

  it("follows from hub A, live and exact, a task submitted on hub B (logs --follow)", async () => {
    const d = await runCli([
      ...b.cli,
      "exec",
      "--detach",
      "--agent",
      "x-1",
      "--shell",
      "for i in $(seq 1 40); do echo line-$i; sleep 0.05; done; echo err-line >&2",
    ]);
    expect(d.code).toBe(0);
    const id = d.stdout.trim();
    const f = await runCli([...a.cli, "logs", "--follow", id]);
    expect(f.code).toBe(0);
    expect(f.stdout).toBe(Array.from({ length: 40 }, (_, i) => `line-${i + 1}\n`).join(""));
    expect(f.stderr).toContain("err-line\n");
    // Every relayed message verified and came in order.
    expect(a.stderr()).not.toMatch(/a cluster message was refused/);
  });

  it("passes on hub B's refusal as B gave it: a token scoped to another pool", async () => {
    const scoped = await runCli([
      ...a.cli,
      "token",
      "create",
      "--role",
      "operator",
      "--pool",
      "elsewhere",
      "--name",
      "scoped-op",
    ]);
    const token = scoped.stdout.trim().split("\n").pop()!.trim();
    const r = await runCli(["exec", "--hub", a.address, "--token", token, "--agent", "x-1", "--", "true"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/may not reach agent x-1 in pool across/);
  });

  it("acts on no submission forged on NATS: unsigned, or signed with another key", async () => {
    const marker = join(tempDir("forged-submit"), "ran");
    const req = SubmitRequest.encode(
      SubmitRequest.fromPartial({
        target: { agentId: "x-1" },
        spec: { kind: { $case: "shell", value: { argv: ["touch", marker] } } },
      }),
    ).finish();
    const subject = agentSubjectOf("x-1");
    const nc = await connect({ servers: NATS });
    const body = JSON.stringify({
      tokenId: "tok_x",
      relay: "x",
      hub: "hub-a",
      window: 0,
      request: Buffer.from(req).toString("base64"),
    });
    const h = natsHeaders();
    h.set("Sb-Kind", "submit");
    h.set("Sb-Sig", createHmac("sha256", "not the key").update(body).digest("hex"));
    await nc.request(subject, body, { timeout: 1_000, headers: h }).catch(() => undefined);
    await nc.request(subject, body, { timeout: 1_000 }).catch(() => undefined);
    await nc.close();
    await waitFor(() => (b.stderr().match(/its signature does not hold/g) ?? []).length >= 2, {
      timeout: 5_000,
      message: "hub B to refuse both",
    });
    expect(existsSync(marker)).toBe(false);
  });
});

describe("each hub recovers its own tasks", () => {
  it("leaves another hub's running task alone when a hub starts, and after its kill -9 and restart", async () => {
    const agent = await startAgent(b, { agentId: "own-1", pool: "own", token: await agentToken(a, "own") });
    const d = await runCli([...b.cli, "exec", "--detach", "--agent", "own-1", "--", "sleep", "25"]);
    const id = d.stdout.trim();
    const state = async (): Promise<string> =>
      (JSON.parse((await runCli([...a.cli, "task", id, "--output", "json"])).stdout) as { state: string })
        .state;
    await waitFor(async () => (await state()) === "running", { timeout: 10_000, message: "the task to run" });
    // Hub R starts (its recovery runs), is killed, and starts again on the same id once its lease lapses.
    const dataDir = tempDir("hub-r");
    const args = ["--config", leaseConfig(2), "--resume-grace", "1s"];
    const hubs: HubProc[] = [];
    try {
      hubs.push(await clusterHub("hub-r", args, `nats://${NATS}`, dataDir));
      hubs[0]!.kill("SIGKILL");
      await hubs[0]!.exited;
      hubs.push(await clusterHub("hub-r", args, `nats://${NATS}`, dataDir));
      await new Promise((res) => setTimeout(res, 1_500)); // past hub R's resume grace
      expect(await state()).toBe("running");
      expect((await listAgents(b)).find((x) => x.agentId === "own-1")?.connected).toBe(true);
      await waitFor(async () => (await state()) === "succeeded", {
        timeout: 40_000,
        message: "the task to end",
      });
    } finally {
      // A hub R left running would take the next test's gone hub's work.
      for (const h of hubs) h.kill("SIGTERM");
      agent.kill("SIGTERM");
      await Promise.all([...hubs.map((h) => h.exited), agent.exited]);
    }
  }, 90_000);
});

describe("the work of a hub that is gone", () => {
  it("is taken by one other hub once its lease lapses: its running task ends lost, its queued task runs", async () => {
    const g = await clusterHub("hub-g", ["--config", leaseConfig(2)]);
    const token = await agentToken(a, "orphans");
    // One slot, and only hub G to dial: the first task holds it, the second waits in G's queue.
    const g1 = await startAgent(g, { agentId: "g-1", pool: "orphans", token, args: ["--pool-size", "1"] });
    const first = await runCli([...g.cli, "exec", "--detach", "--pool", "orphans", "--", "sleep", "60"]);
    const second = await runCli([...g.cli, "exec", "--detach", "--pool", "orphans", "--", "echo", "after"]);
    const [running, queued] = [first.stdout.trim(), second.stdout.trim()];
    const task = async (id: string): Promise<{ state: string; reason?: string; agentId?: string }> =>
      JSON.parse((await runCli([...a.cli, "task", id, "--output", "json"])).stdout) as {
        state: string;
        reason?: string;
        agentId?: string;
      };
    await waitFor(async () => (await task(running)).state === "running", {
      timeout: 10_000,
      message: "the first task to run",
    });
    expect((await task(queued)).state).toBe("queued");
    g.kill("SIGKILL");
    await g.exited;
    // Queued work waits on the hub that took it (it does not move between hubs yet): both have an agent.
    const g2 = await startAgent(a, { agentId: "g-2", pool: "orphans", token });
    const g3 = await startAgent(b, { agentId: "g-3", pool: "orphans", token });
    await waitFor(async () => (await task(running)).state === "lost", {
      timeout: 20_000,
      message: "the running task of the gone hub to end lost",
    });
    expect((await task(running)).reason).toMatch(/hub hub-g that held the task is gone/);
    await waitFor(async () => (await task(queued)).state === "succeeded", {
      timeout: 20_000,
      message: "the queued task of the gone hub to run on another hub's agent",
    });
    expect(["g-2", "g-3"]).toContain((await task(queued)).agentId);
    // Exactly one hub took it (hub B and hub A both saw it gone).
    const takers = [a, b].filter(
      (h) =>
        /took on the unfinished tasks of a hub that is gone/.test(h.stderr()) &&
        /"hub_id":"hub-g"/.test(h.stderr()),
    );
    expect(takers).toHaveLength(1);
    expect((await hubsSeenBy(a, true)).find((h) => h.id === "hub-g")?.live).toBe(false);
    g1.kill("SIGKILL");
    g2.kill("SIGTERM");
    g3.kill("SIGTERM");
    await Promise.all([g1.exited, g2.exited, g3.exited]);
  }, 90_000);
});

describe("pool tasks across hubs", () => {
  it("runs a pool's task on another hub when only that hub has an agent of the pool", async () => {
    const agent = await startAgent(b, {
      agentId: "only-b",
      pool: "only-b",
      token: await agentToken(a, "only-b"),
    });
    const r = await runCli([...a.cli, "exec", "--pool", "only-b", "--", "echo", "from the pool"]);
    expect(r).toMatchObject({ code: 0, stdout: "from the pool\n" });
    agent.kill("SIGTERM");
    await agent.exited;
    // No agent of the pool anywhere: the refusal is the one a hub alone gives.
    const none = await runCli([...a.cli, "exec", "--pool", "only-b", "--", "true"]);
    expect(none.code).not.toBe(0);
    expect(none.stderr).toMatch(/no agent of pool only-b is connected/);
  });

  it("sends it where the agents have room: here while this hub has, else to the hub with most", async () => {
    // s-a runs one task at a time.
    const sa = await startAgent(a, {
      agentId: "s-a",
      pool: "spread",
      token: await agentToken(a, "spread"),
      args: ["--pool-size", "1"],
    });
    const sb = await startAgent(b, { agentId: "s-b", pool: "spread", token: await agentToken(a, "spread") });
    const agentOf = async (id: string): Promise<string> => {
      const t = await runCli([...a.cli, "task", id, "--output", "json"]);
      return (JSON.parse(t.stdout) as { agentId: string }).agentId;
    };
    const long = await runCli([...a.cli, "exec", "--detach", "--pool", "spread", "--", "sleep", "30"]);
    const longId = long.stdout.trim();
    expect(await agentOf(longId)).toBe("s-a"); // hub A had room
    const next = await runCli([...a.cli, "exec", "--detach", "--pool", "spread", "--", "true"]);
    expect(await agentOf(next.stdout.trim())).toBe("s-b"); // hub A full: hub B's agent had room
    expect((await runCli([...a.cli, "cancel", longId])).code).toBe(0);
    sa.kill("SIGTERM");
    sb.kill("SIGTERM");
    await Promise.all([sa.exited, sb.exited]);
  });

  it("answers a seed-000 SendCommand on hub A from an agent on hub B", async () => {
    const lite = join(tempDir("cluster-seed"), "shop.db");
    const db = new Database(lite);
    db.exec("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO items VALUES (1, 'tea');");
    db.close();
    const config = join(tempDir("cluster-seed-agent"), "agent.toml");
    writeFileSync(config, `[datasources.shop]\ndriver = "sqlite"\npath = ${JSON.stringify(lite)}\n`);
    const agent = await startAgent(b, {
      agentId: "seed-b",
      pool: "seedpool",
      token: await agentToken(a, "seedpool"),
      args: ["--config", config],
    });
    const r = seedClientCall(
      generateSeedStubs(),
      [
        "--agent-id",
        "seedpool",
        "--database",
        "shop",
        "--query",
        "SELECT id, name FROM items",
        "--tbl-name",
        "items",
      ],
      a.adminToken,
      a.address,
    );
    expect(r.ok, r.details).toBe(true);
    expect(JSON.parse(r.json!)).toEqual([{ id: 1, name: "tea" }]);
    agent.kill("SIGTERM");
    await agent.exited;
  }, 60_000);
});

describe("settings that cannot make a cluster", () => {
  it("asks for a PostgreSQL store", async () => {
    const r = await runCli([
      "hub",
      "--listen",
      "127.0.0.1:0",
      "--data",
      tempDir("no-pg"),
      "--nats",
      `nats://${NATS}`,
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(
      /cluster\.nats: the hubs of a cluster share their state in PostgreSQL: set store\.url/,
    );
  });

  it("names an unreachable NATS", async () => {
    const port = await freePort();
    const r = await runCli([
      "hub",
      "--listen",
      "127.0.0.1:0",
      "--http-listen",
      "off",
      "--data",
      tempDir("no-nats"),
      "--store",
      STORE,
      "--nats",
      `nats://127.0.0.1:${port}`,
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(new RegExp(`cannot reach NATS at nats://127\\.0\\.0\\.1:${port}`));
  });

  it("refuses cluster settings without cluster.nats", async () => {
    const r = await runCli(["hub", "--listen", "127.0.0.1:0", "--data", tempDir("no-nats"), "--hub-id", "x"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/cluster\.hub_id is for a cluster of hubs: set cluster\.nats too/);
  });
});

/** The subject hub B listens on for agent X's submissions: learnt from its NATS subscriptions. */
function agentSubjectOf(agentId: string): string {
  const token = Buffer.from(agentId, "utf8").toString("base64url");
  return revocationSubject.replace(/\.tokens\.revoked$/, `.agent.${token}.submit`);
}

async function tokenIdOf(hub: HubProc, pool: string): Promise<string> {
  const list = await runCli([...hub.cli, "token", "list", "--output", "json"]);
  const tokens = JSON.parse(list.stdout) as { id: string; role: string; pools: string[] }[];
  const mine = tokens.filter((t) => t.role === "agent" && t.pools.includes(pool));
  if (mine.length !== 1) throw new Error(`expected one agent token of pool ${pool}, got ${mine.length}`);
  return mine[0]!.id;
}
