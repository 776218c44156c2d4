// The HTTP/1.1 long-poll transport end to end: real hub and agents from the built CLI, the agent on
// --transport http; a hub restart under long polls; and what the agent API answers to bad requests.
import { afterAll, describe, expect, it } from "vitest";
import {
  HttpDownload,
  HttpPoll,
  HttpSendAck,
  HttpUpload,
  type AgentMessage,
} from "../src/gen/switchboard/v1/agent.js";
import { TcpProxy } from "./support/tcp-proxy.js";
import {
  agentToken,
  freePort,
  listAgents,
  runCli,
  spawnCli,
  startAgent,
  startHub,
  stopAll,
  tempDir,
  type HubProc,
} from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

const proxies: TcpProxy[] = [];
afterAll(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  await stopAll();
});

async function post(
  hub: HubProc,
  path: string,
  body: Uint8Array,
  token: string,
): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(`http://${hub.httpAddress}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/x-protobuf" },
    body,
  });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

function hello(agentId: string): AgentMessage {
  return {
    body: {
      $case: "hello",
      value: {
        agentId,
        pool: "raw",
        labels: {},
        hostname: "test",
        platform: "test",
        version: "0",
        taskKinds: ["echo"],
        maxConcurrency: 1,
        instanceId: `raw-${agentId}`,
        acceptsBatches: false,
        resume: undefined,
        nodes: [],
        maxStorageNodes: 0,
        agentEndpoint: "",
      },
    },
  };
}

describe("HTTP long-poll transport", () => {
  it("carries shell tasks with one request at a time, and serves stats", async () => {
    const hub = await startHub();
    await startAgent(hub, {
      agentId: "h-one",
      pool: "h",
      args: ["--transport", "http", "--hub-concurrency", "1"],
    });
    const r = await runCli([
      ...hub.cli,
      "exec",
      "--agent",
      "h-one",
      "--",
      "sh",
      "-c",
      "echo out; echo err >&2; exit 4",
    ]);
    expect(r).toMatchObject({ code: 4, stdout: "out\n", stderr: "err\n" });
    const token = await agentToken(hub, "h");
    const stats = (await (
      await fetch(`http://${hub.httpAddress}/agent/v1/stats`, {
        headers: { authorization: `Bearer ${token}` },
      })
    ).json()) as { http_channels: number; agents_connected: number };
    expect(stats.http_channels).toBeGreaterThanOrEqual(1);
    expect(stats.agents_connected).toBeGreaterThanOrEqual(1);
    const denied = await fetch(`http://${hub.httpAddress}/agent/v1/stats`);
    expect(denied.status).toBe(401);
  }, 60_000);

  it("loses no line of a task's output through link cuts, short (retried) and long (resumed)", async () => {
    const hub = await startHub();
    const proxy = await TcpProxy.start(hub.httpAddress);
    proxies.push(proxy);
    const token = await agentToken(hub, "hcut");
    const agent = spawnCli([
      "agent",
      "--transport",
      "http",
      "--hub",
      proxy.address,
      "--token",
      token,
      "--agent-id",
      "h-cut",
      "--pool",
      "hcut",
      "--shell",
      "--agent-port",
      "0",
      "--data",
      tempDir("h-cut"),
    ]);
    await waitFor(async () => (await listAgents(hub)).some((a) => a.agentId === "h-cut" && a.connected), {
      message: "the agent to connect",
    });
    const lines = 1200;
    const exec = spawnCli([
      ...hub.cli,
      "exec",
      "--agent",
      "h-cut",
      "--",
      "bash",
      "-c",
      `for i in $(seq 1 ${lines}); do echo "line $i"; sleep 0.01; done`,
    ]);
    await waitFor(() => exec.stdout().split("\n").length > 100, {
      timeout: 20_000,
      message: "output to flow",
    });
    // Short: under the agent's 10 s of retries, the channel simply goes on.
    proxy.down();
    await new Promise((r) => setTimeout(r, 2_000));
    proxy.up();
    await waitFor(() => exec.stdout().split("\n").length > 500, { timeout: 20_000, message: "more output" });
    // Long: the agent gives the channel up, redials and resumes its session.
    proxy.down();
    await new Promise((r) => setTimeout(r, 12_000));
    proxy.up();
    expect(await exec.exited).toBe(0);
    expect(exec.stdout().trimEnd().split("\n")).toEqual(
      Array.from({ length: lines }, (_, i) => `line ${i + 1}`),
    );
    expect(agent.stderr() + agent.stdout()).toContain("disconnected from hub");
  }, 120_000);

  it("survives a hub restart under long polls: the agent comes back and takes work", async () => {
    const [grpcPort, httpPort] = [await freePort(), await freePort()];
    const args = ["--listen", `127.0.0.1:${grpcPort}`, "--http-listen", `127.0.0.1:${httpPort}`];
    const first = await startHub({ args });
    await startAgent(first, { agentId: "h-restart", pool: "hr", args: ["--transport", "http"] });
    // Let the agent sit in a long poll, then kill the hub under it.
    await new Promise((r) => setTimeout(r, 500));
    first.kill("SIGKILL");
    await first.exited;
    const second = await startHub({ dataDir: first.dataDir, args });
    await waitFor(
      async () => (await listAgents(second)).some((a) => a.agentId === "h-restart" && a.connected),
      { timeout: 30_000, interval: 200, message: "the agent to reconnect over HTTP" },
    );
    const r = await runCli([...second.cli, "exec", "--agent", "h-restart", "--", "echo", "back"]);
    expect(r).toMatchObject({ code: 0, stdout: "back\n" });
  }, 90_000);

  it("answers bad requests with clear errors and keeps going", async () => {
    const hub = await startHub();
    const token = await agentToken(hub, "raw");
    const other = await agentToken(hub, "raw");

    const badToken = await post(
      hub,
      "/agent/v1/connect",
      HttpUpload.encode({ channel: "", seq: 0, messages: [hello("r1")], end: false }).finish(),
      "sbt_nope",
    );
    expect(badToken.status).toBe(401);
    const garbage = await post(hub, "/agent/v1/connect", Buffer.from("not protobuf at all \xff\xff"), token);
    expect(garbage.status).toBe(400);
    expect(garbage.body.toString()).toContain("HttpUpload");
    const noHello = await post(
      hub,
      "/agent/v1/connect",
      HttpUpload.encode({ channel: "", seq: 0, messages: [], end: false }).finish(),
      token,
    );
    expect(noHello.status).toBe(400);
    expect(noHello.body.toString()).toContain("Hello");

    const opened = await post(
      hub,
      "/agent/v1/connect",
      HttpUpload.encode({ channel: "", seq: 0, messages: [hello("r1")], end: false }).finish(),
      token,
    );
    expect(opened.status).toBe(200);
    const down = HttpDownload.decode(opened.body);
    expect(down.messages[0]?.body?.$case).toBe("welcome");
    const channel = down.channel;

    const unknown = await post(
      hub,
      "/agent/v1/poll",
      HttpPoll.encode({ channel: "nope", ack: 0, waitMs: 0 }).finish(),
      token,
    );
    expect(unknown.status).toBe(404);
    const stolen = await post(
      hub,
      "/agent/v1/poll",
      HttpPoll.encode({ channel, ack: 0, waitMs: 0 }).finish(),
      other,
    );
    expect(stolen.status).toBe(403);
    const gap = await post(
      hub,
      "/agent/v1/send",
      HttpUpload.encode({ channel, seq: 5, messages: [], end: false }).finish(),
      token,
    );
    expect(gap.status).toBe(409);
    expect(gap.body.toString()).toContain("before upload 1");

    // An event for a task this agent does not hold, and credits: accepted, the channel goes on.
    const stray: AgentMessage = {
      body: {
        $case: "event",
        value: {
          taskId: "0190f0f0-0000-7000-8000-000000000000",
          seq: 1,
          event: { $case: "started", value: { startedAtMs: 1, pid: 1 } },
        },
      },
    };
    const credits: AgentMessage = { body: { $case: "credits", value: { grantedTotal: 1 } } };
    const sent = await post(
      hub,
      "/agent/v1/send",
      HttpUpload.encode({ channel, seq: 1, messages: [stray, credits], end: false }).finish(),
      token,
    );
    expect(sent.status).toBe(200);
    expect(HttpSendAck.decode(sent.body).seq).toBe(1);
    const again = await post(
      hub,
      "/agent/v1/send",
      HttpUpload.encode({ channel, seq: 1, messages: [stray], end: false }).finish(),
      token,
    );
    expect(HttpSendAck.decode(again.body).seq).toBe(1); // a repeated upload is acknowledged, not applied twice

    // The agent takes a task through plain polls and answers it.
    const submit = runCli([...hub.cli, "ping", "--agent", "r1", "--count", "1"]);
    let assign: { taskId: string; payload: Buffer } | undefined;
    let ack = down.firstSeq + down.messages.length - 1;
    for (let i = 0; i < 20 && !assign; i++) {
      const polled = HttpDownload.decode(
        (await post(hub, "/agent/v1/poll", HttpPoll.encode({ channel, ack, waitMs: 2000 }).finish(), token))
          .body,
      );
      polled.messages.forEach((m) => {
        const spec = m.body?.$case === "assign" ? m.body.value.spec?.kind : undefined;
        if (m.body?.$case === "assign" && spec?.$case === "echo") {
          assign = { taskId: m.body.value.taskId, payload: Buffer.from(spec.value.payload) };
        }
      });
      ack = polled.firstSeq + polled.messages.length - 1;
    }
    expect(assign).toBeDefined();
    const finish: AgentMessage = {
      body: {
        $case: "event",
        value: {
          taskId: assign!.taskId,
          seq: 1,
          event: {
            $case: "finished",
            value: {
              state: 4,
              exitCode: 0,
              signal: "",
              error: undefined,
              durationMs: 1,
              result: assign!.payload,
              reason: "",
            },
          },
        },
      },
    };
    const done = await post(
      hub,
      "/agent/v1/send",
      HttpUpload.encode({ channel, seq: 2, messages: [finish], end: false }).finish(),
      token,
    );
    expect(done.status).toBe(200);
    const r = await submit;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("1 answered");
  }, 60_000);
});
