// TLS and mutual TLS end to end, with certificates the test makes; and the refusal to serve
// plaintext where other machines can listen.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTestCerts, type TestCerts } from "./support/certs.js";
import { runCli, spawnCli, startAgent, startHub, stopAll, tempDir, listAgents } from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

let certs: TestCerts;
const bare = { SWITCHBOARD_DATA: tempDir("tls-empty"), SWITCHBOARD_HUB: "", SWITCHBOARD_TOKEN: "" };

beforeAll(() => {
  certs = makeTestCerts();
});

afterAll(stopAll);

describe("TLS", () => {
  it("refuses plaintext on a reachable address unless --insecure", async () => {
    const r = await runCli(["hub", "--listen", "0.0.0.0:0", "--data", tempDir("tls-refuse")]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--insecure/);
    expect(r.stderr).toMatch(/tls\.cert/);
    const hub = await startHub({ args: ["--listen", "0.0.0.0:0", "--insecure"] });
    expect((await runCli([...hub.cli, "status"])).code).toBe(0);
  });

  it("serves agents and clients over TLS, and refuses plaintext clients", async () => {
    const hub = await startHub({ args: ["--tls-cert", certs.hubCert, "--tls-key", certs.hubKey] });
    hub.cli.push("--tls-ca", certs.ca);
    await startAgent(hub, { agentId: "tls-1", pool: "tls", args: ["--tls-ca", certs.ca] });
    const r = await runCli([...hub.cli, "exec", "--pool", "tls", "--", "echo", "over tls"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("over tls\n");
    // The CLI on the hub's machine knows from hub.json that it must use TLS; it needs the CA.
    const local = await runCli(["agents", "--output", "json", "--tls-ca", certs.ca], {
      env: { SWITCHBOARD_DATA: hub.dataDir, SWITCHBOARD_HUB: "", SWITCHBOARD_TOKEN: "" },
    });
    expect(local.code).toBe(0);
    const plain = await runCli(["--hub", hub.address, "--token", hub.adminToken, "agents"], { env: bare });
    expect(plain.code).toBe(1);
    const untrusted = await runCli(["--hub", hub.address, "--token", hub.adminToken, "--tls", "agents"], {
      env: bare,
    });
    expect(untrusted.code).toBe(1);
  });

  it("serves the HTTP long-poll transport over HTTPS with the same certificate", async () => {
    const hub = await startHub({ args: ["--tls-cert", certs.hubCert, "--tls-key", certs.hubKey] });
    hub.cli.push("--tls-ca", certs.ca);
    await startAgent(hub, {
      agentId: "tls-http-1",
      pool: "tls-http",
      args: ["--transport", "http", "--tls-ca", certs.ca],
    });
    const r = await runCli([...hub.cli, "exec", "--pool", "tls-http", "--", "echo", "over https"]);
    expect(r).toMatchObject({ code: 0, stdout: "over https\n" });
    const plain = await fetch(`http://${hub.httpAddress}/agent/v1/stats`).then(
      () => "answered",
      () => "refused",
    );
    expect(plain).toBe("refused");
  });

  it("requires client certificates from the CA it is given (mutual TLS)", async () => {
    const hub = await startHub({
      args: ["--tls-cert", certs.hubCert, "--tls-key", certs.hubKey, "--tls-client-ca", certs.ca],
    });
    hub.cli.push("--tls-ca", certs.ca, "--tls-cert", certs.clientCert, "--tls-key", certs.clientKey);
    await startAgent(hub, {
      agentId: "mtls-1",
      pool: "mtls",
      args: ["--tls-ca", certs.ca, "--tls-cert", certs.clientCert, "--tls-key", certs.clientKey],
    });
    const r = await runCli([...hub.cli, "exec", "--pool", "mtls", "--", "echo", "mutual"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("mutual\n");

    const token = (
      await runCli([...hub.cli, "token", "create", "--role", "agent", "--pool", "mtls"])
    ).stdout.trim();
    const agentArgs = (id: string) => [
      "agent",
      "--hub",
      hub.address,
      "--token",
      token,
      "--agent-id",
      id,
      "--pool",
      "mtls",
      "--data",
      tempDir(id),
    ];
    const noCert = spawnCli([...agentArgs("no-cert"), "--tls-ca", certs.ca]);
    const stranger = spawnCli([
      ...agentArgs("stranger"),
      "--tls-ca",
      certs.ca,
      "--tls-cert",
      certs.strangerCert,
      "--tls-key",
      certs.strangerKey,
    ]);
    await waitFor(() => /dial failed/.test(noCert.stderr()) && /dial failed/.test(stranger.stderr()), {
      timeout: 15_000,
      message: "both agents to fail to connect",
    });
    const agents = await listAgents(hub);
    expect(agents.map((a) => a.agentId)).toEqual(["mtls-1"]);
    const noClientCert = await runCli(
      ["--hub", hub.address, "--token", hub.adminToken, "--tls-ca", certs.ca, "agents"],
      { env: bare },
    );
    expect(noClientCert.code).toBe(1);
    noCert.kill();
    stranger.kill();
    await Promise.all([noCert.exited, stranger.exited]);
  });

  it("names an unreadable certificate file", async () => {
    const r = await runCli([
      "hub",
      "--listen",
      "127.0.0.1:0",
      "--data",
      tempDir("tls-bad"),
      "--tls-cert",
      "/nonexistent/hub.pem",
      "--tls-key",
      certs.hubKey,
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/tls\.cert: cannot read \/nonexistent\/hub\.pem/);
    const a = await runCli([
      "agent",
      "--hub",
      "127.0.0.1:1",
      "--token",
      "x",
      "--tls-ca",
      "/nonexistent/ca.pem",
      "--data",
      tempDir("tls-bad-agent"),
    ]);
    expect(a.code).toBe(2);
    expect(a.stderr).toMatch(/tls\.ca: cannot read/);
  });
});
