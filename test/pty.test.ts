// Interactive sessions end to end: a real hub and agents from the built CLI; a terminal on the agent
// driven through the SDK (keys in, screen out, resize, Ctrl-C, exit code), and the real
// `switchboard shell` driven through a pseudo-terminal of our own (raw mode passthrough, SIGWINCH).
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawn as spawnPty, type IPty } from "node-pty";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SwitchboardClient, shell, TaskState, type TaskInputWriter } from "../src/client/index.js";
import type { Finished } from "../src/gen/switchboard/v1/task.js";
import {
  CLI,
  pidAlive,
  runCli,
  startAgent,
  startHub,
  stopAll,
  tempDir,
  type HubProc,
} from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

let hub: HubProc;
let client: SwitchboardClient;
const ptys = new Set<IPty>();

/** A bash without start-up files and with a plain prompt, so the screen holds only what we expect. */
const BASH = ["bash", "--norc", "--noprofile"];
const PROMPT_ENV = { PS1: "$ ", HISTFILE: "/dev/null" };

beforeAll(async () => {
  hub = await startHub();
  const config = join(tempDir("pty-cfg"), "agent.toml");
  // Sessions may run as nobody: a terminal goes through the same user switch as any shell task.
  writeFileSync(config, '[shell]\nenabled = true\npty = true\nkill_grace_ms = 1000\nusers = ["nobody"]\n');
  await startAgent(hub, { agentId: "pty-1", pool: "pty", args: ["--config", config] });
  await startAgent(hub, { agentId: "nopty-1", pool: "nopty" });
  client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
}, 60_000);

afterAll(async () => {
  for (const p of ptys) {
    try {
      p.kill("SIGKILL");
    } catch {
      // gone already
    }
  }
  client?.close();
  await stopAll();
});

/** A terminal task on pty-1 driven through the SDK: what the screen showed, its input, its end. */
interface Session {
  taskId: string;
  pid(): number;
  screen(): string;
  input: TaskInputWriter;
  finished: Promise<Finished>;
  /** Waits until the screen (from `from` on) matches. */
  waitScreen(re: RegExp, from?: number): Promise<void>;
}

async function openSession(argv: string[], size = { cols: 80, rows: 24 }, user?: string): Promise<Session> {
  let out = "";
  let pid = 0;
  let taskId: string | undefined;
  const events = client.run({
    ...shell({ argv, env: PROMPT_ENV, tty: true, ...size, ...(user ? { user } : {}) }),
    target: { agentId: "pty-1" },
  });
  const finished = (async () => {
    for await (const ev of events) {
      taskId ??= ev.taskId;
      const e = ev.event;
      if (e?.$case === "started") pid = e.value.pid;
      if (e?.$case === "output") out += Buffer.from(e.value.data).toString("utf8");
      if (e?.$case === "finished") return e.value;
    }
    throw new Error("the task's stream ended without Finished");
  })();
  finished.catch(() => undefined);
  await waitFor(() => pid > 0 && taskId !== undefined, { message: "the session to start" });
  const s: Session = {
    taskId: taskId!,
    pid: () => pid,
    screen: () => out,
    input: client.openInput(taskId!),
    finished,
    waitScreen: (re, from = 0) => screenShows(() => out, re, from),
  };
  return s;
}

/** A whole line of output on a terminal's screen (bash may put escape codes before it, then a CR). */
function line(text: string): RegExp {
  // \r+: node's raw mode keeps ONLCR on the CLI's own terminal, so a remote CRLF arrives as CR CR LF.
  return new RegExp(`\\r${text.replace(/[$()*+.?[\\\]^{|}]/g, "\\$&")}\\r+\\n`);
}

/** Waits until the screen, from `from` on, matches; the error shows what it held then. */
async function screenShows(screen: () => string, re: RegExp, from: number): Promise<void> {
  try {
    await waitFor(() => re.test(screen().slice(from)), { message: `${String(re)} on the screen` });
  } catch (e) {
    throw new Error(`${(e as Error).message}; it shows ${JSON.stringify(screen().slice(from))}`);
  }
}

/** Pids in the session `sid` running `comm`. */
function inSession(sid: number, comm: string): number[] {
  const out: number[] = [];
  for (const name of readdirSafe("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const c = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (c === comm && Number(f[3]) === sid && f[0] !== "Z") out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}

/** Pids whose command line is exactly argv. */
function running(argv: string[]): number[] {
  const want = argv.join("\0") + "\0";
  const out: number[] = [];
  for (const name of readdirSafe("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, "utf8") === want && pidAlive(Number(name)))
        out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

describe("interactive sessions through the SDK", () => {
  it("echoes keys, resizes, passes Ctrl-C and returns the exit code", async () => {
    const s = await openSession(BASH);
    await s.waitScreen(/\$ $/);

    let mark = s.screen().length;
    await s.input.write(Buffer.from("echo $((6*7))\r"));
    await s.waitScreen(line("42"), mark);

    mark = s.screen().length;
    await s.input.write(Buffer.from("stty size\r"));
    await s.waitScreen(line("24 80"), mark);
    await s.input.resize(100, 40);
    mark = s.screen().length;
    await s.input.write(Buffer.from("stty size\r"));
    await s.waitScreen(line("40 100"), mark);

    // Ctrl-C reaches the foreground job through the terminal, as it would locally.
    await s.input.write(Buffer.from("sleep 100\r"));
    const [sleeper] = await waitFor(
      () => {
        const p = inSession(s.pid(), "sleep");
        return p.length > 0 ? p : undefined;
      },
      { message: "sleep to run in the session" },
    );
    mark = s.screen().length;
    await s.input.write(Buffer.from([0x03]));
    await waitFor(() => !pidAlive(sleeper!), { timeout: 5000, message: "sleep to be interrupted" });
    await s.input.write(Buffer.from("echo after-$((1+1))\r"));
    await s.waitScreen(line("after-2"), mark);

    await s.input.write(Buffer.from("exit 3\r"));
    const f = await s.finished;
    expect(f.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(f.exitCode).toBe(3);
    s.input.close();

    // The hub's audit log: who opened it, on which agent, for how long.
    const entry = await waitFor(
      async () => {
        const rows = await client.admin.listAudit({ action: "shell.session", subject: s.taskId });
        return rows[0];
      },
      { message: "the shell.session audit entry" },
    );
    expect(entry.actor).toBe((await client.getTask(s.taskId)).info?.requester);
    const detail = JSON.parse(entry.detailJson) as Record<string, unknown>;
    expect(detail).toMatchObject({ agent: "pty-1", tty: true, exitCode: 3 });
    expect(detail.durationMs).toBeGreaterThan(0);
  });

  it("hangs up at the end of input, and a cancel ends the whole session", async () => {
    const a = await openSession(BASH);
    await a.waitScreen(/\$ $/);
    await a.input.end();
    const fa = await a.finished;
    expect(fa.signal).toBe("SIGHUP");

    const b = await openSession(BASH);
    await b.waitScreen(/\$ $/);
    await b.input.write(Buffer.from("sleep 300 & sleep 200\r"));
    const sleepers = await waitFor(
      () => {
        const p = inSession(b.pid(), "sleep");
        return p.length === 2 ? p : undefined;
      },
      { message: "both sleeps to run" },
    );
    await client.cancel(b.taskId, "test");
    const fb = await b.finished;
    expect(fb.state).toBe(TaskState.TASK_STATE_CANCELLED);
    for (const pid of [b.pid(), ...sleepers])
      await waitFor(() => !pidAlive(pid), { message: `pid ${pid} to be gone` });
    b.input.close();
  });

  it("runs a session as another user of the agent's [shell] users", async () => {
    const s = await openSession(["sh", "-c", "id -un; tty"], undefined, "nobody");
    const f = await s.finished;
    s.input.close();
    expect(f.exitCode).toBe(0);
    expect(s.screen()).toMatch(/^nobody\r\n\/dev\/pts\/\d+\r\n/);
    const entry = await waitFor(
      async () => {
        const rows = await client.admin.listAudit({ action: "shell.session", subject: s.taskId });
        return rows[0];
      },
      { message: "the session's audit entry" },
    );
    expect(JSON.parse(entry.detailJson)).toMatchObject({ user: "nobody", tty: true });
  });

  it("refuses a terminal on an agent whose sessions are off, with the setting to change", async () => {
    const r = await client.execute({
      ...shell({ argv: ["bash"], tty: true }),
      target: { agentId: "nopty-1" },
    });
    expect(r.info?.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(r.info?.error?.message).toBe(
      "interactive sessions are off on agent nopty-1: set [shell] pty = true in its config",
    );
  });
});

/** The CLI in a pseudo-terminal of our own: a user at a terminal, typing. */
function cliInTerminal(args: string[], size = { cols: 90, rows: 30 }) {
  const term = spawnPty(process.execPath, [CLI, ...hub.cli, ...args], {
    name: "xterm-256color",
    ...size,
    cwd: process.cwd(),
    env: { ...process.env, ...PROMPT_ENV },
  });
  ptys.add(term);
  let out = "";
  term.onData((d) => (out += d));
  const exited = new Promise<number>((resolve) =>
    term.onExit(({ exitCode }) => {
      ptys.delete(term);
      resolve(exitCode);
    }),
  );
  return {
    term,
    exited,
    screen: () => out,
    waitScreen: (re: RegExp, from = 0) => screenShows(() => out, re, from),
  };
}

describe("switchboard shell and exec -it", () => {
  it("passes the terminal through in raw mode: keys, Ctrl-C, window size, exit code", async () => {
    const cli = cliInTerminal(["shell", "--agent", "pty-1", "-e", "PS1=$ ", "--", ...BASH]);
    await cli.waitScreen(/\$ $/);

    let mark = cli.screen().length;
    cli.term.write("stty size\r");
    await cli.waitScreen(line("30 90"), mark);

    // Ctrl-C is a byte for the remote terminal: it interrupts the remote sleep, not this CLI.
    mark = cli.screen().length;
    cli.term.write("sleep 101\r");
    const [sleeper] = await waitFor(
      () => {
        const p = running(["sleep", "101"]);
        return p.length > 0 ? p : undefined;
      },
      { message: "the remote sleep" },
    );
    cli.term.write("\x03");
    await waitFor(() => !pidAlive(sleeper!), {
      timeout: 5000,
      message: "the remote sleep to be interrupted",
    });
    cli.term.write("echo ok-$((2+3))\r");
    await cli.waitScreen(line("ok-5"), mark);

    // A new window size here (SIGWINCH) reaches the remote terminal. It travels CLI, hub, agent: ask
    // the remote terminal its size until it answers with the new one.
    cli.term.resize(120, 50);
    await waitFor(
      async () => {
        const from = cli.screen().length;
        cli.term.write("stty size\r");
        await cli.waitScreen(/\r\d+ \d+\r+\n/, from);
        return line("50 120").test(cli.screen().slice(from));
      },
      { message: "the remote terminal to have the new size" },
    );

    cli.term.write("exit 7\r");
    expect(await cli.exited).toBe(7);
  });

  it("ends the remote shell on Ctrl-D", async () => {
    const cli = cliInTerminal(["exec", "-it", "--agent", "pty-1", "-e", "PS1=$ ", "--", ...BASH]);
    await cli.waitScreen(/\$ $/);
    cli.term.write("\x04");
    expect(await cli.exited).toBe(0);
  });

  it("hangs the remote terminal up when the CLI is killed", async () => {
    const cli = cliInTerminal(["shell", "--agent", "pty-1", "-e", "PS1=$ ", "--", ...BASH]);
    await cli.waitScreen(/\$ $/);
    const running = await waitFor(
      async () => {
        const tasks = await client.listTasks({ limit: 10 });
        return tasks.find((t) => t.state === TaskState.TASK_STATE_RUNNING);
      },
      { message: "the session's task" },
    );
    cli.term.kill("SIGKILL");
    await waitFor(
      async () => (await client.getTask(running.taskId)).info?.state !== TaskState.TASK_STATE_RUNNING,
      { timeout: 15_000, message: "the orphaned session to end" },
    );
  });

  it("streams stdin when it is not a terminal (exec -i, shell from a pipe)", async () => {
    const cat = await runCli([...hub.cli, "exec", "-i", "--pool", "nopty", "--", "cat"], {
      stdin: "one\ntwo\n",
    });
    expect(cat.stdout).toBe("one\ntwo\n");
    expect(cat.code).toBe(0);

    const sh = await runCli([...hub.cli, "shell", "--agent", "nopty-1", "--", "bash"], {
      stdin: "echo $((6*7))\nexit 4\n",
    });
    expect(sh.stdout).toBe("42\n");
    expect(sh.code).toBe(4);
  });

  it("says clearly when the agent's sessions are off", async () => {
    const cli = cliInTerminal(["shell", "--agent", "nopty-1"]);
    expect(await cli.exited).toBe(1);
    expect(cli.screen()).toContain("interactive sessions are off on agent nopty-1: set [shell] pty = true");
  });
});
