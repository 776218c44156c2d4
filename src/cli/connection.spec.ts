// Where the CLI looks for its hub and token, in order.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DEFAULT_HUB, resolveHub, resolveToken } from "./connection.js";

function dataDir(files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), "sb-conn-"));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

describe("resolveHub", () => {
  it("prefers --hub, then --master, then SWITCHBOARD_HUB, then hub.json, then the default", () => {
    const dir = dataDir({ "hub.json": JSON.stringify({ address: "127.0.0.1:4567", pid: 1 }) });
    const env = { SWITCHBOARD_DATA: dir, SWITCHBOARD_HUB: "env:1" };
    expect(resolveHub({ hub: "flag:1", master: "master:1" }, env)).toBe("flag:1");
    expect(resolveHub({ master: "master:1" }, env)).toBe("master:1");
    expect(resolveHub({}, env)).toBe("env:1");
    expect(resolveHub({}, { SWITCHBOARD_DATA: dir, SWITCHBOARD_HUB: "" })).toBe("127.0.0.1:4567");
    expect(resolveHub({}, { SWITCHBOARD_DATA: dataDir() })).toBe(DEFAULT_HUB);
  });

  it("ignores a torn hub.json and takes the first of several addresses", () => {
    expect(resolveHub({}, { SWITCHBOARD_DATA: dataDir({ "hub.json": "{not json" }) })).toBe(DEFAULT_HUB);
    expect(resolveHub({ hub: "a:1, b:2" }, {})).toBe("a:1");
  });
});

describe("resolveToken", () => {
  it("prefers --token, then a non-empty SWITCHBOARD_TOKEN, then admin.token in the data dir", () => {
    const dir = dataDir({ "admin.token": "sbt_file\n" });
    expect(resolveToken({ token: "sbt_flag" }, { SWITCHBOARD_DATA: dir, SWITCHBOARD_TOKEN: "sbt_env" })).toBe(
      "sbt_flag",
    );
    expect(resolveToken({}, { SWITCHBOARD_DATA: dir, SWITCHBOARD_TOKEN: "sbt_env" })).toBe("sbt_env");
    expect(resolveToken({}, { SWITCHBOARD_DATA: dir, SWITCHBOARD_TOKEN: "" })).toBe("sbt_file");
    expect(resolveToken({}, { SWITCHBOARD_DATA: dataDir() })).toBe("");
  });
});
