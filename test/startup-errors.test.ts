// Start-up failures of hub and agent, as an operator meets them on a bad day: a port someone else
// holds, a data dir that is a file, a certificate that is not one. Each is one sentence that names
// the setting and its value and says what to change; a stack trace only with --log-level debug.
import { writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, stopAll, tempDir } from "./support/processes.js";

const dir = tempDir("startup-errors");
const aFile = join(dir, "a-file");
const notPem = join(dir, "not.pem");
let holder: Server;
let taken: number;

beforeAll(async () => {
  writeFileSync(aFile, "not a directory\n");
  writeFileSync(notPem, "this is not a certificate\n");
  // Someone else's listener on a port the processes below are told to use.
  holder = createServer();
  taken = await new Promise<number>((resolve) =>
    holder.listen(0, "127.0.0.1", () => resolve((holder.address() as { port: number }).port)),
  );
});

afterAll(async () => {
  await new Promise((r) => holder.close(r));
  await stopAll();
});

/** stderr without the processes' own structured log lines: what the CLI said about the failure. */
function said(stderr: string): string {
  return stderr
    .split("\n")
    .filter((l) => l !== "" && !l.startsWith("{"))
    .join("\n");
}

function hub(args: string[]) {
  return runCli([
    "hub",
    "--listen",
    "127.0.0.1:0",
    "--http-listen",
    "off",
    "--data",
    tempDir("hub"),
    ...args,
  ]);
}

function agent(args: string[]) {
  // The hub is never reached: every failure here comes before the first dial.
  return runCli([
    "agent",
    "--hub",
    "127.0.0.1:1",
    "--token",
    "sbt_never_used",
    "--agent-id",
    "startup-1",
    "--data",
    tempDir("agent"),
    "--agent-port",
    "0",
    ...args,
  ]);
}

describe("start-up errors: one sentence naming the setting and its value", () => {
  it("hub: listen, http_listen, data_dir and TLS files", async () => {
    const cases: [Promise<{ code: number; stderr: string }>, number, string][] = [
      [
        hub(["--listen", `127.0.0.1:${taken}`]),
        1,
        `error: hub.listen 127.0.0.1:${taken} is already in use (set hub.listen or --listen to a free address, or port 0 for any free port)`,
      ],
      [
        hub(["--http-listen", `127.0.0.1:${taken}`]),
        1,
        `error: hub.http_listen 127.0.0.1:${taken} is already in use (set hub.http_listen or --http-listen to a free address, or "off" to serve no HTTP agent API)`,
      ],
      [
        hub(["--data", aFile]),
        1,
        `error: hub.data_dir ${aFile} cannot be created: EEXIST: file already exists, mkdir '${aFile}' (set hub.data_dir to a directory the hub may write)`,
      ],
      [
        hub(["--tls-cert", notPem, "--tls-key", notPem]),
        2,
        `error: tls.cert: ${notPem} is not a PEM certificate: no start line\nhint: check the TLS file settings`,
      ],
    ];
    for (const [run, code, sentence] of cases) {
      const r = await run;
      expect({ code: r.code, said: said(r.stderr) }).toEqual({ code, said: sentence });
    }
  }, 90_000);

  it("agent: an explicit agent_port in use, data_dir and TLS files", async () => {
    const cases: [Promise<{ code: number; stderr: string }>, string][] = [
      [
        agent(["--agent-port", String(taken)]),
        `error: agent.agent_port ${taken} is already in use (set agent_port or --agent-port to a free port, 0 for any free port, or agent_api = false to run without the local API)`,
      ],
      [
        agent(["--data", aFile]),
        `error: agent.data_dir: cannot create ${aFile}: EEXIST: file already exists, mkdir '${aFile}'`,
      ],
      [agent(["--tls-ca", notPem]), `error: tls.ca: ${notPem} is not a PEM certificate: no start line`],
    ];
    for (const [run, sentence] of cases) {
      const r = await run;
      expect({ code: r.code, said: said(r.stderr) }).toEqual({ code: 1, said: sentence });
    }
  }, 90_000);

  it("shows the stack trace only with --log-level debug", async () => {
    const r = await agent(["--agent-port", String(taken), "--log-level", "debug"]);
    expect(r.code).toBe(1);
    const lines = said(r.stderr).split("\n");
    expect(lines[0]).toBe(
      `error: agent.agent_port ${taken} is already in use (set agent_port or --agent-port to a free port, 0 for any free port, or agent_api = false to run without the local API)`,
    );
    expect(lines.some((l) => /^\s+at /.test(l))).toBe(true);
    expect(lines.some((l) => l.includes("EADDRINUSE"))).toBe(true);
  }, 60_000);
});
