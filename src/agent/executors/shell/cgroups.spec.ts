// cgroup paths and limit files, from /proc texts of real machines: cgroup v1 (this project's CI
// machines, the agent in a nested memory group), hybrid, pure v2, bind-mounted subtrees.
import { describe, expect, it } from "vitest";
import {
  agentGroupName,
  agentGroupPid,
  limitWrites,
  locateCgroups,
  parseFlatKeyed,
  parseMountInfo,
  parseProcCgroup,
  taskGroupDirs,
} from "./cgroups.js";

const V1_MOUNTINFO = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw`;

const V1_SELF = `9:name=systemd:/
8:pids:/
4:memory:/process_api/5c94
2:cpuacct:/
1:cpu:/
0::/`;

describe("locating the agent's cgroups", () => {
  it("parses mountinfo and /proc/self/cgroup", () => {
    const m = parseMountInfo(V1_MOUNTINFO);
    expect(m).toHaveLength(7);
    expect(m[3]).toEqual({
      root: "/",
      mountPoint: "/sys/fs/cgroup/memory",
      fsType: "cgroup",
      superOptions: ["rw", "memory"],
    });
    expect(parseMountInfo("36 35 98:0 /a\\040b /mnt/x\\040y rw - ext3 /dev/root rw")[0]).toMatchObject({
      root: "/a b",
      mountPoint: "/mnt/x y",
    });
    const own = parseProcCgroup(V1_SELF);
    expect(own.v1.get("memory")).toBe("/process_api/5c94");
    expect(own.v1.get("name=systemd")).toBe("/");
    expect(own.v2).toBe("/");
  });

  it("puts v1 groups under the agent's own group in each hierarchy", () => {
    const loc = locateCgroups(parseMountInfo(V1_MOUNTINFO), parseProcCgroup(V1_SELF));
    expect(loc).toEqual({
      version: 1,
      dirs: {
        memory: "/sys/fs/cgroup/memory/process_api/5c94",
        cpu: "/sys/fs/cgroup/cpu",
        pids: "/sys/fs/cgroup/pids",
      },
    });
    if (typeof loc === "string") throw new Error(loc);
    expect(taskGroupDirs(loc, agentGroupName("edge-1", 4242), "01a2-task")).toEqual([
      "/sys/fs/cgroup/memory/process_api/5c94/switchboard-edge-1-4242/01a2-task",
      "/sys/fs/cgroup/cpu/switchboard-edge-1-4242/01a2-task",
      "/sys/fs/cgroup/pids/switchboard-edge-1-4242/01a2-task",
    ]);
  });

  it("handles co-mounted controllers (cpu,cpuacct) and bind-mounted subtrees", () => {
    const mounts = parseMountInfo(`1 0 0:1 / /cg/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
2 0 0:2 /docker/abc /cg/memory rw - cgroup cgroup rw,memory
3 0 0:3 /docker/abc /cg/pids rw - cgroup cgroup rw,pids`);
    const own = parseProcCgroup(`5:cpu,cpuacct:/x\n4:memory:/docker/abc/inner\n3:pids:/docker/abc\n`);
    expect(locateCgroups(mounts, own)).toEqual({
      version: 1,
      dirs: { cpu: "/cg/cpu,cpuacct/x", memory: "/cg/memory/inner", pids: "/cg/pids" },
    });
  });

  it("uses the unified hierarchy when v1 lacks a controller, and says why when there is neither", () => {
    const v2 = parseMountInfo("30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate");
    expect(locateCgroups(v2, parseProcCgroup("0::/system.slice/switchboard.service\n"))).toEqual({
      version: 2,
      dir: "/sys/fs/cgroup/system.slice/switchboard.service",
    });
    expect(locateCgroups([], parseProcCgroup("4:memory:/\n"))).toBe(
      "no cgroup v2 hierarchy is mounted and cgroup v1 lacks the memory, cpu, pids controllers",
    );
  });

  it("names one agent process's groups, so another process of the same agent id is never cleaned up", () => {
    expect(agentGroupName("a-1", 77)).toBe("switchboard-a-1-77");
    expect(agentGroupPid("a-1", "switchboard-a-1-77")).toBe(77);
    expect(agentGroupPid("a", "switchboard-a-1-77")).toBeUndefined(); // agent "a-1", not "a"
    expect(agentGroupPid("a-1", "switchboard-a-1-x")).toBeUndefined();
    expect(() => taskGroupDirs({ version: 2, dir: "/c" }, "g", "../escape")).toThrow(/cannot name a cgroup/);
  });
});

describe("limit files", () => {
  it("writes memory (with swap), a CPU quota per 100 ms period, and pids.max on v1", () => {
    expect(limitWrites(1, { cpus: 0.5, memoryMb: 64, maxProcs: 20 })).toEqual([
      { controller: "memory", file: "memory.limit_in_bytes", value: String(64 * 1024 * 1024) },
      {
        controller: "memory",
        file: "memory.memsw.limit_in_bytes",
        value: String(64 * 1024 * 1024),
        optional: true,
      },
      { controller: "cpu", file: "cpu.cfs_period_us", value: "100000" },
      { controller: "cpu", file: "cpu.cfs_quota_us", value: "50000" },
      { controller: "pids", file: "pids.max", value: "20" },
    ]);
    expect(limitWrites(1, { cpus: 0, memoryMb: 0, maxProcs: 0 })).toEqual([]);
  });

  it("writes memory.max, cpu.max and pids.max on v2, and kills the whole group on OOM", () => {
    expect(limitWrites(2, { cpus: 2, memoryMb: 1, maxProcs: 5 }).map((w) => `${w.file}=${w.value}`)).toEqual([
      "memory.max=1048576",
      "memory.swap.max=0",
      "memory.oom.group=1",
      "cpu.max=200000 100000",
      "pids.max=5",
    ]);
  });

  it("reads the kernel's counters", () => {
    const c = parseFlatKeyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
    expect(c.get("oom_kill")).toBe(2);
    expect(parseFlatKeyed("max 17\n").get("max")).toBe(17);
  });
});
