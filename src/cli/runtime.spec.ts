import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { checkoutNode, isSupportedNode, OLDEST_NODE_MAJOR } from "./runtime.js";

describe("the CLI's runtime", () => {
  it("supports Node 22 and newer, as package.json's engines says", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      engines: { node: string };
    };
    expect(pkg.engines.node).toBe(`>=${OLDEST_NODE_MAJOR}`);
    expect(isSupportedNode("20.20.2")).toBe(false);
    expect(isSupportedNode("21.7.3")).toBe(false);
    expect(isSupportedNode("22.0.0")).toBe(true);
    expect(isSupportedNode("24.22.3")).toBe(true);
  });

  it("runs the suite on a supported Node (setup provides one on an older machine)", () => {
    expect(isSupportedNode(), `the suite runs on Node ${process.version}`).toBe(true);
  });

  it("finds the checkout's own Node in .runtime/bin, and only there", () => {
    const root = mkdtempSync(join(tmpdir(), "sb-runtime-"));
    try {
      expect(checkoutNode(root)).toBeUndefined();
      mkdirSync(join(root, ".runtime", "bin"), { recursive: true });
      writeFileSync(join(root, ".runtime", "bin", "node"), "#!/bin/sh\n");
      chmodSync(join(root, ".runtime", "bin", "node"), 0o755);
      expect(checkoutNode(root)).toBe(join(root, ".runtime", "bin", "node"));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
