// Starts real hub and agent processes from the built CLI, on ephemeral loopback ports, and ends
// exactly the processes it started. Every wait polls a condition against a deadline.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { WaitAbandoned, waitFor } from "../../src/common/wait-for.js";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const CLI = join(ROOT, "dist/src/cli/main.js");

if (!existsSync(CLI)) {
  throw new Error(`${CLI} is missing: run 'npm run build' first (npm test does it for you)`);
}

const started = new Set<ChildProcess>();

export interface Proc {
  child: ChildProcess;
  /** Everything the process wrote so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (or 128 + signal number) once the process has ended. */
  exited: Promise<number>;
  kill(signal?: NodeJS.Signals): void;
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

export function spawnCli(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; stdin?: string } = {},
): Proc {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: opts.cwd ?? ROOT,
    env: { ...process.env, SWITCHBOARD_LOG_FORMAT: "json", ...opts.env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  started.add(child);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on("data", (b: Buffer) => out.push(b));
  child.stderr.on("data", (b: Buffer) => err.push(b));
  if (opts.stdin !== undefined) child.stdin.end(opts.stdin);
  else child.stdin.end();
  const exited = new Promise<number>((res) => {
    child.on("close", (code, signal) => {
      started.delete(child);
      res(code ?? 128 + (signal ? (SIGNALS[signal] ?? 0) : 0));
    });
  });
  return {
    child,
    stdout: () => Buffer.concat(out).toString("utf8"),
    stderr: () => Buffer.concat(err).toString("utf8"),
    exited,
    kill: (signal: NodeJS.Signals = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs one CLI command to completion (bounded by timeoutMs). */
export async function runCli(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; stdin?: string; timeoutMs?: number } = {},
): Promise<CliResult> {
  const p = spawnCli(args, opts);
  const timeoutMs = opts.timeoutMs ?? 30_000;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, rej) => {
    timer = setTimeout(() => {
      p.kill("SIGKILL");
      rej(new Error(`switchboard ${args.join(" ")} did not finish within ${timeoutMs} ms\n${p.stderr()}`));
    }, timeoutMs);
  });
  try {
    const code = await Promise.race([p.exited, timedOut]);
    return { code, stdout: p.stdout(), stderr: p.stderr() };
  } finally {
    clearTimeout(timer);
  }
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `sb-${prefix}-`));
}

export interface HubProc extends Proc {
  address: string;
  /** The agent HTTP long-poll API, "host:port". */
  httpAddress: string;
  dataDir: string;
  adminToken: string;
  /** CLI args that point at this hub with the admin token. */
  cli: string[];
}

export async function startHub(
  opts: {
    dataDir?: string;
    args?: string[];
    env?: NodeJS.ProcessEnv;
    /** A store another hub created first holds the admin token: this hub writes none (adminToken ""). */
    sharedStore?: boolean;
  } = {},
): Promise<HubProc> {
  const dataDir = opts.dataDir ?? tempDir("hub");
  const hubJson = join(dataDir, "hub.json");
  rmSync(hubJson, { force: true });
  const p = spawnCli(
    [
      "hub",
      "--listen",
      "127.0.0.1:0",
      "--http-listen",
      "127.0.0.1:0",
      "--data",
      dataDir,
      ...(opts.args ?? []),
    ],
    {
      env: opts.env,
    },
  );
  const info = await waitFor(
    () => {
      if (p.child.exitCode !== null)
        throw new WaitAbandoned(`hub exited with ${p.child.exitCode}: ${p.stderr()}`);
      if (!existsSync(hubJson)) return undefined;
      const parsed = JSON.parse(readFileSync(hubJson, "utf8")) as {
        address: string;
        httpAddress?: string;
        pid: number;
      };
      return parsed.pid === p.child.pid ? parsed : undefined;
    },
    { timeout: 20_000, message: "the hub to write hub.json" },
  );
  const tokenFile = join(dataDir, "admin.token");
  const adminToken = opts.sharedStore && !existsSync(tokenFile) ? "" : readFileSync(tokenFile, "utf8").trim();
  return {
    ...p,
    address: info.address,
    httpAddress: info.httpAddress ?? "",
    dataDir,
    adminToken,
    cli: ["--hub", info.address, "--token", adminToken],
  };
}

export interface AgentProc extends Proc {
  agentId: string;
}

/** Creates an agent token for the pool through the CLI, as an operator would. */
export async function agentToken(hub: HubProc, pool: string): Promise<string> {
  const r = await runCli([
    ...hub.cli,
    "token",
    "create",
    "--role",
    "agent",
    "--pool",
    pool,
    "--name",
    `agent-${pool}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
  ]);
  if (r.code !== 0) throw new Error(`token create failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim().split("\n").pop()!.trim();
}

const poolTokens = new Map<string, Promise<string>>();

/**
 * The agent token of a hub's pool, made once, as an operator deploys one token to a pool's agents:
 * an agent started again (a restart, a replacement) comes back with the token its id belongs to.
 */
function poolToken(hub: HubProc, pool: string): Promise<string> {
  const key = `${hub.dataDir}\0${pool}`;
  let token = poolTokens.get(key);
  if (!token) {
    token = agentToken(hub, pool);
    token.catch(() => poolTokens.delete(key));
    poolTokens.set(key, token);
  }
  return token;
}

export async function startAgent(
  hub: HubProc,
  opts: {
    agentId: string;
    pool?: string;
    token?: string;
    shell?: boolean;
    args?: string[];
    env?: NodeJS.ProcessEnv;
    waitConnected?: boolean;
  },
): Promise<AgentProc> {
  const pool = opts.pool ?? "default";
  const token = opts.token ?? (await poolToken(hub, pool));
  const dataDir = tempDir(`agent-${opts.agentId}`);
  // SWITCHBOARD_TEST_TRANSPORT=http runs a suite's agents on the HTTP long-poll transport.
  // An agent given --transport http in args dials the hub's HTTP port too.
  const asked = opts.args?.includes("--transport")
    ? opts.args[opts.args.indexOf("--transport") + 1]
    : undefined;
  const http = (asked ?? process.env.SWITCHBOARD_TEST_TRANSPORT) === "http";
  // --hub in args (a proxy, say) replaces the hub's own address: --hub repeats to list several hubs.
  const ownHub = opts.args?.includes("--hub") ? [] : ["--hub", http ? hub.httpAddress : hub.address];
  const args = [
    "agent",
    ...(http && asked === undefined ? ["--transport", "http"] : []),
    ...ownHub,
    "--token",
    token,
    "--agent-id",
    opts.agentId,
    "--pool",
    pool,
    "--data",
    dataDir,
  ];
  if (opts.shell ?? true) args.push("--shell");
  // The local API on a free port: agents of parallel tests must not compete for 8001.
  if (!(opts.args ?? []).includes("--agent-port")) args.push("--agent-port", "0");
  const p = spawnCli([...args, ...(opts.args ?? [])], { env: opts.env });
  if (opts.waitConnected ?? true) {
    await waitFor(
      async () => {
        if (p.child.exitCode !== null)
          throw new WaitAbandoned(`agent exited with ${p.child.exitCode}: ${p.stderr()}`);
        const agents = await listAgents(hub);
        return agents.some((a) => a.agentId === opts.agentId && a.connected && a.health === "healthy");
      },
      { timeout: 20_000, interval: 100, message: `agent ${opts.agentId} to connect` },
    );
  }
  return { ...p, agentId: opts.agentId };
}

export interface AgentRow {
  agentId: string;
  pool: string;
  health: string;
  connected: boolean;
  running: number;
}

export async function listAgents(hub: HubProc): Promise<AgentRow[]> {
  const r = await runCli([...hub.cli, "agents", "--all", "--output", "json"]);
  if (r.code !== 0) throw new Error(`agents failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as AgentRow[];
}

/** Whether GET http://127.0.0.1:PORT/healthz answers 2xx (a storage node that serves). */
export async function healthz(port: number): Promise<boolean> {
  try {
    return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
  } catch {
    return false;
  }
}

/** True while a process with this pid exists (zombies count as gone). */
export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Ends every process this test file started that is still running. */
export async function stopAll(): Promise<void> {
  const waits: Promise<unknown>[] = [];
  for (const child of started) {
    if (child.exitCode === null && child.signalCode === null) {
      waits.push(new Promise((r) => child.once("close", r)));
      child.kill("SIGKILL");
    }
  }
  await Promise.all(waits);
}

/** A loopback port free at the moment of asking, for a process that must come back on the same one. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Waits until `switchboard task ID` shows the task in `state` (its JSON), through the hub's CLI. */
export async function waitForTaskState(hub: HubProc, id: string, state: string): Promise<void> {
  await waitFor(
    async () => {
      const t = await runCli([...hub.cli, "task", id, "--output", "json"]);
      return t.code === 0 && (JSON.parse(t.stdout) as { state: string }).state === state;
    },
    { message: `task ${id} to be ${state}` },
  );
}
