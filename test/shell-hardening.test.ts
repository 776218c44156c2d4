// Shell tasks for real operations, end to end on real processes (as root): run as another user,
// memory and process limits (cgroups, and the rlimit fallback), no escaped processes after cancel,
// timeout or an agent's death, and every refusal of the command policy naming its rule.
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
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

const isRoot = process.getuid?.() === 0;
const tag = `${process.pid % 100000}`;
const USER = `sbh${tag}`;
const GROUP = `sbhg${tag}`;
const GHOST = `sbghost${tag}`; // allowed by the config, absent from the machine
const SECRET = `hush-${tag}-value`;

let hub: HubProc;
let cgroupAgent: AgentProc;
const dir = tempDir("shell-hardening");

function configFile(name: string, shell: string): string {
  const path = join(dir, `${name}.toml`);
  writeFileSync(path, `[shell]\nenabled = true\n${shell}\n`);
  return path;
}

const CGROUP_CONFIG = `limits = "cgroup"
users = ["${USER}", "${GHOST}"]
deny = ["**/rm"]
deny_args = ["--no-preserve-root"]
env_allow = ["LANG", "APP_*"]
secrets_allow = ["SB_HARDEN_*"]
max_cpus = 1
max_memory_mb = 256
max_procs = 100`;

async function exec(agent: string, args: string[], timeoutMs = 60_000) {
  return runCli([...hub.cli, "exec", "--agent", agent, ...args], { timeoutMs });
}

/** Pids whose command line contains the text (zombies have none, so they never match). */
function pidsMatching(text: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, "utf8").replaceAll("\0", " ").includes(text))
        out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}

function argv0(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0];
  } catch {
    return undefined; // gone
  }
}

/**
 * A script that double-forks a setsid'd `sleep 1000` whose argv[0] is `marker` (built by the remote
 * shell, so the CLI's own command line never contains it), prints "ready", then sleeps.
 */
function escapeeScript(marker: string, thenSleep = 300): string {
  const [head, tail] = [marker.slice(0, 3), marker.slice(3)];
  return `( setsid bash -c 'exec -a "$0" sleep 1000' "${head}""${tail}" >/dev/null 2>&1 & ); echo ready; sleep ${thenSleep}`;
}

describe("shell tasks for real operations (as root)", () => {
  beforeAll(async () => {
    // Users, cgroups and setpriv need root: anywhere else this file fails, saying so.
    if (!isRoot) throw new Error("these tests create users and cgroups: run them as root (CI does)");
    execFileSync("groupadd", [GROUP]);
    execFileSync("useradd", ["-M", "-s", "/bin/sh", "-G", GROUP, USER]);
    hub = await startHub();
    const env = { SB_HARDEN_TOKEN: SECRET, SB_OTHER: "x" };
    cgroupAgent = await startAgent(hub, {
      agentId: "sbh-cg",
      pool: "sbh",
      args: ["--config", configFile("cgroup", CGROUP_CONFIG)],
      env,
    });
    await startAgent(hub, {
      agentId: "sbh-rl",
      pool: "sbh",
      args: ["--config", configFile("rlimit", 'limits = "rlimit"\nmax_memory_mb = 512')],
    });
    await startAgent(hub, {
      agentId: "sbh-off",
      pool: "sbh",
      args: [
        "--config",
        configFile("off", 'limits = "off"\nallow_scripts = false\nallow = ["/usr/bin/*", "/bin/*"]'),
      ],
    });
  });

  afterAll(async () => {
    await stopAll();
    for (const [cmd, name] of [
      ["userdel", USER],
      ["groupdel", GROUP],
    ] as const) {
      try {
        execFileSync(cmd, [name], { stdio: "ignore" });
      } catch {
        // not created
      }
    }
  });

  it("reports each agent's limits method in `switchboard agents --output json`", async () => {
    const r = await runCli([...hub.cli, "agents", "--output", "json"]);
    const agents = JSON.parse(r.stdout) as { agentId: string; labels: Record<string, string> }[];
    const method = (id: string) => agents.find((a) => a.agentId === id)?.labels["switchboard.limits"];
    expect(method("sbh-cg")).toMatch(/^cgroup-v[12]$/);
    expect(method("sbh-rl")).toBe("rlimit");
    expect(method("sbh-off")).toBe("off");
    expect((await listAgents(hub)).filter((a) => a.pool === "sbh")).toHaveLength(3);
  });

  it("runs a task as another user: uid, gid, groups and HOME are theirs", async () => {
    const uid = execFileSync("id", ["-u", USER], { encoding: "utf8" }).trim();
    const r = await exec("sbh-cg", ["--user", USER, "--", "id", "-u"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(uid);

    const home = await exec("sbh-cg", ["--user", USER, "--shell", 'echo "$HOME $USER"; id -gn; id -Gn']);
    expect(home.code).toBe(0);
    const [env, primary, groups] = home.stdout.trim().split("\n");
    expect(env).toBe(`/home/${USER} ${USER}`);
    expect(primary).toBe(USER);
    expect(groups!.split(" ")).toContain(GROUP);

    const withGroup = await exec("sbh-cg", ["--user", USER, "--group", GROUP, "--", "id", "-gn"]);
    expect(withGroup.stdout.trim()).toBe(GROUP);
  });

  it("ends a memory hog with `memory limit` (cgroup)", async () => {
    const r = await exec("sbh-cg", [
      "--memory",
      "64",
      "--shell",
      "head -c 500M /dev/zero | tail > /dev/null",
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/memory limit: the task went past its 64 MiB/);
    const id = /task (\S+)/.exec(r.stderr)![1]!;
    const t = await runCli([...hub.cli, "task", id, "--output", "json"]);
    expect(t.stdout).toMatch(/memory limit/);
  });

  it("stops a fork bomb at its process limit, leaving none of its processes (cgroup)", async () => {
    const mark = `fork${tag}`;
    const r = await exec("sbh-cg", [
      "--max-procs",
      "20",
      "--shell",
      `for i in $(seq 200); do sh -c 'sleep 30; : ${mark}' & done; wait`,
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/process limit: the task tried to run more than 20 processes/);
    await waitFor(() => pidsMatching(`: ${mark}`).length === 0, {
      timeout: 10_000,
      message: "the bomb's processes to be gone",
    });
  });

  it("holds a task to a share of the CPU (the quota its group has while it runs)", async () => {
    // v1: cpu.cfs_quota_us of the task's group in the cpu hierarchy; v2: cpu.max of its group.
    const script = [
      "p=$(grep -E '^[0-9]+:([^:]*,)?cpu(,[^:]*)?:' /proc/self/cgroup | cut -d: -f3)",
      'if [ -n "$p" ]; then m=$(awk \'/ - cgroup cgroup [^ ]*,cpu(,|$)/ {print $5; exit}\' /proc/self/mountinfo); cat "$m$p/cpu.cfs_quota_us";',
      "else cat \"/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)/cpu.max\"; fi",
    ].join("\n");
    const r = await exec("sbh-cg", ["--cpus", "0.5", "--shell", script]);
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toMatch(/^50000( 100000)?$/);
  });

  it("leaves no setsid double-forked escapee after a cancel (cgroup and rlimit agents)", async () => {
    for (const agent of ["sbh-cg", "sbh-rl"]) {
      const marker = `esc${tag}${agent}`;
      const p = spawnCli([...hub.cli, "exec", "--agent", agent, "--shell", escapeeScript(marker)]);
      await waitFor(() => p.stdout().includes("ready"), {
        timeout: 20_000,
        message: `${agent}: the script to start its escapee`,
      });
      // The escapee is the `sleep` named after the marker (argv[0]); `setsid` and `bash` carry the marker
      // in their arguments for an instant before it, with the script's session.
      const escapee = await waitFor(() => pidsMatching(marker).find((pid) => argv0(pid) === marker), {
        message: `${agent}: the escapee to run`,
      });
      // It really escaped: a session of its own.
      const stat = readFileSync(`/proc/${escapee}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      expect(Number(fields[3])).toBe(escapee); // session id
      p.kill("SIGINT");
      expect(await p.exited).toBe(130);
      await waitFor(() => pidsMatching(marker).length === 0, {
        timeout: 10_000,
        message: `${agent}: the escapee to be gone after the cancel`,
      });
    }
  });

  it("leaves no escapee after a timeout", async () => {
    const marker = `tmo${tag}`;
    const r = await exec("sbh-cg", ["--timeout", "1s", "--shell", escapeeScript(marker)]);
    expect(r.code).toBe(124);
    await waitFor(() => pidsMatching(marker).length === 0, {
      timeout: 10_000,
      message: "the escapee to be gone after the timeout",
    });
  });

  it("kills what a killed agent left running when it starts again", async () => {
    const marker = `die${tag}`;
    const config = configFile("phoenix", 'limits = "cgroup"');
    const first = await startAgent(hub, {
      agentId: "sbh-phx",
      pool: "sbh-phoenix",
      args: ["--config", config],
    });
    const d = await runCli([
      ...hub.cli,
      "exec",
      "--agent",
      "sbh-phx",
      "--detach",
      "--shell",
      escapeeScript(marker),
    ]);
    expect(d.code).toBe(0);
    await waitFor(() => pidsMatching(marker).length > 0, { message: "the escapee to run" });
    first.kill("SIGKILL");
    await first.exited;
    expect(pidsMatching(marker).length).toBeGreaterThan(0); // nobody cleaned up yet
    // The new process cleans up at start, before it even reaches the hub.
    await startAgent(hub, {
      agentId: "sbh-phx",
      pool: "sbh-phoenix",
      args: ["--config", config],
      waitConnected: false,
    });
    await waitFor(() => pidsMatching(marker).length === 0, {
      timeout: 10_000,
      message: "the escapee to be gone",
    });
  });

  it("stops a fork bomb and a memory hog without cgroups too (rlimit: process scan and RSS watch)", async () => {
    const mark = `rfork${tag}`;
    const bomb = await exec("sbh-rl", [
      "--max-procs",
      "20",
      "--shell",
      `for i in $(seq 200); do sh -c 'sleep 30; : ${mark}' & done; wait`,
    ]);
    expect(bomb.stderr).toMatch(/process limit: the task tried to run more than 20 processes/);
    await waitFor(() => pidsMatching(`: ${mark}`).length === 0, {
      timeout: 10_000,
      message: "the bomb's processes to be gone",
    });

    // Three processes of 60 MiB each (held until their input ends) stay under the per-process rlimit;
    // together they pass 100 MiB.
    const hog = await exec("sbh-rl", [
      "--memory",
      "100",
      "--shell",
      "for i in 1 2 3; do ( (head -c 60M /dev/zero; sleep 20) | tail > /dev/null) & done; wait",
    ]);
    expect(hog.code).not.toBe(0);
    expect(hog.stderr).toMatch(/memory limit: the task went past its 100 MiB/);
  });

  it("passes secrets by name only: to the task that asks, never to others, never into logs or the task record", async () => {
    const r = await exec("sbh-cg", [
      "--secret",
      "SB_HARDEN_TOKEN",
      "--shell",
      `test "$SB_HARDEN_TOKEN" = "${SECRET.slice(0, 4)}""${SECRET.slice(4)}" && echo has-secret`,
    ]);
    expect(r.stdout).toBe("has-secret\n");
    const other = await exec("sbh-cg", ["--shell", 'echo "[${SB_HARDEN_TOKEN:-}]"']);
    expect(other.stdout).toBe("[]\n");
    const id = (
      await exec("sbh-cg", ["--detach", "--secret", "SB_HARDEN_TOKEN", "--", "true"])
    ).stdout.trim();
    await waitFor(
      async () => {
        const t = await runCli([...hub.cli, "task", id, "--output", "json"]);
        return t.code === 0 && /succeeded/.test(t.stdout) ? t : undefined;
      },
      { message: "the task to finish" },
    );
    const t = await runCli([...hub.cli, "task", id, "--output", "json"]);
    expect(t.stdout).not.toContain(SECRET);
    expect(cgroupAgent.stdout() + cgroupAgent.stderr()).not.toContain(SECRET);
  });

  it("refuses what the policy does not allow, naming the rule", async () => {
    const cases: [string, string[], RegExp][] = [
      ["sbh-cg", ["--user", GHOST, "--", "true"], new RegExp(`unknown user "${GHOST}" on agent sbh-cg`)],
      [
        "sbh-cg",
        ["--user", "root", "--", "true"],
        /user "root" is not allowed on agent sbh-cg: not in \[shell\] users = /,
      ],
      [
        "sbh-cg",
        ["--user", USER, "--group", "root", "--", "true"],
        new RegExp(`user "${USER}" is not a member of group "root"`),
      ],
      [
        "sbh-cg",
        ["--memory", "100000", "--", "true"],
        /limits\.memory_mb = 100000 is above agent sbh-cg's cap of 256 \(\[shell\] max_memory_mb\)/,
      ],
      [
        "sbh-cg",
        ["--max-procs", "101", "--", "true"],
        /limits\.max_procs = 101 is above .*\[shell\] max_procs/,
      ],
      ["sbh-cg", ["--cpus", "2", "--", "true"], /limits\.cpus = 2 is above .*\[shell\] max_cpus/],
      [
        "sbh-cg",
        ["--", "rm", "-f", "/nonexistent"],
        /\/rm is denied on agent sbh-cg by the rule "\*\*\/rm" in \[shell\] deny/,
      ],
      [
        "sbh-cg",
        ["--", "echo", "--no-preserve-root"],
        /denied on agent sbh-cg by the pattern \/--no-preserve-root\/ in \[shell\] deny_args/,
      ],
      [
        "sbh-cg",
        ["--env", "LD_PRELOAD=/x.so", "--", "true"],
        /environment variable "LD_PRELOAD" may not be set .* \[shell\] env_allow = \["LANG","APP_\*"\]/,
      ],
      [
        "sbh-cg",
        ["--secret", "SB_HARDEN_NONE", "--", "true"],
        /unknown secret "SB_HARDEN_NONE": agent sbh-cg has no such environment variable/,
      ],
      [
        "sbh-cg",
        ["--secret", "SB_OTHER", "--", "true"],
        /secret "SB_OTHER" is not allowed on agent sbh-cg: not in \[shell\] secrets_allow/,
      ],
      [
        "sbh-off",
        ["--shell", "echo hi"],
        /scripts \(bash -c\) are not allowed on agent sbh-off: \[shell\] allow_scripts = false/,
      ],
      [
        "sbh-off",
        ["--", "/usr/sbin/nologin"],
        /\/usr\/sbin\/nologin is not allowed on agent sbh-off: it matches nothing in \[shell\] allow/,
      ],
      [
        "sbh-off",
        ["--memory", "64", "--", "true"],
        /agent sbh-off does not enforce limits \(\[shell\] limits = "off"\)/,
      ],
      ["sbh-rl", ["--cpus", "1", "--", "true"], /agent sbh-rl cannot limit CPU/],
      [
        "sbh-rl",
        ["--user", USER, "--", "true"],
        /tasks may not run as another user on agent sbh-rl: \[shell\] users is empty/,
      ],
    ];
    for (const [agent, args, expected] of cases) {
      const r = await exec(agent, args);
      expect({ args, code: r.code }).toEqual({ args, code: 1 });
      expect(r.stderr).toMatch(expected);
    }
    // The same rules pass what they allow.
    expect((await exec("sbh-cg", ["--env", "APP_MODE=x", "--", "printenv", "APP_MODE"])).stdout).toBe("x\n");
    expect((await exec("sbh-off", ["--", "echo", "plain"])).stdout).toBe("plain\n");
  }, 120_000);
});
