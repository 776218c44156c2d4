import { mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { startStorageNode, type StorageNode } from "./storage-node.js";

const nodes: StorageNode[] = [];
afterEach(async () => {
  await Promise.all(nodes.splice(0).map((n) => n.close(0)));
});

async function start(dataDir: string, testFaults = false): Promise<{ node: StorageNode; url: string }> {
  const node = await startStorageNode({
    port: 0,
    host: "127.0.0.1",
    dataDir,
    nodeId: "node-spec",
    testFaults,
    maxValueBytes: 1024,
  });
  nodes.push(node);
  return { node, url: `http://127.0.0.1:${node.address.port}` };
}

describe("storage node", () => {
  it("stores, reads, lists and deletes values, and keeps them across a restart", async () => {
    const dir = mkdtempSync(join(tmpdir(), "storage-node-"));
    let { node, url } = await start(dir);
    expect((await fetch(`${url}/kv/a`, { method: "PUT", body: "one" })).status).toBe(204);
    expect((await fetch(`${url}/kv/b.2`, { method: "PUT", body: Buffer.from([0, 255]) })).status).toBe(204);
    expect(await (await fetch(`${url}/kv/a`)).text()).toBe("one");
    expect(Buffer.from(await (await fetch(`${url}/kv/b.2`)).arrayBuffer())).toEqual(Buffer.from([0, 255]));
    expect(await (await fetch(`${url}/kv`)).json()).toEqual({ keys: ["a", "b.2"] });
    expect((await fetch(`${url}/kv/a`, { method: "DELETE" })).status).toBe(204);
    expect((await fetch(`${url}/kv/a`)).status).toBe(404);
    expect((await fetch(`${url}/kv/a`, { method: "DELETE" })).status).toBe(404);

    await node.close();
    nodes.splice(nodes.indexOf(node), 1);
    writeFileSync(join(dir, "b.2.val.1.2.tmp"), "half a value"); // as a crash mid-write leaves it
    ({ node, url } = await start(dir));
    expect(await (await fetch(`${url}/kv`)).json()).toEqual({ keys: ["b.2"] });
    expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    const health = (await (await fetch(`${url}/healthz`)).json()) as {
      status: string;
      keys: number;
      nodeId: string;
    };
    expect(health).toMatchObject({ status: "ok", keys: 1, nodeId: "node-spec" });
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toContain("storage_node_keys 1\n");
    expect(metrics).toMatch(/storage_node_value_bytes 2\n/);
  });

  it("refuses bad keys, large values and unknown routes with clear statuses", async () => {
    const { url } = await start(mkdtempSync(join(tmpdir(), "storage-node-")));
    expect((await fetch(`${url}/kv/..%2Fescape`, { method: "PUT", body: "x" })).status).toBe(400);
    expect((await fetch(`${url}/kv/big`, { method: "PUT", body: Buffer.alloc(2048) })).status).toBe(413);
    expect((await fetch(`${url}/kv/a`, { method: "POST", body: "x" })).status).toBe(405);
    expect((await fetch(`${url}/nothing`)).status).toBe(404);
    // Test faults are off unless asked for.
    expect((await fetch(`${url}/_test/crash`, { method: "POST" })).status).toBe(404);
    expect((await fetch(`${url}/_test/grow?mb=1`, { method: "POST" })).status).toBe(404);
  });

  it("grows its memory on request when test faults are on", async () => {
    const { url } = await start(mkdtempSync(join(tmpdir(), "storage-node-")), true);
    const r = (await (await fetch(`${url}/_test/grow?mb=32`, { method: "POST" })).json()) as {
      heldMb: number;
      rssBytes: number;
    };
    expect(r.heldMb).toBe(32);
    // RSS inside a test worker says little (freed pages are reused); test/storage-node.test.ts measures
    // the growth of a node process of its own.
    expect(r.rssBytes).toBeGreaterThan(32 * 1024 * 1024);
    expect((await fetch(`${url}/_test/grow?mb=0`, { method: "POST" })).status).toBe(400);
  });

  it("says when its port is taken", async () => {
    const { node } = await start(mkdtempSync(join(tmpdir(), "storage-node-")));
    await expect(
      startStorageNode({
        port: node.address.port,
        host: "127.0.0.1",
        dataDir: mkdtempSync(join(tmpdir(), "storage-node-")),
        nodeId: "n2",
        testFaults: false,
        maxValueBytes: 1024,
      }),
    ).rejects.toThrow(/port \d+ on 127.0.0.1 is in use/);
  });
});
