// The shell policy's boundary, end to end: under an allow list, programs that run other programs
// (launchers, shells, interpreters, find with -exec or -delete) are refused unless an entry names
// them, so the walk-arounds of a deny list (`env rm`, `busybox rm`, `xargs rm`, `find -delete`,
// `sh -c 'rm …'`, interpreter one-liners, an innocent-looking link) delete nothing; an explicitly
// allowed launcher runs; a renamed copy is kept out only by an allow list of exact paths.
import { chmodSync, copyFileSync, existsSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startAgent, startHub, stopAll, tempDir, type HubProc } from "./support/processes.js";

let hub: HubProc;
const dir = tempDir("shell-launchers");
const bin = join(dir, "bin");
const victims = join(dir, "victims");
const victim = join(victims, "precious.txt");
// The agents look programs up here, so that a name resolves the same way on every machine.
const PATH = `${bin}:/usr/bin:/usr/sbin`;
const GLOBS = ["/usr/bin/*", "/usr/sbin/*", "/bin/*", "/sbin/*", `${bin}/*`];

function configFile(name: string, shell: string): string {
  const path = join(dir, `${name}.toml`);
  writeFileSync(path, `[shell]\nenabled = true\nlimits = "off"\n${shell}\n`);
  return path;
}

/** A program of this name on the agents' PATH: the real one, or a stub where it is not installed. */
function onPath(name: string): string {
  for (const d of ["/usr/bin", "/usr/sbin"]) if (existsSync(join(d, name))) return join(d, name);
  const stub = join(bin, name);
  writeFileSync(stub, "#!/bin/sh\nexit 0\n");
  chmodSync(stub, 0o755);
  return stub;
}

async function exec(agent: string, args: string[], stdin?: string) {
  return runCli([...hub.cli, "exec", "--agent", agent, "--", ...args], {
    timeoutMs: 60_000,
    ...(stdin !== undefined ? { stdin } : {}),
  });
}

beforeAll(async () => {
  mkdirSync(bin, { recursive: true });
  mkdirSync(victims, { recursive: true });
  writeFileSync(victim, "keep me\n");
  // Links a user could make: an innocent name for xargs, busybox under an applet's name.
  symlinkSync("/usr/bin/xargs", join(bin, "innocent"));
  symlinkSync(onPath("busybox"), join(bin, "cat"));
  // A renamed copy of rm: no name gives it away.
  copyFileSync("/usr/bin/rm", join(bin, "tidy"));
  chmodSync(join(bin, "tidy"), 0o755);
  hub = await startHub();
  const env = { PATH };
  await startAgent(hub, {
    agentId: "launch-glob",
    pool: "launch",
    env,
    args: [
      "--config",
      configFile(
        "glob",
        `allow = ${JSON.stringify(GLOBS)}\ndeny = ["**/rm"]\nallow_scripts = false\nenv_allow = []`,
      ),
    ],
  });
  await startAgent(hub, {
    agentId: "launch-exact",
    pool: "launch",
    env,
    args: [
      "--config",
      configFile(
        "exact",
        `allow = ["/usr/bin/echo", "/usr/bin/env", "/usr/bin/sh", "/usr/bin/find"]\nallow_scripts = false`,
      ),
    ],
  });
}, 60_000);

afterAll(stopAll);

describe("launchers under a [shell] allow list", () => {
  it("refuses each launcher allowed only by a pattern, naming the rule; nothing is deleted", async () => {
    const refusedBy = (path: string) =>
      `admits such a program only by an entry naming it exactly ("${path}"), not by a pattern`;
    // [argv, the resolved program named in the refusal, what it is]
    const cases: [string[], string, string][] = [
      [["env", "rm", victim], "/usr/bin/env", "(env)"],
      [["xargs", "rm"], "/usr/bin/xargs", "(xargs)"],
      [["nice", "rm", victim], "/usr/bin/nice", "(nice)"],
      [["nohup", "rm", victim], "/usr/bin/nohup", "(nohup)"],
      [["timeout", "5", "rm", victim], "/usr/bin/timeout", "(timeout)"],
      [["setsid", "rm", victim], "/usr/bin/setsid", "(setsid)"],
      [["stdbuf", "-o0", "rm", victim], "/usr/bin/stdbuf", "(stdbuf)"],
      [["busybox", "rm", victim], onPath("busybox"), "(busybox is a multi-call binary"],
      [["sudo", "rm", victim], onPath("sudo"), "(sudo)"],
      [["su", "-c", `rm ${victim}`], onPath("su"), "(su)"],
      [["chroot", "/", "rm", victim], onPath("chroot"), "(chroot)"],
      [["find", victims, "-delete"], "/usr/bin/find", "(find with -exec"],
      [["find", victims, "-exec", "rm", "{}", ";"], "/usr/bin/find", "(find with -exec"],
      [["find", victims, "-execdir", "rm", "{}", ";"], "/usr/bin/find", "(find with -exec"],
      [["find", victims, "-ok", "rm", "{}", ";"], "/usr/bin/find", "(find with -exec"],
      [["find", victims, "-okdir", "rm", "{}", ";"], "/usr/bin/find", "(find with -exec"],
      [["sh", "-c", `rm ${victim}`], onPath("sh"), "is a shell)"],
      [["bash", "-c", `rm ${victim}`], "/usr/bin/bash", "(bash is a shell)"],
      [["dash", "-c", `rm ${victim}`], "/usr/bin/dash", "(dash is a shell)"],
      [["zsh", "-c", `rm ${victim}`], onPath("zsh"), "(zsh is a shell)"],
      [["ksh", "-c", `rm ${victim}`], onPath("ksh"), "(ksh is a shell)"],
      [["fish", "-c", `rm ${victim}`], onPath("fish"), "(fish is a shell)"],
      [
        ["python3", "-c", `import os; os.remove(${JSON.stringify(victim)})`],
        onPath("python3"),
        "(python3 is an interpreter)",
      ],
      [["perl", "-e", `unlink "${victim}"`], onPath("perl"), "(perl is an interpreter)"],
      [
        ["node", "-e", `require("fs").rmSync(${JSON.stringify(victim)})`],
        onPath("node"),
        "is an interpreter",
      ],
      [["ruby", "-e", `File.delete("${victim}")`], onPath("ruby"), "is an interpreter"],
      [["php", "-r", `unlink("${victim}");`], onPath("php"), "is an interpreter"],
      [["lua", "-e", `os.remove("${victim}")`], onPath("lua"), "is an interpreter"],
      [["awk", `BEGIN { system("rm ${victim}") }`], onPath("awk"), "(awk is an interpreter)"],
      [["gawk", `BEGIN { system("rm ${victim}") }`], onPath("gawk"), "(gawk is an interpreter)"],
      [["mawk", `BEGIN { system("rm ${victim}") }`], onPath("mawk"), "(mawk is an interpreter)"],
      // A link does not hide what it points at.
      [["innocent", "rm"], join(bin, "innocent"), "(xargs)"],
      [["cat", victim], join(bin, "cat"), "(busybox is a multi-call binary"],
    ];
    // A few at a time: each is a CLI process, and the machine is shared.
    for (let i = 0; i < cases.length; i += 4) {
      await Promise.all(
        cases.slice(i, i + 4).map(async ([argv, path, what]) => {
          const r = await exec("launch-glob", argv, argv[0] === "xargs" ? `${victim}\n` : undefined);
          expect({ argv, code: r.code }).toEqual({ argv, code: 1 });
          expect(r.stderr).toContain(" is not allowed on agent launch-glob: it runs other programs");
          expect(r.stderr).toContain(what);
          expect(r.stderr).toContain(`[shell] allow = ${JSON.stringify(GLOBS)}`);
          expect(r.stderr).toContain(refusedBy(path));
        }),
      );
    }
    expect(existsSync(victim)).toBe(true);
    // The deny list still catches the plain mistake; scripts are off.
    const rm = await exec("launch-glob", ["rm", victim]);
    expect(rm.stderr).toMatch(/\/rm is denied on agent launch-glob by the rule "\*\*\/rm" in \[shell\] deny/);
    const script = await runCli([...hub.cli, "exec", "--agent", "launch-glob", "--shell", `rm ${victim}`]);
    expect(script.stderr).toMatch(/\[shell\] allow_scripts = false/);
    expect(existsSync(victim)).toBe(true);
    // Programs that are not launchers pass the pattern, and find without an action is one of them.
    const found = await exec("launch-glob", ["find", victims, "-name", "*.txt"]);
    expect({ code: found.code, stdout: found.stdout }).toEqual({ code: 0, stdout: `${victim}\n` });
  }, 180_000);

  it("runs a launcher an entry names, and keeps a renamed copy out only through exact paths", async () => {
    const env = await exec("launch-exact", ["/usr/bin/env", "echo", "via env"]);
    expect({ code: env.code, stdout: env.stdout, stderr: env.stderr }).toEqual({
      code: 0,
      stdout: "via env\n",
      stderr: "",
    });
    // /usr/bin/sh is a link to dash (or bash): the entry names the path the task asked for.
    const sh = await exec("launch-exact", ["/usr/bin/sh", "-c", "echo via sh"]);
    expect({ code: sh.code, stdout: sh.stdout }).toEqual({ code: 0, stdout: "via sh\n" });
    const find = await exec("launch-exact", [
      "/usr/bin/find",
      victims,
      "-name",
      "*.txt",
      "-exec",
      "echo",
      "{}",
      ";",
    ]);
    expect({ code: find.code, stdout: find.stdout }).toEqual({ code: 0, stdout: `${victim}\n` });

    // The renamed copy of rm: the pattern over its directory lets it through (no name gives it
    // away, which is why the README puts the boundary at exact paths), the exact list does not.
    const copy = await exec("launch-exact", [join(bin, "tidy"), victim]);
    expect(copy.code).toBe(1);
    expect(copy.stderr).toContain(
      `${join(bin, "tidy")} is not allowed on agent launch-exact: it matches nothing in [shell] allow`,
    );
    expect(existsSync(victim)).toBe(true);
  }, 60_000);
});
