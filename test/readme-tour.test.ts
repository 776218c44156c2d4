// The README's "A five-minute tour", run word for word on the demo as a new user would: every
// `switchboard …` line of the section's sh blocks, in order, from the built CLI, in the directory where
// `switchboard demo` runs (the CLI finds the hub and the admin token in ./data). Commands that need a
// terminal, a Ctrl-C, a placeholder filled in or an agent the demo does not have are run in the form
// they need by the RULES below, each with its reason; every other line must simply work (exit 0, or
// the code its comment names). A line that fails, or that the README gains and no run can carry out,
// fails this test: the tour stays true.
import { createServer, type Server } from "node:http";
import { mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawn as spawnPty } from "node-pty";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SwitchboardClient, TaskState } from "../src/client/index.js";
import { BUSYBOX_IMAGE, startPodman, type PodmanService } from "./support/podman.js";
import { CLI, ROOT, spawnCli, stopAll, tempDir, type CliResult, type Proc } from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

/** One line of the tour: the command as written, its words (as sh splits them) and its comment. */
export interface TourCommand {
  text: string;
  words: string[];
  comment: string;
}

/**
 * Splits a line as sh would (single quotes, double quotes with backslash escapes, backslashes), and
 * takes an unquoted `#` after a blank as the start of a comment. No expansions: the tour has none.
 */
export function shellWords(line: string): { words: string[]; comment: string } {
  const words: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end === -1) throw new Error(`unterminated ' in: ${line}`);
      word = (word ?? "") + line.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      let j = i + 1;
      let text = "";
      for (; j < line.length && line[j] !== '"'; j++) {
        if (line[j] === "\\" && /["\\$`]/.test(line[j + 1] ?? "")) j++;
        text += line[j];
      }
      if (j >= line.length) throw new Error(`unterminated " in: ${line}`);
      word = (word ?? "") + text;
      i = j;
    } else if (c === "\\") {
      word = (word ?? "") + (line[i + 1] ?? "");
      i++;
    } else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if (c === "#" && word === undefined) {
      return { words, comment: line.slice(i + 1).trim() };
    } else {
      word = (word ?? "") + c;
    }
  }
  if (word !== undefined) words.push(word);
  return { words, comment: "" };
}

/** Every `switchboard …` line of the sh blocks in the README's "A five-minute tour" section, in order. */
export function tourCommands(readme: string): TourCommand[] {
  const start = readme.indexOf("\n## A five-minute tour\n");
  if (start === -1) throw new Error('README.md has no "## A five-minute tour" section');
  const next = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, next === -1 ? undefined : next);
  const commands: TourCommand[] = [];
  for (const block of section.matchAll(/^```sh\n([\s\S]*?)^```/gm)) {
    // A line ending in a backslash goes on on the next one.
    for (const line of block[1]!.replace(/\\\n/g, " ").split("\n")) {
      if (!line.startsWith("switchboard ")) continue;
      const { words, comment } = shellWords(line);
      const hash = comment === "" ? line.length : line.lastIndexOf("#", line.length - comment.length);
      commands.push({ text: line.slice(0, hash).trim(), words, comment });
    }
  }
  return commands;
}

// ---- the demo and what the rules need beside it --------------------------------------------------

const tour = tempDir("tour"); // where the user runs the demo and the commands
const edgeRoot = join(tour, "edge-files"); // what the agent edge-7 has as [files] roots (for /srv/data)
/** The CLI as the user runs it: no SWITCHBOARD_* settings, so it finds the hub through ./data. */
const USER_ENV = { SWITCHBOARD_DATA: "", SWITCHBOARD_HUB: "", SWITCHBOARD_TOKEN: "" };
let demo: Proc;
let hubAddress: string;
let client: SwitchboardClient;
let engine: PodmanService | undefined;
let svc: Server;
let svcBase: string;

interface Context {
  /** The last task id a command printed (`--detach`), for `<task-id>`. */
  taskId?: string;
  /** The last agent token a command printed (`token create --role agent`), for `sbt_...`. */
  agentToken?: string;
}

function run(words: string[], timeoutMs = 60_000): Promise<CliResult> {
  const p = spawnCli(words, { cwd: tour, env: USER_ENV });
  return finish(p, words, timeoutMs);
}

async function finish(p: Proc, words: string[], timeoutMs: number): Promise<CliResult> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      p.kill("SIGKILL");
      reject(new Error(`switchboard ${words.join(" ")} did not end within ${timeoutMs} ms\n${p.stderr()}`));
    }, timeoutMs);
  });
  try {
    const code = await Promise.race([p.exited, timedOut]);
    return { code, stdout: p.stdout(), stderr: p.stderr() };
  } finally {
    clearTimeout(timer);
  }
}

/** The exit code the line's comment promises ("exit code 124: timed out"), else 0. */
function expectedCode(c: TourCommand): number {
  const m = /exit code (\d+)/.exec(c.comment);
  return m ? Number(m[1]) : 0;
}

function expectCode(c: TourCommand, r: CliResult, code = expectedCode(c)): void {
  expect({ command: c.text, code: r.code }, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`).toEqual({
    command: c.text,
    code,
  });
}

/** The CLI in a pseudo-terminal, as a person at a terminal runs it. */
function inTerminal(words: string[]) {
  const term = spawnPty(process.execPath, [CLI, ...words], {
    name: "xterm-256color",
    cols: 100,
    rows: 30,
    cwd: tour,
    env: { ...process.env, ...USER_ENV },
  });
  let screen = "";
  term.onData((d) => (screen += d));
  const exited = new Promise<number>((resolve) => term.onExit(({ exitCode }) => resolve(exitCode)));
  return { term, exited, screen: () => screen };
}

/** Whether the process has a TCP connection open to host:port (its sockets, found in /proc/net/tcp). */
function connectedTo(pid: number, address: string): boolean {
  const port = Number(address.slice(address.lastIndexOf(":") + 1));
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  return readFileSync("/proc/net/tcp", "utf8")
    .split("\n")
    .slice(1)
    .some((line) => {
      const f = line.trim().split(/\s+/);
      // remote address is ADDR:PORT in hex; state 01 is ESTABLISHED; the inode is field 9.
      return f[3] === "01" && parseInt(f[2]?.split(":")[1] ?? "", 16) === port && inodes.has(f[9] ?? "");
    });
}

/** The id of a task submitted since `since` that is running now (the tour runs one line at a time). */
async function runningTaskSince(since: number): Promise<string> {
  return waitFor(
    async () => {
      const tasks = await client.listTasks({ states: [TaskState.TASK_STATE_RUNNING] });
      return tasks.find((t) => t.createdAtMs >= since)?.taskId;
    },
    { timeout: 30_000, interval: 100, message: "the task to run on the agent" },
  );
}

// ---- how each kind of line runs -------------------------------------------------------------------

interface Rule {
  /** Which lines it runs. */
  match: (c: TourCommand) => boolean;
  /** Why the line cannot run just as written, and in what form it runs instead. */
  why: string;
  run: (c: TourCommand, ctx: Context) => Promise<void>;
}

/** The words with every occurrence of `from` in them replaced. */
function replaced(words: string[], from: string | RegExp, to: string): string[] {
  return words.map((w) => w.replaceAll(from, to));
}

const RULES: Rule[] = [
  {
    match: (c) => c.comment.includes("Ctrl-C"),
    why: "waits for a Ctrl-C: run until the task runs on the agent, then interrupted with SIGINT",
    run: async (c) => {
      const since = Date.now() - 1_000; // the hub's clock, give or take
      const p = spawnCli(c.words.slice(1), { cwd: tour, env: USER_ENV });
      await runningTaskSince(since);
      p.kill("SIGINT");
      const r = await finish(p, c.words, 30_000);
      expectCode(c, r, 130);
      expect(r.stderr).toMatch(/was cancelled: cancelled from the command line \(Ctrl-C\)/);
    },
  },
  {
    match: (c) => c.words.includes("--follow") && c.words.includes("--node"),
    why: "follows a node's log until Ctrl-C: run, seen still following, then interrupted with SIGINT",
    run: async (c) => {
      const p = spawnCli(c.words.slice(1), { cwd: tour, env: USER_ENV });
      // The demo's node writes nothing: following shows as a live connection to the hub.
      await waitFor(
        () => {
          if (p.child.exitCode !== null) throw new Error(`it ended by itself: ${p.stderr()}`);
          return connectedTo(p.child.pid!, hubAddress);
        },
        { timeout: 30_000, interval: 100, message: "the follow to reach the hub" },
      );
      p.kill("SIGINT");
      expectCode(c, await finish(p, c.words, 30_000));
    },
  },
  {
    match: (c) => c.words[1] === "shell",
    why: "opens a terminal: run in a pseudo-terminal, a command typed, then `exit`",
    run: async (c) => {
      const t = inTerminal(c.words.slice(1));
      t.term.write("echo tour-$((6*7))\r");
      await waitFor(() => t.screen().includes("tour-42"), {
        timeout: 30_000,
        message: "the remote shell to answer",
      });
      t.term.write("exit\r");
      expect({ command: c.text, code: await t.exited }, t.screen()).toEqual({ command: c.text, code: 0 });
    },
  },
  {
    match: (c) => c.words[1] === "exec" && c.words.includes("-it"),
    why: "runs a full-screen program in a terminal: run in a pseudo-terminal, `q` typed once it draws",
    run: async (c) => {
      const t = inTerminal(c.words.slice(1));
      await waitFor(() => /load average/.test(t.screen()), {
        timeout: 30_000,
        message: "top to draw its screen",
      });
      t.term.write("q");
      expect({ command: c.text, code: await t.exited }, t.screen()).toEqual({ command: c.text, code: 0 });
    },
  },
  {
    match: (c) => c.words.includes("hub.example.com:7000"),
    why:
      "starts an agent on another machine: run here against the demo's hub with the token the line " +
      "before created, without --tls-ca (the demo's hub serves plaintext on loopback), until it connects",
    run: async (c, ctx) => {
      if (ctx.agentToken === undefined) throw new Error(`${c.text}: no agent token was created before it`);
      let words = replaced(replaced(c.words, "hub.example.com:7000", hubAddress), "sbt_...", ctx.agentToken);
      const tls = words.indexOf("--tls-ca");
      if (tls !== -1) words.splice(tls, 2);
      words = [
        ...words.slice(1),
        "--agent-id",
        "edge-box-7",
        "--data",
        join(tour, "edge-box-7"),
        "--agent-port",
        "0",
      ];
      const p = spawnCli(words, { cwd: tour, env: USER_ENV });
      await waitFor(
        async () => {
          if (p.child.exitCode !== null) throw new Error(`the agent exited: ${p.stderr()}`);
          const agents = await client.admin.listAgents({});
          return agents.some((a) => a.agentId === "edge-box-7");
        },
        { timeout: 30_000, interval: 200, message: "edge-box-7 to connect" },
      );
      p.kill("SIGTERM");
      expectCode(c, await finish(p, words, 30_000));
    },
  },
  {
    match: (c) => c.text.includes("svc.internal"),
    why:
      "reaches an internal service from an agent with [http] allow: run on the test's agent edge-7 " +
      "(pool edge), against a local server standing in for svc.internal:8080",
    run: async (c) => {
      expectCode(c, await run(replaced(c.words.slice(1), "http://svc.internal:8080", svcBase)));
    },
  },
  {
    match: (c) => c.words[1] === "docker",
    why:
      "needs a Docker engine on an agent with [docker] enabled: run on edge-7 against podman's service, " +
      `with the local image ${BUSYBOX_IMAGE} for busybox and nginx (nothing is pulled; nginx's part is a sleep)`,
    run: async (c) => {
      const words = c.words.slice(1).map((w) => (w === "busybox" || w === "nginx:1.27" ? BUSYBOX_IMAGE : w));
      // The stand-in for a server image has no command of its own: it serves by sleeping.
      if (c.words.includes("nginx:1.27")) words.push("sleep", "3600");
      expectCode(c, await run(words));
    },
  },
  {
    match: (c) => c.text.includes("/srv/data"),
    why: `copies files to and from an agent with [files] roots: run with edge-7, whose root stands in for /srv/data`,
    run: async (c) => {
      expectCode(c, await run(replaced(c.words.slice(1), "/srv/data", edgeRoot)));
    },
  },
  {
    match: (c) => c.text.includes("<task-id>"),
    why: "names a task: <task-id> is the id the `--detach` line printed",
    run: async (c, ctx) => {
      if (ctx.taskId === undefined) throw new Error(`${c.text}: no command before it printed a task id`);
      // The detached task has ended by the time a user reads its id and types the next line.
      const id = ctx.taskId;
      await waitFor(async () => (await client.getTask(id)).info?.finishedAtMs, {
        message: "the detached task to end",
      });
      const r = await run(replaced(c.words.slice(1), "<task-id>", id));
      expectCode(c, r);
      if (c.words[1] === "logs") expect(r.stdout).toBe("1\n2\n3\n4\n5\n");
    },
  },
];

/** Everything else runs as written and must exit 0 (or the code its comment names). */
async function runAsWritten(c: TourCommand, ctx: Context): Promise<void> {
  const placeholder = /<[^>]+>|\.\.\.$|\.\.\.\s/.exec(c.text);
  if (placeholder) {
    throw new Error(`the tour has "${c.text}": no rule fills in ${placeholder[0].trim()} (add one to RULES)`);
  }
  const r = await run(c.words.slice(1));
  expectCode(c, r);
  if (c.words.includes("--detach")) ctx.taskId = /^[0-9a-f-]{36}$/m.exec(r.stdout)?.[0];
  if (c.words[1] === "token" && c.words.includes("agent")) ctx.agentToken = r.stdout.trim().split("\n").pop();
}

// ---- the run ---------------------------------------------------------------------------------------

/** The local stand-in for svc.internal:8080. */
function startService(): Promise<Server> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (b: Buffer) => chunks.push(b));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      if (req.url === "/healthz") res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      else if (req.url === "/api/dump") res.writeHead(200).end(Buffer.alloc(256 * 1024, 7));
      else if (req.url?.startsWith("/api/")) {
        res.writeHead(req.method === "POST" ? 201 : 200, { "content-type": "application/json" });
        res.end(JSON.stringify({ method: req.method, path: req.url, bytes: body.length }) + "\n");
      } else res.writeHead(404).end();
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

beforeAll(async () => {
  // What the cp and http lines read: files in the user's directory, and one on the agent's side.
  writeFileSync(join(tour, "backup.tar.gz"), Buffer.alloc(64 * 1024, 1));
  writeFileSync(join(tour, "big.iso"), Buffer.alloc(512 * 1024, 2));
  writeFileSync(join(tour, "q3.csv"), "quarter,revenue\nQ3,42\n");
  mkdirSync(join(tour, "site", "css"), { recursive: true });
  writeFileSync(join(tour, "site", "index.html"), "<h1>hi</h1>\n");
  writeFileSync(join(tour, "site", "css", "site.css"), "h1 { color: teal }\n");
  mkdirSync(join(edgeRoot, "backups"), { recursive: true });
  writeFileSync(join(edgeRoot, "dump.sql"), "SELECT 1;\n");

  const podman = startPodman();
  svc = await startService();
  svcBase = `http://127.0.0.1:${(svc.address() as { port: number }).port}`;
  demo = spawnCli(["demo", "--listen", "127.0.0.1:0"], { cwd: tour, env: USER_ENV });
  await waitFor(() => demo.stdout().includes("Try, in another terminal"), {
    timeout: 60_000,
    message: "the demo to print what to try",
  });
  hubAddress = (JSON.parse(readFileSync(join(tour, "data", "hub.json"), "utf8")) as { address: string })
    .address;
  client = new SwitchboardClient({
    hub: hubAddress,
    token: readFileSync(join(tour, "data", "admin.token"), "utf8").trim(),
  });
  engine = await podman;

  // edge-7 in pool edge: the agent the http, docker and cp lines name.
  const token = (
    await run(["token", "create", "--role", "agent", "--pool", "edge", "--name", "tour-edge-7"])
  ).stdout
    .trim()
    .split("\n")
    .pop()!;
  const config = join(tour, "edge-7.toml");
  writeFileSync(
    config,
    `[http]\nallow = ["${svcBase}/"]\n\n[docker]\nenabled = true\nsocket = "${engine.socket}"\n\n` +
      `[files]\nroots = [${JSON.stringify(edgeRoot)}]\n`,
  );
  spawnCli(
    [
      "agent",
      "--hub",
      hubAddress,
      "--token",
      token,
      "--agent-id",
      "edge-7",
      "--pool",
      "edge",
      "--data",
      join(tour, "edge-7"),
      "--agent-port",
      "0",
      "--config",
      config,
    ],
    { cwd: tour, env: USER_ENV },
  );
  await waitFor(async () => (await client.admin.listAgents({})).some((a) => a.agentId === "edge-7"), {
    timeout: 30_000,
    interval: 200,
    message: "edge-7 to connect",
  });
}, 120_000);

afterAll(async () => {
  client?.close();
  demo?.kill("SIGINT");
  await demo?.exited;
  await stopAll();
  await engine?.stop();
  await new Promise((r) => svc?.close(r));
});

describe("the README's five-minute tour", () => {
  const commands = tourCommands(readFileSync(join(ROOT, "README.md"), "utf8"));

  it("finds the tour's commands", () => {
    expect(commands.length).toBeGreaterThan(20);
    expect(commands[0]!.text).toBe("switchboard agents");
  });

  it("runs every command of the tour on the demo, in order", async () => {
    const ctx: Context = {};
    const used = new Set<Rule>();
    // Every line runs, a failed one too (the user would go on reading): the failures are said together.
    const failures: string[] = [];
    for (const c of commands) {
      const rule = RULES.find((r) => r.match(c));
      if (rule) used.add(rule);
      try {
        await (rule ? rule.run(c, ctx) : runAsWritten(c, ctx));
      } catch (e) {
        failures.push(`${c.text}\n${rule ? `(run as: ${rule.why})\n` : ""}${(e as Error).message}`);
      }
    }
    expect(failures.join("\n\n")).toBe("");
    // A rule no line needs any more is a stale claim about the README.
    expect(RULES.filter((r) => !used.has(r)).map((r) => r.why)).toEqual([]);
  }, 600_000);
});

describe("shellWords", () => {
  it("splits as sh does and finds the comment", () => {
    expect(shellWords(`switchboard exec --shell 'for i in 1 2; do echo $i; done' # a loop`)).toEqual({
      words: ["switchboard", "exec", "--shell", "for i in 1 2; do echo $i; done"],
      comment: "a loop",
    });
    expect(shellWords(`a "b \\"c\\" # d" e#f # g`)).toEqual({
      words: ["a", 'b "c" # d', "e#f"],
      comment: "g",
    });
    expect(shellWords(`x -H 'Content-Type: application/json' -d '{"a":1}'`).words).toEqual([
      "x",
      "-H",
      "Content-Type: application/json",
      "-d",
      '{"a":1}',
    ]);
  });
});

describe("tourCommands", () => {
  it("takes the switchboard lines of the tour's sh blocks only, comments apart, continuations joined", () => {
    const readme = [
      "## Quickstart",
      "```sh",
      "switchboard not-in-the-tour",
      "```",
      "## A five-minute tour",
      "Text `switchboard inline` is not a command.",
      "```sh",
      "switchboard agents                 # who is connected",
      "export X=1",
      "switchboard query --db d \\",
      "  'SELECT 1'  # continued",
      "```",
      "```toml",
      "switchboard = 1",
      "```",
      "## Features",
      "```sh",
      "switchboard after-the-tour",
      "```",
    ].join("\n");
    expect(tourCommands(readme)).toEqual([
      { text: "switchboard agents", words: ["switchboard", "agents"], comment: "who is connected" },
      {
        text: "switchboard query --db d    'SELECT 1'",
        words: ["switchboard", "query", "--db", "d", "SELECT 1"],
        comment: "continued",
      },
    ]);
  });
});
