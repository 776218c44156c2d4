// Hub config: file < env < flags, and errors that name the key.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DEFAULT_MAX_MESSAGE_BYTES } from "../common/grpc-options.js";
import { ConfigError, loadHubConfig } from "./config.js";

function file(text: string): string {
  const f = join(mkdtempSync(join(tmpdir(), "sb-hubcfg-")), "hub.toml");
  writeFileSync(f, text);
  return f;
}

describe("loadHubConfig", () => {
  it("has the documented defaults", () => {
    const c = loadHubConfig({ env: {}, flags: { insecure: true } });
    expect(c.listen).toBe("0.0.0.0:7000");
    expect(c.queueLimit).toBe(1000);
    expect(c.heartbeatIntervalMs).toBe(5000);
    expect(c.offlineAfterMs).toBe(30000);
    expect(c.maxMessageBytes).toBe(DEFAULT_MAX_MESSAGE_BYTES);
  });

  it("layers file, env and flags", () => {
    const f = file(
      '[hub]\nlisten = "127.0.0.1:9000"\nqueue_limit = 5\n[monitoring]\nheartbeat_interval_secs = 2\n',
    );
    const c = loadHubConfig({ file: f, env: { SWITCHBOARD_QUEUE_LIMIT: "7" }, flags: { drainGrace: "3s" } });
    expect(c.listen).toBe("127.0.0.1:9000");
    expect(c.queueLimit).toBe(7);
    expect(c.heartbeatIntervalMs).toBe(2000);
    expect(c.drainGraceMs).toBe(3000);
    expect(
      loadHubConfig({ file: f, env: {}, flags: { queueLimit: "9", listen: "127.0.0.1:0" } }).queueLimit,
    ).toBe(9);
  });

  it("keeps state in SQLite unless store.url names PostgreSQL, and never shows a password it refuses", () => {
    expect(loadHubConfig({ env: {}, flags: { insecure: true } }).postgresStore).toBeUndefined();
    const f = file('[store]\nurl = "postgres://hub@db:5432/sb"\npool_size = 4\n');
    expect(loadHubConfig({ file: f, env: {}, flags: { insecure: true } }).postgresStore).toEqual({
      url: "postgres://hub@db:5432/sb",
      schema: "switchboard",
      poolSize: 4,
    });
    expect(
      loadHubConfig({
        env: { SWITCHBOARD_STORE: "postgresql://hub@db/sb", SWITCHBOARD_STORE_PASSWORD_FILE: "/run/pw" },
        flags: { insecure: true, store: "postgres://other@db/sb" },
      }).postgresStore,
    ).toMatchObject({ url: "postgres://other@db/sb", passwordFile: "/run/pw" });
    const bad = (): unknown =>
      loadHubConfig({ env: {}, flags: { insecure: true, store: "mysql://root:hunter2@db/sb" } });
    expect(bad).toThrow(ConfigError);
    expect(bad).toThrow(
      'store.url must be a PostgreSQL URL (postgres://user@host:5432/database), not "mysql://root:***@db/sb"',
    );
    expect(() =>
      loadHubConfig({ env: { SWITCHBOARD_STORE_PASSWORD_FILE: "/run/pw" }, flags: { insecure: true } }),
    ).toThrow(/store.password_file is for a PostgreSQL store: set store.url too/);
  });

  it("joins a cluster only with cluster.nats and a PostgreSQL store, and checks its settings", () => {
    const store = "postgres://hub@db/sb";
    expect(loadHubConfig({ env: {}, flags: { insecure: true, store } }).cluster).toBeUndefined();
    expect(
      loadHubConfig({
        env: { SWITCHBOARD_NATS: "nats://n1:4222, nats://n2:4222" },
        flags: { insecure: true, store, hubId: "eu-1" },
      }).cluster,
    ).toEqual({ nats: ["nats://n1:4222", "nats://n2:4222"], hubId: "eu-1", leaseMs: 10_000 });
    const f = file(
      `[store]\nurl = "${store}"\n[cluster]\nnats = "nats://n1:4222"\nlease_secs = 3\nadvertise = "hub1.example:7000"\n`,
    );
    expect(loadHubConfig({ file: f, env: {}, flags: { insecure: true } }).cluster).toEqual({
      nats: ["nats://n1:4222"],
      advertise: "hub1.example:7000",
      leaseMs: 3_000,
    });
    const load = (flags: Record<string, unknown>) => () =>
      loadHubConfig({ env: {}, flags: { insecure: true, ...flags } });
    expect(load({ nats: "nats://n1:4222" })).toThrow(/cluster\.nats: .* set store\.url/);
    expect(load({ store, nats: "http://n1:4222" })).toThrow(/"http:\/\/n1:4222" is not a NATS URL/);
    expect(load({ store, nats: " , " })).toThrow(/cluster\.nats: no NATS URL given/);
    expect(load({ store, nats: "nats://n1:4222", hubId: "a b" })).toThrow(/cluster\.hub_id/);
    expect(load({ advertise: "h:1" })).toThrow(
      /cluster\.advertise is for a cluster of hubs: set cluster\.nats too/,
    );
  });

  it("reads the output window: 4 MiB by default, at least 64 KiB", () => {
    expect(loadHubConfig({ env: {}, flags: { insecure: true } }).outputWindowBytes).toBe(4 * 1024 * 1024);
    const f = file('[hub]\nlisten = "127.0.0.1:0"\noutput_window_bytes = 1048576\n');
    expect(loadHubConfig({ file: f, env: {} }).outputWindowBytes).toBe(1024 * 1024);
    expect(() => loadHubConfig({ file: file("[hub]\noutput_window_bytes = 100\n"), env: {} })).toThrow(
      /hub\.output_window_bytes/,
    );
  });

  it("gives seed 000's results the seed's 2 GB limit, apart from the hub's own", () => {
    const d = loadHubConfig({ env: {}, flags: { insecure: true } });
    expect(d.seedMaxMessageBytes).toBe(2_147_483_647);
    expect(d.maxMessageBytes).toBe(16 * 1024 * 1024);
    const f = file('[hub]\nlisten = "127.0.0.1:0"\n[seed000]\nmax_message_bytes = 1048576\n');
    expect(loadHubConfig({ file: f, env: {} }).seedMaxMessageBytes).toBe(1024 * 1024);
    for (const bad of ["100", "2147483648"]) {
      expect(() => loadHubConfig({ file: file(`[seed000]\nmax_message_bytes = ${bad}\n`), env: {} })).toThrow(
        /^seed000\.max_message_bytes: /,
      );
    }
  });

  it("reads the agent HTTP API's guards, and wants the request timeout to cover the headers", () => {
    expect(loadHubConfig({ env: {}, flags: { insecure: true } }).http).toEqual({
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 120_000,
      bodyIdleTimeoutMs: 15_000,
      maxUnauthenticated: 256,
    });
    const f = file(
      '[hub]\nlisten = "127.0.0.1:0"\nhttp_headers_timeout_secs = 0.5\nhttp_request_timeout_secs = 2\n' +
        "http_body_idle_timeout_secs = 1\nhttp_max_unauthenticated = 8\n",
    );
    expect(loadHubConfig({ file: f, env: {} }).http).toEqual({
      headersTimeoutMs: 500,
      requestTimeoutMs: 2000,
      bodyIdleTimeoutMs: 1000,
      maxUnauthenticated: 8,
    });
    expect(() =>
      loadHubConfig({
        file: file('[hub]\nlisten = "127.0.0.1:0"\nhttp_request_timeout_secs = 5\n'),
        env: {},
      }),
    ).toThrow(/hub\.http_request_timeout_secs \(5\) must be at least hub\.http_headers_timeout_secs \(10\)/);
    expect(() => loadHubConfig({ file: file("[hub]\nhttp_max_unauthenticated = 0\n"), env: {} })).toThrow(
      /hub\.http_max_unauthenticated/,
    );
  });

  it("names the bad key", () => {
    expect(() => loadHubConfig({ file: file("[hub]\nqueue_limit = -5\n"), env: {} })).toThrow(
      /hub\.queue_limit/,
    );
    expect(() => loadHubConfig({ file: file("[hub]\nbogus = 1\n"), env: {} })).toThrow(
      /hub\.bogus: unknown key/,
    );
    expect(() => loadHubConfig({ env: {}, flags: { listen: "nowhere" } })).toThrow(/hub\.listen/);
    expect(() => loadHubConfig({ env: {}, flags: { queueLimit: "x" } })).toThrow(/from --queue-limit/);
    expect(() => loadHubConfig({ file: "/nonexistent.toml", env: {} })).toThrow(ConfigError);
    expect(() => loadHubConfig({ file: file("[hub\n"), env: {} })).toThrow(/invalid TOML/);
  });

  it("refuses plaintext on a reachable address unless told, and wants TLS settings whole", () => {
    expect(() => loadHubConfig({ env: {} })).toThrow(/hub\.listen: 0\.0\.0\.0:7000 .*--insecure/);
    expect(loadHubConfig({ env: {}, flags: { listen: "127.0.0.1:7000" } }).tls).toBeUndefined();
    expect(loadHubConfig({ env: {}, flags: { listen: "[::1]:7000" } }).insecure).toBe(false);
    const tls = loadHubConfig({
      env: {},
      flags: { tlsCert: "c.pem", tlsKey: "k.pem", tlsClientCa: "ca.pem" },
    }).tls;
    expect(tls?.cert).toMatch(/\/c\.pem$/);
    expect(tls?.clientCa).toMatch(/\/ca\.pem$/);
    expect(() => loadHubConfig({ env: {}, flags: { tlsCert: "c.pem" } })).toThrow(/tls\.key/);
    expect(() => loadHubConfig({ env: {}, flags: { listen: "127.0.0.1:1", tlsClientCa: "ca.pem" } })).toThrow(
      /tls\.client_ca/,
    );
    const f = file('[tls]\ncert = "/etc/sb/hub.pem"\nkey = "/etc/sb/hub.key"\n');
    expect(loadHubConfig({ file: f, env: {} }).tls).toEqual({
      cert: "/etc/sb/hub.pem",
      key: "/etc/sb/hub.key",
    });
  });
});
