// One health rule on both transports: an agent whose link breaks goes from Healthy to Offline (its
// tasks held for it to resume), never through Degraded, whether it speaks gRPC (the stream ends, or
// keepalive ends it) or HTTP long polls (where silence is the only sign of a broken link); it is
// Healthy again once the link is back.
import { afterAll, describe, expect, it } from "vitest";
import { AgentHealth, SwitchboardClient } from "../src/client/index.js";
import { TcpProxy } from "./support/tcp-proxy.js";
import { agentToken, spawnCli, startHub, stopAll, tempDir } from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

const proxies: TcpProxy[] = [];
const clients: SwitchboardClient[] = [];
afterAll(async () => {
  for (const c of clients) c.close();
  await Promise.all(proxies.map((p) => p.close()));
  await stopAll();
});

describe("an agent's health while its link is broken", () => {
  for (const transport of ["grpc", "http"] as const) {
    it(`${transport}: Healthy, then Offline while the link is down (never Degraded), then Healthy`, async () => {
      const hub = await startHub();
      const proxy = await TcpProxy.start(transport === "http" ? hub.httpAddress : hub.address);
      proxies.push(proxy);
      const client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
      clients.push(client);
      const id = `link-${transport}`;
      spawnCli([
        "agent",
        "--transport",
        transport,
        "--hub",
        proxy.address,
        "--token",
        await agentToken(hub, "link"),
        "--agent-id",
        id,
        "--pool",
        "link",
        "--data",
        tempDir(id),
        "--shell",
        "--agent-port",
        "0",
      ]);
      const agent = async () =>
        (await client.admin.listAgents({ includeOffline: true })).find((a) => a.agentId === id);
      await waitFor(async () => (await agent())?.health === AgentHealth.AGENT_HEALTH_HEALTHY, {
        timeout: 30_000,
        message: `${id} to be healthy`,
      });
      // A task on it, so that the hub holds it for the agent to resume rather than ending it.
      const exec = spawnCli([
        ...hub.cli,
        "exec",
        "--agent",
        id,
        "--",
        "sh",
        "-c",
        "echo begin; sleep 25; echo end",
      ]);
      await waitFor(() => exec.stdout().includes("begin"), { timeout: 30_000, message: "the task to start" });

      proxy.down();
      const seen: string[] = [];
      await waitFor(
        async () => {
          const a = await agent();
          if (a) seen.push(`${AgentHealth[a.health]}: ${a.healthReason}`);
          return a?.health === AgentHealth.AGENT_HEALTH_OFFLINE;
        },
        { timeout: 25_000, interval: 200, message: `${id} to be offline` },
      );
      expect(seen.filter((s) => s.startsWith("AGENT_HEALTH_DEGRADED"))).toEqual([]);
      expect(seen.at(-1)).toMatch(/^AGENT_HEALTH_OFFLINE: link lost/);

      proxy.up();
      await waitFor(async () => (await agent())?.health === AgentHealth.AGENT_HEALTH_HEALTHY, {
        timeout: 45_000,
        interval: 200,
        message: `${id} to be healthy again`,
      });
      // The held task went on through the break and finished where the client could see it.
      expect(await exec.exited).toBe(0);
      expect(exec.stdout()).toBe("begin\nend\n");
    }, 150_000);
  }
});
