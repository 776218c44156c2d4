// `switchboard demo --cluster`: three hubs on one PostgreSQL database (created if missing) and the
// local NATS, each its own process so that one can be killed, and two shell agents in this process,
// each on its own hub with the others as fallbacks; then the commands to try. Ctrl-C stops it all.
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import type { Agent } from "../../agent/index.js";
import { SwitchboardClient } from "../../client/index.js";
import { createLogger } from "../../common/logger.js";
import { usageError } from "../cli-error.js";
import { stopOnSignals } from "../signals.js";

const HUBS = ["demo-hub-1", "demo-hub-2", "demo-hub-3"];
/** Each agent dials its own hub first, then the others. */
const AGENTS = [
  { id: "demo-1", hub: 1 },
  { id: "demo-2", hub: 2 },
];

export interface ClusterDemoFlags {
  data: string;
  store: string;
  nats: string;
}

interface HubChild {
  id: string;
  proc: ChildProcess;
  address: string;
  dataDir: string;
}

export async function runClusterDemo(f: ClusterDemoFlags): Promise<void> {
  const { loadAgentConfig, startAgent } = await import("../../agent/index.js");
  await ensureDatabase(f.store);
  const cli = fileURLToPath(new URL("../main.js", import.meta.url));
  const logger = createLogger("demo", { level: process.env.SWITCHBOARD_LOG_LEVEL ? undefined : "warn" });
  const hubs: HubChild[] = [];
  const agents: Agent[] = [];
  const stop = async (o: { graceMs?: number }): Promise<void> => {
    await Promise.all(agents.map((a) => a.shutdown(o)));
    await Promise.all(hubs.map((h) => stopChild(h.proc)));
  };
  try {
    for (const id of HUBS) hubs.push(await startHubChild(cli, id, join(f.data, id), f.store, f.nats));
    const adminToken = readFileSync(join(hubs[0]!.dataDir, "admin.token"), "utf8").trim();
    const admin = new SwitchboardClient({ hub: hubs[0]!.address, token: adminToken });
    let token: string;
    try {
      for (const t of await admin.admin.listTokens())
        if (t.role === "agent" && t.name.startsWith("demo-agents-")) await admin.admin.revokeToken(t.id);
      token = (
        await admin.admin.createToken({ name: `demo-agents-${Date.now()}`, role: "agent", pools: ["demo"] })
      ).token;
    } finally {
      admin.close();
    }
    for (const a of AGENTS) {
      const order = [hubs[a.hub]!, ...hubs.filter((_, i) => i !== a.hub)].map((h) => h.address);
      const cfg = loadAgentConfig({
        env: {},
        flags: {
          hub: order,
          token,
          agentId: a.id,
          pool: "demo",
          shell: true,
          poolSize: "4",
          data: join(f.data, "agents", a.id),
          agentPort: "0",
        },
      });
      agents.push(await startAgent(cfg, logger.child({ part: "agent", agentId: a.id })));
    }
    await Promise.all(agents.map((a) => a.whenConnected(15_000)));
  } catch (e) {
    await stop({ graceMs: 0 });
    throw e;
  }
  process.stdout.write(tryNext(cli, f, hubs));
  await stopOnSignals(logger, stop);
  process.stdout.write("demo stopped\n");
}

/** The demo's database on the server the URL names, created if missing; a clear error if unreachable. */
async function ensureDatabase(url: string): Promise<void> {
  let db: string;
  let server: URL;
  try {
    server = new URL(url);
    db = decodeURIComponent(server.pathname.slice(1));
  } catch {
    throw usageError(`--store ${url} is not a PostgreSQL URL (postgres://user@host:5432/database)`);
  }
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(db))
    throw usageError(`--store names database "${db}": use a plain lower-case name for the demo's database`);
  server.pathname = "/postgres";
  const c = new pg.Client({ connectionString: server.toString(), connectionTimeoutMillis: 5_000 });
  try {
    await c.connect();
  } catch (e) {
    throw usageError(
      `PostgreSQL is not reachable at ${server.host}: ${(e as Error).message}. The cluster demo keeps its hubs' state there: start PostgreSQL, or give --store postgres://user@host:5432/database`,
    );
  }
  try {
    const found = await c.query("SELECT 1 FROM pg_database WHERE datname = $1", [db]);
    if (found.rowCount === 0) await c.query(`CREATE DATABASE ${db}`);
  } finally {
    await c.end();
  }
}

async function startHubChild(
  cli: string,
  id: string,
  dataDir: string,
  store: string,
  nats: string,
): Promise<HubChild> {
  mkdirSync(dataDir, { recursive: true });
  const hubJson = join(dataDir, "hub.json");
  rmSync(hubJson, { force: true });
  const log = createWriteStream(join(dataDir, "hub.log"), { flags: "a" });
  const proc = spawn(
    process.execPath,
    [
      cli,
      "hub",
      "--listen",
      "127.0.0.1:0",
      "--http-listen",
      "off",
      "--data",
      dataDir,
      "--store",
      store,
      "--nats",
      nats,
      "--hub-id",
      id,
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, SWITCHBOARD_LOG_FORMAT: "json" } },
  );
  let stderr = "";
  proc.stdout.pipe(log);
  proc.stderr.on("data", (d: Buffer) => {
    stderr = (stderr + d.toString("utf8")).slice(-4096);
    log.write(d);
  });
  for (let i = 0; i < 300; i++) {
    if (proc.exitCode !== null) {
      await new Promise((r) => (proc.stderr.readableEnded ? r(undefined) : proc.stderr.once("end", r)));
      throw usageError(
        `hub ${id} did not start: ${startupError(stderr)} (its log: ${join(dataDir, "hub.log")})`,
      );
    }
    if (existsSync(hubJson)) {
      const j = JSON.parse(readFileSync(hubJson, "utf8")) as { address: string; pid: number };
      if (j.pid === proc.pid) return { id, proc, address: j.address, dataDir };
    }
    await sleep(100);
  }
  proc.kill("SIGKILL");
  throw usageError(`hub ${id} did not start within 30 s (its log: ${join(dataDir, "hub.log")})`);
}

/** Why a hub that exited at once did not start: its error line, else its last error log entry. */
function startupError(stderr: string): string {
  const lines = stderr.split("\n").map((l) => l.trim());
  const plain = lines.find((l) => l.startsWith("error:"));
  if (plain) return plain.slice("error:".length).trim();
  const logged = lines.filter((l) => /"level":(50|60)/.test(l)).pop();
  return (logged && /"msg":"([^"]*)"/.exec(logged)?.[1]) ?? "it exited";
}

async function stopChild(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once("exit", r));
  proc.kill("SIGTERM");
  await Promise.race([exited, sleep(15_000).then(() => proc.kill("SIGKILL"))]);
}

function tryNext(cli: string, f: ClusterDemoFlags, hubs: HubChild[]): string {
  const [h1, h2, h3] = hubs as [HubChild, HubChild, HubChild];
  return `
Switchboard cluster demo is running
  store   ${f.store} (PostgreSQL), messages through ${f.nats} (NATS)
  hubs    ${hubs.map((h) => `${h.id} ${h.address} (pid ${h.proc.pid})`).join("\n          ")}
  agents  ${AGENTS.map((a) => `${a.id} on ${hubs[a.hub]!.id}`).join(", ")}, pool demo, shell enabled

Try, in another terminal:
  alias switchboard='${process.execPath} ${cli}'    # or: npm link
  export SWITCHBOARD_DATA=${h1.dataDir}    # the CLI talks to ${h1.id}, with its admin token

  switchboard hubs
  switchboard exec --agent demo-1 -- hostname        # submitted on ${h1.id}, run through ${h2.id}
  switchboard exec --pool demo --shell 'for i in 1 2 3; do echo tick $i; sleep 1; done'
  switchboard exec --pool demo --detach --shell 'for i in $(seq 1 30); do echo line $i; sleep 1; done'
  switchboard logs --hub ${h3.address} --follow <task id>      # watched from ${h3.id}
  switchboard cancel <task id>
  kill -9 ${h2.proc.pid}      # ${h2.id} dies: demo-1 moves to another hub (its running task ends lost)
  switchboard hubs            # ${h2.id} is gone once its lease lapses (10 s)
  switchboard agents

Hub logs: ${hubs.map((h) => join(h.dataDir, "hub.log")).join(", ")}
Ctrl-C stops the demo.
`;
}
