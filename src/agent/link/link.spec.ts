// The agent over a real gRPC stream against an in-test hub: Hello and Welcome, credits, tasks and their
// events, heartbeats, the output window, reconnects, Drain, refusals, and graceful shutdown.
import { mkdtempSync, rmSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { Code } from "../../common/errors.js";
import type { Logger } from "../../common/logger.js";
import { VERSION } from "../../common/version.js";
import { OutputStream, ShellSpec, TaskState, type TaskSpec } from "../../gen/switchboard/v1/task.js";
import { createAgent, type Agent, type AgentTuning } from "../agent.js";
import { Backoff } from "./backoff.js";
import { loadAgentConfig, type AgentFlags } from "../config.js";
import { FakeHub, type FakeSession } from "../testing/fake-hub.js";
import { pidAlive } from "../testing/wait.js";
import { waitFor } from "../../common/wait-for.js";

const dataDir = mkdtempSync(join(tmpdir(), "sb-link-"));
const hubs: FakeHub[] = [];
const agents: Agent[] = [];

afterEach(async () => {
  await Promise.all(agents.splice(0).map((a) => a.shutdown({ graceMs: 100 })));
  for (const h of hubs.splice(0)) h.close();
});
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

type LogLine = Record<string, unknown> & { msg: string };

function capture(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split("\n")) if (l.trim()) lines.push(JSON.parse(l) as LogLine);
      cb();
    },
  });
  return { logger: pino({ level: "debug" }, sink), lines };
}

async function hub(opts: Parameters<typeof FakeHub.start>[0] = {}): Promise<FakeHub> {
  const h = await FakeHub.start(opts);
  hubs.push(h);
  return h;
}

async function agent(flags: AgentFlags, tuning: AgentTuning = {}, logger?: Logger): Promise<Agent> {
  const config = loadAgentConfig({
    env: {},
    flags: {
      token: "sbt_test",
      agentId: "link-1",
      pool: "edge",
      poolSize: 2,
      shell: true,
      data: dataDir,
      ...flags,
    },
  });
  const a = await createAgent(config, logger ?? capture().logger, tuning);
  agents.push(a);
  return a;
}

function shell(s: Partial<ShellSpec>): TaskSpec {
  return {
    kind: {
      $case: "shell",
      value: ShellSpec.fromPartial({
        argv: [],
        script: "",
        cwd: "",
        env: {},
        stdin: Buffer.alloc(0),
        timeoutMs: 0,
        killGraceMs: 0,
        ...s,
      }),
    },
  };
}

function assign(s: FakeSession, taskId: string, spec: TaskSpec): void {
  s.send({ $case: "assign", value: { taskId, spec, deadlineMs: 0, requester: "spec" } });
}

function finishedOf(s: FakeSession, taskId: string) {
  return waitFor(
    () => {
      const e = s.events(taskId).find((x) => x.event?.$case === "finished");
      return e?.event?.$case === "finished" ? e.event.value : undefined;
    },
    { message: `Finished of ${taskId}` },
  );
}

describe("agent link", () => {
  it("says Hello with its identity and token, gets Welcome, and grants pool_size credits", async () => {
    const h = await hub();
    const a = await agent({ hub: h.address, labels: "region=eu,disk=ssd" });
    await a.whenConnected(5000);
    expect(a.isConnected()).toBe(true);
    expect(a.agentId).toBe("link-1");
    const s = h.last!;
    expect(s.metadata.get("authorization")).toEqual(["Bearer sbt_test"]);
    expect(s.hello).toMatchObject({
      agentId: "link-1",
      pool: "edge",
      labels: { region: "eu", disk: "ssd" },
      hostname: hostname(),
      platform: `${process.platform}-${process.arch}`,
      version: VERSION,
      taskKinds: ["echo", "shell"],
      maxConcurrency: 2,
    });
    expect(s.hello!.instanceId).toMatch(/^[0-9a-f]{16}$/);
    await waitFor(() => s.granted() === 2, { message: "the initial credits" });
    expect(s.kinds().slice(0, 2)).toEqual(["hello", "credits"]);
  });

  it("runs assigned tasks and reports Started, Output and Finished, then grants the slot back", async () => {
    const h = await hub();
    const a = await agent({ hub: h.address });
    await a.whenConnected(5000);
    const s = h.last!;
    assign(s, "sh-1", shell({ script: "echo hi; echo oops >&2; exit 3" }));
    s.send({
      $case: "assign",
      value: {
        taskId: "echo-1",
        spec: { kind: { $case: "echo", value: { payload: Buffer.from("ping") } } },
        deadlineMs: 0,
        requester: "",
      },
    });
    const f = await finishedOf(s, "sh-1");
    expect(f.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(f.exitCode).toBe(3);
    expect(s.output("sh-1", OutputStream.OUTPUT_STREAM_STDOUT).toString()).toBe("hi\n");
    expect(s.output("sh-1", OutputStream.OUTPUT_STREAM_STDERR).toString()).toBe("oops\n");
    const kinds = s.events("sh-1").map((e) => e.event?.$case);
    expect(kinds[0]).toBe("started");
    expect(kinds.at(-1)).toBe("finished");
    expect(s.events("sh-1").map((e) => e.seq)).toEqual(kinds.map((_, i) => i + 1));
    const e = await finishedOf(s, "echo-1");
    expect(e.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    expect(Buffer.from(e.result).toString()).toBe("ping");
    await waitFor(() => s.granted() === 4, { message: "both slots granted back" });

    // Bad input is answered or ignored, never fatal.
    s.send({ $case: "cancel", value: { taskId: "unknown", reason: "", graceMs: 0 } });
    s.send({ $case: "window", value: { taskId: "unknown", bytes: 10, grantedTotal: 0 } });
    s.call.write({ body: undefined });
    s.send({ $case: "assign", value: { taskId: "bad", spec: undefined, deadlineMs: 0, requester: "" } });
    expect((await finishedOf(s, "bad")).error?.code).toBe(Code.INVALID_ARGUMENT);
    expect(a.isConnected()).toBe(true);
  });

  it("sends heartbeats at the hub's interval with its load", async () => {
    const h = await hub({ welcome: { heartbeatIntervalMs: 50 } });
    const a = await agent({ hub: h.address });
    await a.whenConnected(5000);
    const beat = await waitFor(
      () => {
        const beats = h.last!.received.flatMap((m) => (m.body?.$case === "heartbeat" ? [m.body.value] : []));
        return beats.length >= 2 ? beats[1] : undefined;
      },
      { message: "two heartbeats" },
    );
    expect(beat).toMatchObject({
      running: 0,
      inboxDepth: 0,
      outboxCapacity: 1000,
      degraded: false,
      degradedReason: "",
    });
    expect(beat.sentAtMs).toBeGreaterThan(0);
  });

  it("sends no more output than the window until the hub grants more", async () => {
    const h = await hub({ welcome: { initialOutputWindowBytes: 1000 } });
    const a = await agent({ hub: h.address });
    await a.whenConnected(5000);
    const s = h.last!;
    assign(s, "win", shell({ argv: ["seq", "1", "50000"] }));
    await waitFor(() => s.output("win", OutputStream.OUTPUT_STREAM_STDOUT).length === 1000, {
      message: "the window to be used",
    });
    await new Promise((r) => setTimeout(r, 100)); // a quiet period: nothing beyond the window may arrive
    expect(s.output("win", OutputStream.OUTPUT_STREAM_STDOUT).length).toBe(1000);
    s.send({ $case: "window", value: { taskId: "win", bytes: 10_000_000, grantedTotal: 0 } });
    const f = await finishedOf(s, "win");
    expect(f.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    const expected = Array.from({ length: 50_000 }, (_, i) => `${i + 1}\n`).join("");
    expect(s.output("win", OutputStream.OUTPUT_STREAM_STDOUT).toString()).toBe(expected);
  });

  it("reconnects after the hub ends the stream, and kills the lost session's tasks", async () => {
    const h = await hub();
    const { logger, lines } = capture();
    const a = await agent({ hub: h.address }, {}, logger);
    await a.whenConnected(5000);
    const first = h.last!;
    assign(first, "long", shell({ script: "echo $$; sleep 100" }));
    const pid = Number(
      await waitFor(
        () => first.output("long", OutputStream.OUTPUT_STREAM_STDOUT).toString().trim() || undefined,
        { message: "the task's pid" },
      ),
    );
    first.end();
    await waitFor(() => h.live().length === 1 && h.sessions.length === 2, { message: "a second session" });
    await a.whenConnected(5000);
    await waitFor(() => !pidAlive(pid), { message: "the lost task's process to be killed" });
    const second = h.last!;
    await waitFor(() => second.granted() === 2, { message: "full credits on the new session" });
    expect(second.events()).toEqual([]);
    const link = lines.filter((l) => l.event === "connected" || l.event === "disconnected");
    expect(link.map((l) => l.event)).toEqual(["connected", "disconnected", "connected"]);
    for (const l of link)
      expect(Object.keys(l)).toEqual(
        expect.arrayContaining([
          "hub",
          "attempt",
          "sessionId",
          "code",
          "reason",
          "connectedForMs",
          "nextDialInMs",
        ]),
      );
    expect(lines.some((l) => l.msg.startsWith("session lost") && l.cancelledTasks === 1)).toBe(true);
  });

  it("on Drain, finishes its task on the draining hub and then dials the next address at once", async () => {
    const a1 = await hub();
    const b1 = await hub();
    const { logger, lines } = capture();
    // Ordinary redials would wait about 5 s; the one after a Drain must not wait at all.
    const slow = new Backoff({ baseMs: 5000, maxMs: 5000, random: () => 0.999 });
    const a = await agent({ hub: [a1.address, b1.address] }, { backoff: slow }, logger);
    await a.whenConnected(5000);
    const s = a1.last!;
    assign(s, "during-drain", shell({ script: "sleep 0.2; echo done" }));
    await waitFor(() => s.events("during-drain").length > 0, { message: "the task to start" });
    const t0 = Date.now();
    s.send({ $case: "drain", value: { reason: "hub shutting down" } });
    const f = await finishedOf(s, "during-drain");
    expect(f.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    await waitFor(() => b1.live().length === 1, { timeout: 3000, message: "a session on the next hub" });
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(s.agentEnded).toBe(true); // the agent closed the drained session itself
    const drop = lines.find((l) => l.event === "disconnected");
    expect(drop).toMatchObject({ hub: a1.address, nextDialInMs: 0 });
    await a.whenConnected(1000);
  });

  it("says clearly why the hub refused it and retries at the backoff cap", async () => {
    const h = await hub({ refuse: () => ({ code: Code.UNAUTHENTICATED, details: "token revoked" }) });
    const { logger, lines } = capture();
    const a = await agent({ hub: h.address }, { backoff: new Backoff({ baseMs: 10, maxMs: 200 }) }, logger);
    await expect(a.whenConnected(300)).rejects.toThrow(
      /did not connect to .* within 300 ms: .*UNAUTHENTICATED token revoked/,
    );
    await waitFor(() => h.sessions.length >= 2, { message: "a retry" });
    const refusal = lines.find((l) => l.msg.includes("refused"));
    expect(refusal).toMatchObject({ code: "UNAUTHENTICATED", reason: "token revoked", retryInMs: 200 });
    expect(refusal!.msg).toMatch(/check its token/);
  });

  it("shuts down gracefully: Goodbye, the running task reports, the stream is half-closed", async () => {
    const h = await hub();
    const a = await agent({ hub: h.address });
    await a.whenConnected(5000);
    const s = h.last!;
    assign(s, "finishing", shell({ script: "sleep 0.2; echo done" }));
    await waitFor(() => s.events("finishing").length > 0, { message: "the task to start" });
    await a.shutdown({ graceMs: 5000 });
    expect(a.isConnected()).toBe(false);
    const f = await finishedOf(s, "finishing");
    expect(f.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    expect(s.output("finishing", OutputStream.OUTPUT_STREAM_STDOUT).toString()).toBe("done\n");
    const kinds = s.kinds();
    expect(kinds.indexOf("goodbye")).toBeGreaterThan(0);
    expect(kinds.indexOf("goodbye")).toBeLessThan(kinds.lastIndexOf("event"));
    expect(s.agentEnded).toBe(true);
    expect(s.granted()).toBe(2); // no credit after Goodbye
    await a.shutdown(); // idempotent
  });

  it("cancels what outlives the shutdown grace, reporting it CANCELLED", async () => {
    const h = await hub();
    const a = await agent({ hub: h.address });
    await a.whenConnected(5000);
    const s = h.last!;
    assign(s, "forever", shell({ script: "echo $$; sleep 100" }));
    const pid = Number(
      await waitFor(
        () => s.output("forever", OutputStream.OUTPUT_STREAM_STDOUT).toString().trim() || undefined,
        { message: "the task's pid" },
      ),
    );
    await a.shutdown({ graceMs: 100 });
    const f = await finishedOf(s, "forever");
    expect(f.state).toBe(TaskState.TASK_STATE_CANCELLED);
    expect(f.reason).toBe("agent shutting down");
    expect(s.events("forever").filter((e) => e.event?.$case === "finished")).toHaveLength(1);
    expect(pidAlive(pid)).toBe(false);
  });
});
