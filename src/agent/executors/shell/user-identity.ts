// Who a task runs as: a user name (and optionally one of their groups) resolved to uid, gid,
// supplementary groups, home and shell. Read from /etc/passwd and /etc/group, with getent and
// `id -G` for users that live elsewhere (LDAP, sssd): the same answers a login would get.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

export interface UserIdentity {
  name: string;
  uid: number;
  /** The primary group the task runs with: the user's own, or the group the task named. */
  gid: number;
  /** Supplementary groups (the primary one included), as `id -G` lists them. */
  groups: number[];
  home: string;
  shell: string;
}

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

/** Lines of passwd(5): name:password:uid:gid:gecos:home:shell. Malformed lines are skipped. */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 7 || f[0] === "" || line.startsWith("#")) continue;
    const uid = Number(f[2]);
    const gid = Number(f[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid) || f[2] === "" || f[3] === "") continue;
    out.push({ name: f[0]!, uid, gid, home: f[5]!, shell: f[6]! });
  }
  return out;
}

/** Lines of group(5): name:password:gid:member,member. */
export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 4 || f[0] === "" || line.startsWith("#") || f[2] === "") continue;
    const gid = Number(f[2]);
    if (!Number.isInteger(gid)) continue;
    out.push({ name: f[0]!, gid, members: f[3]!.split(",").filter((m) => m !== "") });
  }
  return out;
}

function readLines(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

/** One entry through NSS (getent), for names the local files do not hold; undefined when unknown. */
function getent(db: "passwd" | "group", name: string): string | undefined {
  try {
    return execFileSync("getent", [db, name], { encoding: "utf8", timeout: 2000, stdio: "pipe" });
  } catch {
    return undefined;
  }
}

export function lookupUser(name: string): PasswdEntry | undefined {
  const local = parsePasswd(readLines("/etc/passwd")).find((u) => u.name === name);
  if (local) return local;
  const remote = getent("passwd", name);
  return remote === undefined ? undefined : parsePasswd(remote).find((u) => u.name === name);
}

export function lookupGroup(name: string): GroupEntry | undefined {
  const local = parseGroup(readLines("/etc/group")).find((g) => g.name === name);
  if (local) return local;
  const remote = getent("group", name);
  return remote === undefined ? undefined : parseGroup(remote).find((g) => g.name === name);
}

/** The gids a user belongs to: their primary group and every group listing them as a member. */
export function groupsOf(user: PasswdEntry, groups: readonly GroupEntry[]): number[] {
  const out = new Set<number>([user.gid]);
  for (const g of groups) if (g.members.includes(user.name)) out.add(g.gid);
  return [...out];
}

function supplementaryGroups(user: PasswdEntry): number[] {
  if (parsePasswd(readLines("/etc/passwd")).some((u) => u.name === user.name)) {
    return groupsOf(user, parseGroup(readLines("/etc/group")));
  }
  // A user from NSS: its groups may be there too, which only `id` (initgroups) sees.
  try {
    const ids = execFileSync("id", ["-G", user.name], { encoding: "utf8", timeout: 2000, stdio: "pipe" });
    const gids = ids.trim().split(/\s+/).map(Number).filter(Number.isInteger);
    return gids.length > 0 ? gids : [user.gid];
  } catch {
    return [user.gid];
  }
}

export interface IdentityRefusal {
  refusal: "unknown" | "not-member";
  message: string;
}

/**
 * The identity to run a task with, or a sentence saying why there is none: an unknown user or group,
 * or a group the user is not a member of (a task may not pick an arbitrary group).
 */
export function resolveIdentity(userName: string, groupName: string): UserIdentity | IdentityRefusal {
  const user = lookupUser(userName);
  if (!user) return { refusal: "unknown", message: `unknown user ${JSON.stringify(userName)}` };
  const groups = supplementaryGroups(user);
  let gid = user.gid;
  if (groupName !== "") {
    const g = lookupGroup(groupName);
    if (!g) return { refusal: "unknown", message: `unknown group ${JSON.stringify(groupName)}` };
    if (!groups.includes(g.gid)) {
      return {
        refusal: "not-member",
        message: `user ${JSON.stringify(userName)} is not a member of group ${JSON.stringify(groupName)}`,
      };
    }
    gid = g.gid;
  }
  return { name: user.name, uid: user.uid, gid, groups, home: user.home, shell: user.shell };
}

/**
 * The argv prefix that makes the rest run as the identity: setpriv sets the real and effective uid and
 * gid and the supplementary groups, then execs (the pid stays). Empty when the agent already is that user.
 */
export function switchUserArgv(setpriv: string, id: UserIdentity): string[] {
  const sameUser = id.uid === process.geteuid?.() && id.gid === process.getegid?.();
  if (sameUser) return [];
  return [
    setpriv,
    `--reuid=${id.uid}`,
    `--regid=${id.gid}`,
    id.groups.length > 0 ? `--groups=${id.groups.join(",")}` : "--clear-groups",
    "--",
  ];
}
