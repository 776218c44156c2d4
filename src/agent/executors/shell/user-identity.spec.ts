// Users and groups from passwd(5) and group(5) text, and the setpriv command line that switches to them.
import { describe, expect, it } from "vitest";
import { groupsOf, parseGroup, parsePasswd, resolveIdentity, switchUserArgv } from "./user-identity.js";

describe("user identity", () => {
  it("parses passwd and group lines, skipping malformed ones", () => {
    const users = parsePasswd(
      "root:x:0:0:root:/root:/bin/bash\n# comment\nbroken\nci:x:1500:1500::/home/ci:/bin/sh\n",
    );
    expect(users).toEqual([
      { name: "root", uid: 0, gid: 0, home: "/root", shell: "/bin/bash" },
      { name: "ci", uid: 1500, gid: 1500, home: "/home/ci", shell: "/bin/sh" },
    ]);
    const groups = parseGroup("ci:x:1500:\ndocker:x:999:ci,other\nsudo:x:27:other\n");
    expect(groups[1]).toEqual({ name: "docker", gid: 999, members: ["ci", "other"] });
    expect(groupsOf(users[1]!, groups)).toEqual([1500, 999]);
  });

  it("resolves real users and refuses unknown ones and groups they are not in", () => {
    const root = resolveIdentity("root", "");
    expect(root).toMatchObject({ name: "root", uid: 0, gid: 0, home: "/root" });
    expect(resolveIdentity("no-such-user-sb", "")).toEqual({
      refusal: "unknown",
      message: 'unknown user "no-such-user-sb"',
    });
    expect(resolveIdentity("root", "no-such-group-sb")).toMatchObject({ refusal: "unknown" });
    expect(resolveIdentity("nobody", "root")).toMatchObject({ refusal: "not-member" });
  });

  it("switches uid, gid and groups with setpriv, unless the agent already is that user", () => {
    const id = { name: "ci", uid: 1500, gid: 999, groups: [1500, 999], home: "/home/ci", shell: "/bin/sh" };
    expect(switchUserArgv("/usr/bin/setpriv", id)).toEqual([
      "/usr/bin/setpriv",
      "--reuid=1500",
      "--regid=999",
      "--groups=1500,999",
      "--",
    ]);
    expect(switchUserArgv("setpriv", { ...id, groups: [] })).toContain("--clear-groups");
    const self = { ...id, uid: process.geteuid!(), gid: process.getegid!() };
    expect(switchUserArgv("setpriv", self)).toEqual([]);
  });
});
