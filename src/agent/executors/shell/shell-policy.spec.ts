// The shell command policy: globs, PATH resolution, and a refusal naming its rule for every kind of
// request the agent's [shell] section does not allow.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { Code } from "../../../common/errors.js";
import { ShellSpec, type TaskError } from "../../../gen/switchboard/v1/task.js";
import {
  OPEN_SHELL_POLICY,
  compileShellPolicy,
  globToRegExp,
  allowsExplicitly,
  isRefusal,
  launcherOf,
  planShellTask,
  resolveExecutable,
  type PlanContext,
  type ShellPlan,
  type ShellPolicy,
} from "./shell-policy.js";
import type { UserIdentity } from "./user-identity.js";

const dir = mkdtempSync(join(tmpdir(), "sb-shell-policy-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function program(path: string, mode = 0o755): string {
  mkdirSync(join(path, ".."), { recursive: true });
  writeFileSync(path, "#!/bin/sh\n");
  chmodSync(path, mode);
  return path;
}

const bin = join(dir, "bin");
const tool = program(join(bin, "tool"));
const danger = program(join(bin, "danger"));
program(join(bin, "plain-file"), 0o644);
const elsewhere = program(join(dir, "opt", "real-tool"));
symlinkSync(elsewhere, join(bin, "linked"));

const ALICE: UserIdentity = {
  name: "alice",
  uid: 1234,
  gid: 1234,
  groups: [1234, 27],
  home: "/nonexistent-home",
  shell: "/bin/sh",
};

function ctx(policy: Partial<ShellPolicy> = {}, over: Partial<PlanContext> = {}): PlanContext {
  return {
    agentId: "edge-1",
    policy: compileShellPolicy({ ...OPEN_SHELL_POLICY, ...policy }),
    baseEnv: { PATH: `${bin}:/usr/bin:/bin`, KEEP: "1" },
    agentEnv: { DEPLOY_KEY: "s3cret", OTHER: "x" },
    method: "cgroup-v1",
    uid: 0,
    setpriv: "/usr/bin/setpriv",
    lookupIdentity: (user, group) => {
      if (user !== "alice") return { refusal: "unknown", message: `unknown user "${user}"` };
      if (group === "") return ALICE;
      if (group === "sudo") return { ...ALICE, gid: 27 };
      if (group === "root")
        return { refusal: "not-member", message: `user "alice" is not a member of group "root"` };
      return { refusal: "unknown", message: `unknown group "${group}"` };
    },
    ...over,
  };
}

function plan(spec: Partial<ShellSpec>, c: PlanContext = ctx()): ShellPlan | TaskError {
  return planShellTask(ShellSpec.fromPartial(spec), c);
}

function refusal(spec: Partial<ShellSpec>, c: PlanContext = ctx()): TaskError {
  const p = plan(spec, c);
  if (!isRefusal(p)) throw new Error(`expected a refusal, got a plan for ${p.file}`);
  return p;
}

function admitted(spec: Partial<ShellSpec>, c: PlanContext = ctx()): ShellPlan {
  const p = plan(spec, c);
  if (isRefusal(p)) throw new Error(`expected a plan, got: ${p.message}`);
  return p;
}

describe("globToRegExp", () => {
  it("matches * within a path segment, ** across them, ? one character; the rest literally", () => {
    expect(globToRegExp("/usr/bin/*").test("/usr/bin/ls")).toBe(true);
    expect(globToRegExp("/usr/bin/*").test("/usr/bin/x/ls")).toBe(false);
    expect(globToRegExp("/opt/**").test("/opt/a/b/c")).toBe(true);
    expect(globToRegExp("/usr/bin/python?").test("/usr/bin/python3")).toBe(true);
    expect(globToRegExp("/usr/bin/python?").test("/usr/bin/python3.11")).toBe(false);
    expect(globToRegExp("/a.b").test("/aXb")).toBe(false);
    expect(globToRegExp("APP_*").test("APP_MODE")).toBe(true);
    expect(globToRegExp("APP_*").test("XAPP_MODE")).toBe(false);
  });

  it("treats any text without wildcards as itself (property)", () => {
    fc.assert(
      fc.property(
        fc.string().filter((s) => !/[*?]/.test(s)),
        (s) => {
          const r = globToRegExp(s);
          expect(r.test(s)).toBe(true);
          expect(r.test(`${s}x`)).toBe(false);
        },
      ),
    );
  });
});

describe("resolveExecutable", () => {
  it("searches PATH like execvp: the first executable wins, a non-executable file is EACCES", () => {
    expect(resolveExecutable("tool", `/nope:${bin}`, "/")).toEqual({ path: tool });
    expect(resolveExecutable("plain-file", bin, "/")).toEqual({ problem: "not-executable" });
    expect(resolveExecutable("absent", bin, "/")).toEqual({ problem: "not-found" });
    expect(resolveExecutable("./bin/tool", "", dir)).toEqual({ path: tool });
  });
});

describe("planShellTask", () => {
  it("resolves the program and builds the environment: base, task env, secrets", () => {
    const p = admitted(
      { argv: ["tool", "a"], env: { X: "1" }, secrets: ["DEPLOY_KEY"] },
      ctx({ secretsAllow: ["DEPLOY_*"] }),
    );
    expect(p.file).toBe(tool);
    expect(p.args).toEqual(["a"]);
    expect(p.argv0).toBe("tool");
    expect(p.env).toMatchObject({ KEEP: "1", X: "1", DEPLOY_KEY: "s3cret" });
    expect(p.env.OTHER).toBeUndefined();
    expect(p.limits).toEqual({ cpus: 0, memoryMb: 0, maxProcs: 0 });
  });

  it("refuses a denied or not-allowed executable, naming the rule; deny wins, symlinks are followed", () => {
    const denied = refusal({ argv: ["danger"] }, ctx({ deny: [`${bin}/d*`] }));
    expect(denied.code).toBe(Code.PERMISSION_DENIED);
    expect(denied.message).toBe(
      `${danger} is denied on agent edge-1 by the rule "${bin}/d*" in [shell] deny`,
    );

    const notAllowed = refusal({ argv: ["danger"] }, ctx({ allow: [`${bin}/tool`] }));
    expect(notAllowed.code).toBe(Code.PERMISSION_DENIED);
    expect(notAllowed.message).toContain(`it matches nothing in [shell] allow = ["${bin}/tool"]`);

    expect(refusal({ argv: ["tool"] }, ctx({ allow: [`${bin}/*`], deny: [tool] })).message).toMatch(/denied/);
    // A link into a denied place is denied; a link from an allowed place to elsewhere is allowed.
    expect(refusal({ argv: ["linked"] }, ctx({ deny: [`${dir}/opt/**`] })).code).toBe(Code.PERMISSION_DENIED);
    expect(admitted({ argv: ["linked"] }, ctx({ allow: [`${bin}/*`] })).file).toBe(join(bin, "linked"));
  });

  describe("launchers under an allow list", () => {
    // Stubs named as the launchers: the check goes by name, so a file's content does not matter.
    const launchers = [
      "env",
      "xargs",
      "nice",
      "nohup",
      "timeout",
      "setsid",
      "stdbuf",
      "busybox",
      "toybox",
      "sudo",
      "su",
      "chroot",
      "sh",
      "bash",
      "dash",
      "zsh",
      "ksh",
      "mksh",
      "fish",
      "python",
      "python3",
      "python3.11",
      "pypy3",
      "perl",
      "perl5.36.0",
      "ruby",
      "node",
      "nodejs",
      "php8.2",
      "lua5.4",
      "awk",
      "gawk",
      "mawk",
      "ld-linux-x86-64.so.2",
    ];
    const lbin = join(dir, "launchers");
    for (const name of launchers) program(join(lbin, name));
    const find = program(join(lbin, "find"));
    const plainLs = program(join(lbin, "ls"));
    // Links: an innocent name for env, busybox under an applet's name, sh -> dash as on Debian.
    symlinkSync(join(lbin, "env"), join(lbin, "innocent"));
    symlinkSync(join(lbin, "busybox"), join(lbin, "cat"));
    symlinkSync(join(lbin, "dash"), join(lbin, "sh-link"));
    const inLauncherBin = (allow: string[], over: Partial<ShellPolicy> = {}) =>
      ctx({ allow, ...over }, { baseEnv: { PATH: lbin } });

    it("refuses every launcher allowed only by a pattern, naming the rule and the entry to add", () => {
      for (const name of launchers) {
        const r = refusal({ argv: [name, "x"] }, inLauncherBin([`${lbin}/*`]));
        expect({ name, code: r.code }).toEqual({ name, code: Code.PERMISSION_DENIED });
        expect(r.message).toBe(
          `${join(lbin, name)} is not allowed on agent edge-1: it ${launcherOf(join(lbin, name), join(lbin, name), [])!.why}, and [shell] allow = ["${lbin}/*"] admits such a program only by an entry naming it exactly ("${join(lbin, name)}"), not by a pattern`,
        );
      }
      // ** patterns are patterns too.
      expect(refusal({ argv: ["env"] }, inLauncherBin([`${dir}/**`])).message).toMatch(
        /it runs other programs \(env\)/,
      );
      expect(refusal({ argv: ["env"] }, inLauncherBin(["**/env"])).message).toMatch(/not by a pattern/);
    });

    it("follows links the way exec does: a link's target or its own name may be the launcher", () => {
      expect(refusal({ argv: ["innocent", "rm", "x"] }, inLauncherBin([`${lbin}/*`])).message).toBe(
        `${join(lbin, "innocent")} (${join(lbin, "env")}) is not allowed on agent edge-1: it runs other programs (env), and [shell] allow = ["${lbin}/*"] admits such a program only by an entry naming it exactly ("${join(lbin, "innocent")}"), not by a pattern`,
      );
      expect(refusal({ argv: ["cat"] }, inLauncherBin([`${lbin}/*`])).message).toMatch(
        /\(.*busybox\) is not allowed .*busybox is a multi-call binary/,
      );
      expect(refusal({ argv: ["sh-link", "-c", "rm x"] }, inLauncherBin([`${lbin}/*`])).message).toMatch(
        /dash is a shell/,
      );
    });

    it("refuses find only with the primaries that run programs or delete and write files", () => {
      expect(admitted({ argv: ["find", ".", "-name", "*.log"] }, inLauncherBin([`${lbin}/*`])).file).toBe(
        find,
      );
      for (const action of ["-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fls"]) {
        const r = refusal({ argv: ["find", ".", action, "rm", "{}", ";"] }, inLauncherBin([`${lbin}/*`]));
        expect(r.message).toContain(
          `${find} with ${action} is not allowed on agent edge-1: it runs other programs or deletes and writes files (find with -exec`,
        );
      }
      expect(admitted({ argv: ["find", ".", "-delete"] }, inLauncherBin([`${lbin}/*`, find])).args).toEqual([
        ".",
        "-delete",
      ]);
    });

    it("admits a launcher named by an explicit entry: its path or the file it links to", () => {
      expect(admitted({ argv: ["env", "ls"] }, inLauncherBin([join(lbin, "env")])).file).toBe(
        join(lbin, "env"),
      );
      expect(admitted({ argv: ["sh-link"] }, inLauncherBin([join(lbin, "dash")])).file).toBe(
        join(lbin, "sh-link"),
      );
      expect(admitted({ argv: ["sh-link"] }, inLauncherBin([join(lbin, "sh-link")])).file).toBe(
        join(lbin, "sh-link"),
      );
      expect(admitted({ argv: ["ls"] }, inLauncherBin([`${lbin}/*`])).file).toBe(plainLs);
      expect(allowsExplicitly([`${lbin}/env`], join(lbin, "env"), join(lbin, "env"))).toBe(true);
      expect(allowsExplicitly([`${lbin}/en?`, `${lbin}/*`], join(lbin, "env"), join(lbin, "env"))).toBe(
        false,
      );
    });

    it("holds scripts to the same rule (a script runs bash), and checks nothing without an allow list", () => {
      const s = refusal({ script: "rm x" }, inLauncherBin([`${lbin}/*`]));
      expect(s.message).toBe(
        `scripts (bash -c) are not allowed on agent edge-1: they run ${lbin}/bash, which runs other programs (bash is a shell), and [shell] allow = ["${lbin}/*"] admits such a program only by an entry naming it exactly ("${lbin}/bash"), not by a pattern`,
      );
      expect(admitted({ script: "echo hi" }, inLauncherBin([join(lbin, "bash")])).file).toBe(
        join(lbin, "bash"),
      );
      expect(admitted({ argv: ["env", "rm", "x"] }, inLauncherBin([])).file).toBe(join(lbin, "env"));
    });

    it("a renamed copy of a launcher is not recognised: only an allow list of exact paths keeps it out", () => {
      const copy = program(join(lbin, "copied-env"));
      expect(admitted({ argv: ["copied-env"] }, inLauncherBin([`${lbin}/*`])).file).toBe(copy);
      expect(refusal({ argv: ["copied-env"] }, inLauncherBin([plainLs])).message).toContain(
        "it matches nothing in [shell] allow",
      );
    });
  });

  it("refuses command lines matching deny_args, and scripts unless allowed", () => {
    const r = refusal({ argv: ["tool", "--force", "x"] }, ctx({ denyArgs: ["--force\\b"] }));
    expect(r.code).toBe(Code.PERMISSION_DENIED);
    expect(r.message).toBe(
      "the command line is denied on agent edge-1 by the pattern /--force\\b/ in [shell] deny_args",
    );

    const s = refusal({ script: "echo hi" }, ctx({ allowScripts: false }));
    expect(s.code).toBe(Code.PERMISSION_DENIED);
    expect(s.message).toBe(
      "scripts (bash -c) are not allowed on agent edge-1: [shell] allow_scripts = false; send argv instead",
    );
    expect(admitted({ script: "echo hi" }).args).toEqual(["-c", "echo hi"]);
  });

  it("refuses environment keys outside env_allow and secrets outside secrets_allow or unset", () => {
    const env = refusal(
      { argv: ["tool"], env: { LD_PRELOAD: "/x.so" } },
      ctx({ envAllow: ["LANG", "APP_*"] }),
    );
    expect(env.code).toBe(Code.PERMISSION_DENIED);
    expect(env.message).toBe(
      'environment variable "LD_PRELOAD" may not be set by tasks on agent edge-1: not in [shell] env_allow = ["LANG","APP_*"]',
    );
    expect(
      admitted({ argv: ["tool"], env: { APP_MODE: "x" } }, ctx({ envAllow: ["APP_*"] })).env.APP_MODE,
    ).toBe("x");

    const notAllowed = refusal({ argv: ["tool"], secrets: ["OTHER"] }, ctx({ secretsAllow: ["DEPLOY_*"] }));
    expect(notAllowed.code).toBe(Code.PERMISSION_DENIED);
    expect(notAllowed.message).toBe(
      'secret "OTHER" is not allowed on agent edge-1: not in [shell] secrets_allow = ["DEPLOY_*"]',
    );
    const unknown = refusal(
      { argv: ["tool"], secrets: ["DEPLOY_NONE"] },
      ctx({ secretsAllow: ["DEPLOY_*"] }),
    );
    expect(unknown.code).toBe(Code.INVALID_ARGUMENT);
    expect(unknown.message).toBe(
      'unknown secret "DEPLOY_NONE": agent edge-1 has no such environment variable',
    );
  });

  it("runs as an allowed user with their HOME, and refuses the rest", () => {
    const p = admitted({ argv: ["tool"], user: "alice" }, ctx({ users: ["alice"] }));
    expect(p.identity).toEqual(ALICE);
    expect(p.env).toMatchObject({ HOME: ALICE.home, USER: "alice", LOGNAME: "alice", SHELL: "/bin/sh" });
    expect(p.cwd).toBe("/"); // their home does not exist
    expect(
      admitted({ argv: ["tool"], user: "alice", group: "sudo" }, ctx({ users: ["alice"] })).identity?.gid,
    ).toBe(27);

    const none = refusal({ argv: ["tool"], user: "alice" });
    expect(none.code).toBe(Code.PERMISSION_DENIED);
    expect(none.message).toBe(
      'tasks may not run as another user on agent edge-1: [shell] users is empty (asked for "alice")',
    );
    const other = refusal({ argv: ["tool"], user: "bob" }, ctx({ users: ["alice"] }));
    expect(other.code).toBe(Code.PERMISSION_DENIED);
    expect(other.message).toBe('user "bob" is not allowed on agent edge-1: not in [shell] users = ["alice"]');
    const unknown = refusal({ argv: ["tool"], user: "ghost" }, ctx({ users: ["ghost"] }));
    expect(unknown.code).toBe(Code.INVALID_ARGUMENT);
    expect(unknown.message).toBe('unknown user "ghost" on agent edge-1');
    expect(refusal({ argv: ["tool"], user: "alice", group: "root" }, ctx({ users: ["alice"] })).code).toBe(
      Code.PERMISSION_DENIED,
    );
    expect(refusal({ argv: ["tool"], group: "sudo" }).message).toMatch(/group needs user/);

    const notRoot = refusal({ argv: ["tool"], user: "alice" }, ctx({ users: ["alice"] }, { uid: 1000 }));
    expect(notRoot.code).toBe(Code.FAILED_PRECONDITION);
    expect(notRoot.message).toMatch(/runs as uid 1000, not root/);
    const noSetpriv = refusal(
      { argv: ["tool"], user: "alice" },
      ctx({ users: ["alice"] }, { setpriv: undefined }),
    );
    expect(noSetpriv.message).toMatch(/needs setpriv/);
  });

  it("applies defaults, refuses limits above the caps or that the method cannot enforce", () => {
    const caps = { maxCpus: 2, maxMemoryMb: 1024, maxProcs: 100, defaultMemoryMb: 256, defaultMaxProcs: 50 };
    expect(admitted({ argv: ["tool"] }, ctx(caps)).limits).toEqual({ cpus: 0, memoryMb: 256, maxProcs: 50 });
    expect(
      admitted({ argv: ["tool"], limits: { cpus: 0.5, memoryMb: 64, maxProcs: 10 } }, ctx(caps)).limits,
    ).toEqual({ cpus: 0.5, memoryMb: 64, maxProcs: 10 });

    const mem = refusal({ argv: ["tool"], limits: { cpus: 0, memoryMb: 4096, maxProcs: 0 } }, ctx(caps));
    expect(mem.code).toBe(Code.INVALID_ARGUMENT);
    expect(mem.message).toBe(
      "limits.memory_mb = 4096 is above agent edge-1's cap of 1024 ([shell] max_memory_mb)",
    );
    expect(
      refusal({ argv: ["tool"], limits: { cpus: 3, memoryMb: 0, maxProcs: 0 } }, ctx(caps)).message,
    ).toMatch(/limits\.cpus = 3 is above .* cap of 2 \(\[shell\] max_cpus\)/);
    expect(
      refusal({ argv: ["tool"], limits: { cpus: 0, memoryMb: 0, maxProcs: 101 } }, ctx(caps)).message,
    ).toMatch(/max_procs = 101 is above/);
    expect(refusal({ argv: ["tool"], limits: { cpus: -1, memoryMb: 0, maxProcs: 0 } }).code).toBe(
      Code.INVALID_ARGUMENT,
    );

    const off = refusal(
      { argv: ["tool"], limits: { cpus: 0, memoryMb: 64, maxProcs: 0 } },
      ctx({}, { method: "off" }),
    );
    expect(off.code).toBe(Code.FAILED_PRECONDITION);
    expect(off.message).toMatch(/does not enforce limits \(\[shell\] limits = "off"\)/);
    const cpu = refusal(
      { argv: ["tool"], limits: { cpus: 1, memoryMb: 0, maxProcs: 0 } },
      ctx({}, { method: "rlimit" }),
    );
    expect(cpu.message).toMatch(/cannot limit CPU/);
    expect(
      admitted(
        { argv: ["tool"], limits: { cpus: 0, memoryMb: 64, maxProcs: 0 } },
        ctx({}, { method: "rlimit" }),
      ).limits.memoryMb,
    ).toBe(64);
  });

  it("says when the program is missing or not executable, as a spawn would", () => {
    expect(refusal({ argv: ["absent-xyz"] })).toEqual({
      code: Code.INVALID_ARGUMENT,
      message: `executable "absent-xyz" was not found on agent edge-1's PATH`,
    });
    expect(refusal({ argv: ["plain-file"] }).code).toBe(Code.FAILED_PRECONDITION);
  });
});
