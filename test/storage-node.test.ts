// The storage node as the agent's supervisor will run it: the built CLI in a process of its own.
import { afterAll, describe, expect, it } from "vitest";
import { spawnCli, stopAll, tempDir } from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

afterAll(stopAll);

async function startNode(
  dataDir: string,
  extra: string[] = [],
): Promise<{ proc: ReturnType<typeof spawnCli>; url: string }> {
  const proc = spawnCli([
    "storage-node",
    "--port",
    "0",
    "--data",
    dataDir,
    "--node-id",
    "node-e2e",
    ...extra,
  ]);
  const line = await waitFor(() => /listening on (\S+)/.exec(proc.stdout())?.[1], {
    timeout: 15_000,
    message: "the node to listen",
  });
  return { proc, url: `http://${line}` };
}

describe("switchboard storage-node", () => {
  it("serves, keeps its data across SIGTERM, crashes on request with exit 70", async () => {
    const dir = tempDir("storage-node");
    let { proc, url } = await startNode(dir, ["--test-faults"]);
    expect((await fetch(`${url}/kv/k1`, { method: "PUT", body: "v1" })).status).toBe(204);
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);

    ({ proc, url } = await startNode(dir, ["--test-faults"]));
    expect(await (await fetch(`${url}/kv/k1`)).text()).toBe("v1");
    const health = (await (await fetch(`${url}/healthz`)).json()) as { nodeId: string; rssBytes: number };
    expect(health.nodeId).toBe("node-e2e");
    const grown = (await (await fetch(`${url}/_test/grow?mb=64`, { method: "POST" })).json()) as {
      rssBytes: number;
    };
    expect(grown.rssBytes - health.rssBytes).toBeGreaterThan(48 * 1024 * 1024);
    await fetch(`${url}/_test/crash`, { method: "POST" }).catch(() => undefined);
    expect(await proc.exited).toBe(70);
  }, 60_000);

  it("refuses a port in use and bad flags", async () => {
    const { proc, url } = await startNode(tempDir("storage-node"));
    const port = new URL(url).port;
    const taken = spawnCli(["storage-node", "--port", port, "--data", tempDir("storage-node")]);
    expect(await taken.exited).toBe(1);
    expect(taken.stderr()).toMatch(/port \d+ on 127\.0\.0\.1 is in use/);
    const bad = spawnCli(["storage-node", "--port", "99999", "--data", tempDir("storage-node")]);
    expect(await bad.exited).toBe(2);
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
  }, 60_000);
});
