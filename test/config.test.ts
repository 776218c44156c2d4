// Config errors: every bad key is named, the process exits 2 and nothing starts.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCli, stopAll, tempDir } from "./support/processes.js";

afterAll(stopAll);

function configFile(text: string): string {
  const file = join(tempDir("cfg"), "config.toml");
  writeFileSync(file, text);
  return file;
}

describe("config errors", () => {
  it("names the agent key that is wrong", async () => {
    const r = await runCli([
      "agent",
      "--config",
      configFile('[agent]\npool_size = "abc"\n'),
      "--hub",
      "127.0.0.1:1",
      "--token",
      "x",
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("agent.pool_size");
  });

  it("names the hub key that is wrong", async () => {
    const r = await runCli([
      "hub",
      "--config",
      configFile("[hub]\nqueue_limit = -5\n"),
      "--data",
      tempDir("hubcfg"),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("hub.queue_limit");
  });

  it("reports a TOML syntax error with the file", async () => {
    const file = configFile("[agent\npool = 'x'\n");
    const r = await runCli(["agent", "--config", file, "--hub", "127.0.0.1:1", "--token", "x"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(file);
  });

  it("reports a missing config file", async () => {
    const r = await runCli([
      "agent",
      "--config",
      "/nonexistent/agent.toml",
      "--hub",
      "127.0.0.1:1",
      "--token",
      "x",
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("/nonexistent/agent.toml");
  });

  it("refuses an agent without a token", async () => {
    const r = await runCli(["agent", "--hub", "127.0.0.1:1", "--data", tempDir("notoken")], {
      env: { SWITCHBOARD_TOKEN: "" },
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/token/i);
  });

  it("refuses an unknown log level", async () => {
    const r = await runCli([
      "hub",
      "--listen",
      "127.0.0.1:0",
      "--data",
      tempDir("loglevel"),
      "--log-level",
      "loud",
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--log-level must be one of/);
  });

  it("points at the hub when it cannot be reached", async () => {
    const r = await runCli(["--hub", "127.0.0.1:1", "--token", "x", "agents"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot reach hub at 127\.0\.0\.1:1/);
  });
});
