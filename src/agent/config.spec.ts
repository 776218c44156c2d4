// Agent configuration: TOML parsing, file < env < flags precedence, the master_host alias, token
// files, and an error naming the key (and where its value came from) for every invalid setting.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  chooseConfigFile,
  ConfigError,
  loadAgentConfig,
  type AgentConfig,
  type LoadAgentConfigInput,
} from "./config.js";
import { parseHubAddress } from "./link/hub-address.js";

const dir = mkdtempSync(join(tmpdir(), "sb-agent-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

function file(text: string): string {
  const path = join(dir, `agent-${n++}.toml`);
  writeFileSync(path, text);
  return path;
}

function load(input: LoadAgentConfigInput): AgentConfig {
  return loadAgentConfig({ env: {}, ...input });
}

function problem(input: LoadAgentConfigInput): string {
  try {
    load(input);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).message;
  }
  throw new Error("expected a ConfigError");
}

const FULL = `
[agent]
agent_id = "agent-1"
hub = ["127.0.0.1:7000", "http://hub-b:7001/"]
token = "sbt_file"
pool = "edge"
labels = { region = "eu", disk = "ssd" }
platform = "desktop"
max_storage_nodes = 12
pool_size = 6
threshold = 70
inbox_capacity = 50
outbox_capacity = 500
resume_buffer_mb = 32
resume_spill_mb = 0
data_dir = "./agent-data"
agent_port = 9001
transport = "http"
hub_concurrency = 3
agent_host = "0.0.0.0"
api_token = "sbt_local"

[storage]
binary_path = "./target/release/storage-server"
data_path = "./data"
default_memory_mb = 1024
default_port_range_start = 50100
args = ["--listen", "{port}", "--dir", "{data}"]
allowed_binaries = ["/usr/bin/redis-server", "python3"]
stop_grace_secs = 4
startup_timeout_secs = 12
ready_check = "none"
restart_backoff_initial_secs = 0.5
restart_backoff_max_secs = 20
crash_loop_restarts = 5
crash_loop_window_secs = 90
memory_check_interval_secs = 1
log_max_mb = 5
log_files = 4
stop_nodes_on_exit = true

[monitoring]
heartbeat_interval_secs = 2
health_check_interval_secs = 15
restart_failed_nodes = false
stats_interval_secs = 30

[shell]
enabled = true
kill_grace_ms = 1500
max_chunk_bytes = 65536

[docker]
enabled = true
socket = "unix:///run/podman/podman.sock"
`;

describe("loadAgentConfig", () => {
  it("reads every section of a TOML file into typed values", () => {
    const path = file(FULL);
    const c = load({ file: path });
    expect(c.agent).toEqual({
      agentId: "agent-1",
      hub: ["127.0.0.1:7000", "hub-b:7001"],
      token: "sbt_file",
      pool: "edge",
      labels: { region: "eu", disk: "ssd" },
      platform: "desktop",
      maxStorageNodes: 12,
      poolSize: 6,
      threshold: 70,
      inboxCapacity: 50,
      outboxCapacity: 500,
      dataDir: resolve("./agent-data"),
      resumeBufferBytes: 32 * 1024 * 1024,
      resumeSpillBytes: 0,
      transport: "http",
      hubConcurrency: 3,
      api: { host: "0.0.0.0", port: 9001, portIsDefault: false, tokens: ["sbt_file", "sbt_local"] },
    });
    expect(c.storage).toEqual({
      binaryPath: resolve("./target/release/storage-server"),
      args: ["--listen", "{port}", "--dir", "{data}"],
      dataPath: resolve("./data"),
      defaultMemoryMb: 1024,
      defaultPortRangeStart: 50100,
      allowedBinaries: ["/usr/bin/redis-server", "python3"],
      stopGraceMs: 4000,
      startupTimeoutMs: 12_000,
      readyCheck: "none",
      backoffInitialMs: 500,
      backoffMaxMs: 20_000,
      crashLoopRestarts: 5,
      crashLoopWindowMs: 90_000,
      memoryCheckIntervalMs: 1000,
      logMaxBytes: 5 * 1024 * 1024,
      logFiles: 4,
      stopNodesOnExit: true,
    });
    expect(c.monitoring).toEqual({
      heartbeatIntervalMs: 2000,
      healthCheckIntervalMs: 15000,
      restartFailedNodes: false,
      statsIntervalMs: 30000,
    });
    expect(c.shell).toMatchObject({ enabled: true, killGraceMs: 1500, maxChunkBytes: 65536 });
    expect(c.docker).toEqual({ enabled: true, socket: "/run/podman/podman.sock" });
    expect(c.sources.file).toBe(path);
    expect(c.warnings).toEqual([]);
  });

  it("fills defaults: host name, pool, sizes, shell and docker off", () => {
    const c = load({ flags: { token: "t" } });
    expect(c.agent.agentId).toBe(hostname());
    expect(c.agent.hub).toEqual(["127.0.0.1:7000"]);
    expect(c.agent.pool).toBe("default");
    expect(c.agent.poolSize).toBe(4);
    expect(c.agent.threshold).toBe(80);
    expect(c.agent.inboxCapacity).toBe(100);
    expect(c.agent.outboxCapacity).toBe(1000);
    expect(c.agent.maxStorageNodes).toBe(10);
    expect(c.agent.transport).toBe("grpc");
    expect(c.agent.hubConcurrency).toBe(2);
    expect(c.agent.api).toEqual({ host: "127.0.0.1", port: 8001, portIsDefault: true, tokens: ["t"] });
    expect(c.storage.binaryPath).toBe(""); // this program's own storage-node
    expect(c.storage.dataPath).toBe(resolve("./agent-data/nodes"));
    expect(c.storage.args).toEqual(["--port", "{port}", "--data", "{data}", "--node-id", "{node_id}"]);
    expect(c.storage.stopNodesOnExit).toBe(false);
    expect(c.agent.platform).toBe(`${process.platform}-${process.arch}`);
    expect(c.monitoring.heartbeatIntervalMs).toBe(5000);
    expect(c.monitoring.statsIntervalMs).toBe(10000);
    expect(c.shell).toMatchObject({ enabled: false, killGraceMs: 5000, maxChunkBytes: 1024 * 1024 });
    expect(c.docker).toEqual({ enabled: false, socket: "/var/run/docker.sock" });
  });

  it("reads [http]: allow prefixes normalized, the default timeout and the redirect cap; off by default", () => {
    expect(load({ flags: { token: "t" } }).http).toEqual({ allow: [], timeoutMs: 60_000, maxRedirects: 10 });
    const path = file(
      '[agent]\ntoken = "t"\n[http]\nallow = ["HTTP://Svc.Internal:8080/api", "https://files.internal"]\ntimeout_secs = 2.5\nmax_redirects = 0\n',
    );
    expect(load({ file: path }).http).toEqual({
      allow: ["http://svc.internal:8080/api", "https://files.internal/"],
      timeoutMs: 2500,
      maxRedirects: 0,
    });
    expect(problem({ file: file('[agent]\ntoken = "t"\n[http]\nallow = ["http://u:p@svc/"]\n') })).toMatch(
      /^http\.allow\[0\]: a prefix may not hold a user name or password \(given for svc\) \(in .*\)$/,
    );
    expect(problem({ file: file('[agent]\ntoken = "t"\n[http]\nallow = ["http://[fe80::1]/"]\n') })).toMatch(
      /^http\.allow\[0\]: \[fe80::1\] is a link-local address: http tasks never reach it/,
    );
  });

  it("reads [files]: roots made absolute and normalized, the idle timeout, the partials' time to live; off by default", () => {
    expect(load({ flags: { token: "t" } }).files).toEqual({
      roots: [],
      idleTimeoutMs: 60_000,
      partialTtlMs: 7 * 86_400_000,
    });
    const path = file(
      '[agent]\ntoken = "t"\n[files]\nroots = ["/srv/data/", "/var//exports"]\nidle_timeout_secs = 5\npartial_ttl_secs = 0\n',
    );
    expect(load({ file: path }).files).toEqual({
      roots: ["/srv/data", "/var/exports"],
      idleTimeoutMs: 5000,
      partialTtlMs: 0,
    });
    expect(problem({ file: file('[agent]\ntoken = "t"\n[files]\npartial_ttl_secs = -1\n') })).toMatch(
      /^files\.partial_ttl_secs: /,
    );
    expect(problem({ file: file('[agent]\ntoken = "t"\n[files]\nroots = ["data"]\n') })).toMatch(
      /^files\.roots\[0\]: expected an absolute path, got "data" \(in .*\)$/,
    );
  });

  it("accepts seed 004's master_host as the hub address, with or without http://", () => {
    const seed = file(
      '[agent]\nagent_id = "agent-1"\nmaster_host = "localhost:7000"\nplatform = "desktop"\nmax_storage_nodes = 10\ntoken = "x"\n',
    );
    expect(load({ file: seed }).agent.hub).toEqual(["localhost:7000"]);
    const http = file('[agent]\nmaster_host = "http://10.0.0.5:7000"\ntoken = "x"\n');
    expect(load({ file: http }).agent.hub).toEqual(["10.0.0.5:7000"]);
    const both = file('[agent]\nmaster_host = "a:1"\nhub = ["b:2"]\ntoken = "x"\n');
    expect(problem({ file: both })).toMatch(
      /^agent\.master_host: set one of hub and master_host .*not several \(in .*\)$/,
    );
    // A flag or variable replaces the file's master_host like it replaces hub.
    expect(load({ file: http, flags: { hub: "c:3" } }).agent.hub).toEqual(["c:3"]);
  });

  it("accepts seed 003's master_endpoint as the hub address", () => {
    const seed = file(
      '[agent]\nagent_id = "agent-001"\nmaster_endpoint = "http://localhost:7000"\nagent_port = 8001  # NEW: gRPC server port\n',
    );
    const c = load({ file: seed, env: { SWITCHBOARD_TOKEN: "t" } });
    expect(c.agent.hub).toEqual(["localhost:7000"]);
    expect(c.agent.api?.port).toBe(8001);
    const two = file('[agent]\nmaster_host = "a:1"\nmaster_endpoint = "http://b:2"\ntoken = "x"\n');
    expect(problem({ file: two })).toMatch(
      /^agent\.master_endpoint: set one of master_host and master_endpoint .*\(in .*\)$/,
    );
    expect(load({ file: two, env: { SWITCHBOARD_HUB: "c:3" } }).agent.hub).toEqual(["c:3"]);
    expect(problem({ file: file('[agent]\nmaster_endpoint = "https://b:2"\ntoken = "x"\n') })).toMatch(
      /^agent\.master_endpoint: .*TLS/,
    );
  });

  it("chooses the config file: --config, else the path argument, else ./agent-config.toml if it exists", () => {
    const here = mkdtempSync(join(dir, "cwd-"));
    expect(chooseConfigFile({ cwd: here })).toBeUndefined();
    writeFileSync(join(here, "agent-config.toml"), "");
    expect(chooseConfigFile({ cwd: here })).toEqual({
      file: join(here, "agent-config.toml"),
      from: "working directory",
    });
    expect(chooseConfigFile({ argument: "x.toml", cwd: here })).toEqual({ file: "x.toml", from: "argument" });
    expect(chooseConfigFile({ flag: "y.toml", cwd: here })).toEqual({ file: "y.toml", from: "--config" });
    expect(chooseConfigFile({ flag: "y.toml", argument: "./y.toml", cwd: here })).toEqual({
      file: "y.toml",
      from: "--config",
    });
    expect(() => chooseConfigFile({ flag: "y.toml", argument: "x.toml", cwd: here })).toThrow(
      /^--config: names y\.toml while the path argument names x\.toml; give the config file once$/,
    );
  });

  it("lets environment variables override the file, and flags override both", () => {
    const path = file(FULL);
    const env = {
      SWITCHBOARD_HUB: "env-a:7000, env-b",
      SWITCHBOARD_TOKEN: "sbt_env",
      SWITCHBOARD_AGENT_ID: "env-agent",
      SWITCHBOARD_POOL: "env-pool",
      SWITCHBOARD_LABELS: "zone=a,tier=gold",
      SWITCHBOARD_SHELL_ENABLED: "false",
      SWITCHBOARD_POOL_SIZE: "9",
      SWITCHBOARD_THRESHOLD: "50",
    };
    const fromEnv = load({ file: path, env });
    expect(fromEnv.agent.hub).toEqual(["env-a:7000", "env-b:7000"]);
    expect(fromEnv.agent.token).toBe("sbt_env");
    expect(fromEnv.sources.token).toBe("SWITCHBOARD_TOKEN");
    expect(fromEnv.agent.agentId).toBe("env-agent");
    expect(fromEnv.agent.pool).toBe("env-pool");
    expect(fromEnv.agent.labels).toEqual({ zone: "a", tier: "gold" });
    expect(fromEnv.shell.enabled).toBe(false);
    expect(fromEnv.agent.poolSize).toBe(9);
    expect(fromEnv.agent.threshold).toBe(50);
    expect(fromEnv.agent.inboxCapacity).toBe(50); // untouched keys keep the file's value

    const fromFlags = load({
      env,
      flags: {
        config: path,
        hub: ["flag-a:1", "flag-b:2,flag-c:3"],
        token: "sbt_flag",
        agentId: "flag-agent",
        pool: "flag-pool",
        labels: ["k=v", "x=y"],
        poolSize: 3,
        threshold: "90",
        shell: true,
        data: join(dir, "data"),
        heartbeatInterval: "500ms",
      },
    });
    expect(fromFlags.sources.file).toBe(path);
    expect(fromFlags.agent.hub).toEqual(["flag-a:1", "flag-b:2", "flag-c:3"]);
    expect(fromFlags.agent.token).toBe("sbt_flag");
    expect(fromFlags.sources.token).toBe("--token");
    expect(fromFlags.agent.agentId).toBe("flag-agent");
    expect(fromFlags.agent.pool).toBe("flag-pool");
    expect(fromFlags.agent.labels).toEqual({ k: "v", x: "y" });
    expect(fromFlags.agent.poolSize).toBe(3);
    expect(fromFlags.agent.threshold).toBe(90);
    expect(fromFlags.shell.enabled).toBe(true);
    expect(fromFlags.agent.dataDir).toBe(join(dir, "data"));
    expect(fromFlags.monitoring.heartbeatIntervalMs).toBe(500);
    expect(load({ flags: { token: "t", heartbeatInterval: 2 } }).monitoring.heartbeatIntervalMs).toBe(2000);
    // A flag no setting has is the caller's mistake: ignoring it would quietly use the default.
    expect(() => load({ flags: { token: "t", dataDir: "/x" } })).toThrow(/no setting has the flag "dataDir"/);
  });

  it("treats an empty environment variable as unset", () => {
    const msg = problem({ env: { SWITCHBOARD_TOKEN: "", SWITCHBOARD_POOL: "" } });
    expect(msg).toMatch(/^agent\.token: no agent token/);
    expect(load({ env: { SWITCHBOARD_TOKEN: "t", SWITCHBOARD_POOL: "" } }).agent.pool).toBe("default");
  });

  it("reads token_file, warns when others can read it, and lets a flag token win over it", () => {
    const tokenPath = join(dir, "agent.token");
    writeFileSync(tokenPath, "sbt_from_file\n");
    chmodSync(tokenPath, 0o600);
    const path = file(`[agent]\ntoken_file = "${tokenPath}"\n`);
    const c = load({ file: path });
    expect(c.agent.token).toBe("sbt_from_file");
    expect(c.sources.token).toBe(tokenPath);
    expect(c.warnings).toEqual([]);

    chmodSync(tokenPath, 0o644);
    expect(load({ file: path }).warnings[0]).toMatch(
      /agent\.token_file: .* can be read by other users \(mode 644\)/,
    );
    expect(load({ file: path, flags: { token: "sbt_flag" } }).agent.token).toBe("sbt_flag");
    expect(
      load({ file: file('[agent]\ntoken = "in-file"\n'), flags: { tokenFile: tokenPath } }).agent.token,
    ).toBe("sbt_from_file");

    expect(problem({ flags: { tokenFile: join(dir, "missing.token") } })).toMatch(
      /^agent\.token_file: cannot read .*missing\.token: .*ENOENT.* \(from --token-file\)$/,
    );
    const empty = join(dir, "empty.token");
    writeFileSync(empty, "\n");
    expect(problem({ flags: { tokenFile: empty } })).toMatch(/^agent\.token_file: .*empty\.token is empty/);
    expect(problem({ file: file(`[agent]\ntoken = "a"\ntoken_file = "${tokenPath}"\n`) })).toMatch(
      /^agent\.token_file: set either token or token_file, not both/,
    );
  });

  it("names the file for a TOML syntax error and for a missing file", () => {
    const bad = file("[agent\npool = 'x'\n");
    expect(problem({ file: bad })).toMatch(new RegExp(`^${bad}: invalid TOML at line \\d+, column \\d+: `));
    expect(problem({ file: "/nonexistent/agent.toml" })).toMatch(
      /^\/nonexistent\/agent\.toml: cannot read the config file: .*ENOENT/,
    );
    expect(problem({ flags: { config: true } })).toMatch(/^--config: expected a file path/);
  });

  it("names the key of every invalid setting, and the file it came from", () => {
    const cases: [section: string, line: string, key: string][] = [
      ["agent", 'agent_id = "bad id!"', "agent.agent_id"],
      ["agent", "hub = []", "agent.hub"],
      ["agent", 'hub = ["ok:1", "h:99999"]', "agent.hub[1]"],
      ["agent", 'hub = "https://secure:7000"', "agent.hub"],
      ["agent", "master_host = 5", "agent.master_host"],
      ["agent", 'token = ""', "agent.token"],
      ["agent", "token_file = 3", "agent.token_file"],
      ["agent", 'pool = ""', "agent.pool"],
      ["agent", "labels = 5", "agent.labels"],
      ["agent", "labels = { x = 1 }", "agent.labels.x"],
      ["agent", 'platform = ""', "agent.platform"],
      ["agent", "max_storage_nodes = -1", "agent.max_storage_nodes"],
      ["agent", 'pool_size = "abc"', "agent.pool_size"],
      ["agent", "pool_size = 0", "agent.pool_size"],
      ["agent", "pool_size = 5000", "agent.pool_size"],
      ["agent", "threshold = 101", "agent.threshold"],
      ["agent", "inbox_capacity = 1.5", "agent.inbox_capacity"],
      ["agent", "outbox_capacity = -3", "agent.outbox_capacity"],
      ["agent", "data_dir = 7", "agent.data_dir"],
      ["agent", "bogus = 1", "agent.bogus"],
      ["storage", "binary_path = 1", "storage.binary_path"],
      ["storage", 'data_path = ""', "storage.data_path"],
      ["storage", "default_memory_mb = 0", "storage.default_memory_mb"],
      ["storage", "default_port_range_start = 70000", "storage.default_port_range_start"],
      ["monitoring", "heartbeat_interval_secs = 0", "monitoring.heartbeat_interval_secs"],
      ["monitoring", 'health_check_interval_secs = "x"', "monitoring.health_check_interval_secs"],
      ["monitoring", 'restart_failed_nodes = "yes"', "monitoring.restart_failed_nodes"],
      ["monitoring", "stats_interval_secs = -1", "monitoring.stats_interval_secs"],
      ["shell", 'enabled = "true"', "shell.enabled"],
      ["shell", "kill_grace_ms = -5", "shell.kill_grace_ms"],
      ["shell", "max_chunk_bytes = 0", "shell.max_chunk_bytes"],
      ["docker", 'enabled = "yes"', "docker.enabled"],
      ["docker", 'socket = ""', "docker.socket"],
      ["docker", "sock = 1", "docker.sock"],
      ["http", 'allow = "http://svc/"', "http.allow"],
      ["http", 'allow = ["ftp://svc/"]', "http.allow[0]"],
      ["http", 'allow = ["http://svc/", "http://169.254.169.254/"]', "http.allow[1]"],
      ["http", "timeout_secs = 0", "http.timeout_secs"],
      ["http", "max_redirects = 101", "http.max_redirects"],
      ["nope", "x = 1", "nope"],
    ];
    for (const [section, line, key] of cases) {
      const token = line.startsWith("token") ? "" : 'token = "t"\n';
      const path = file(`[agent]\n${token}${section === "agent" ? "" : `[${section}]\n`}${line}\n`);
      const msg = problem({ file: path });
      expect(msg, `${section}: ${line}`).toContain(`${key}: `);
      expect(msg, `${section}: ${line}`).toContain(`(in ${path})`);
    }
    expect(problem({ file: file('storage = 5\n[agent]\ntoken = "t"\n') })).toMatch(
      /^storage: expected a table \(in /,
    );
  });

  it("says what is wrong in words a user can act on", () => {
    const path = file('[agent]\npool_size = "abc"\ntoken = "t"\n');
    expect(problem({ file: path })).toBe(
      `agent.pool_size: expected a positive integer, got "abc" (in ${path})`,
    );
    expect(problem({ flags: { token: "t", threshold: 0 } })).toBe(
      "agent.threshold: expected a percentage from 1 to 100, got 0 (from --threshold)",
    );
    expect(problem({ env: { SWITCHBOARD_TOKEN: "t", SWITCHBOARD_POOL_SIZE: "many" } })).toBe(
      'agent.pool_size: expected a positive integer, got "many" (from SWITCHBOARD_POOL_SIZE)',
    );
    expect(problem({ env: { SWITCHBOARD_TOKEN: "t", SWITCHBOARD_LABELS: "novalue" } })).toBe(
      'agent.labels: expected k=v pairs separated by commas, got "novalue" (from SWITCHBOARD_LABELS)',
    );
    expect(problem({ env: { SWITCHBOARD_TOKEN: "t", SWITCHBOARD_SHELL_ENABLED: "maybe" } })).toBe(
      'shell.enabled: expected true or false, got "maybe" (from SWITCHBOARD_SHELL_ENABLED)',
    );
    expect(problem({ flags: { token: "t", hub: "h:0" } })).toBe(
      'agent.hub: "h:0" has an invalid port; use 1-65535 (from --hub)',
    );
    expect(problem({ flags: { token: "t", heartbeatInterval: "soon" } })).toMatch(
      /^monitoring\.heartbeat_interval_secs: expected a positive number of seconds.*got "soon" \(from --heartbeat-interval\)$/,
    );
    // Several problems: every one of them, one per line.
    const many = problem({ file: file("[agent]\npool_size = 0\nthreshold = 0\n") });
    expect(many.split("\n")).toHaveLength(2);
  });
});

describe("[shell] policy and limits", () => {
  it("reads the command policy, users, caps and the limits method; everything open by default", () => {
    const open = load({ flags: { token: "t" } }).shell;
    expect(open.limits).toBe("auto");
    expect(open.policy).toMatchObject({
      allow: [],
      deny: [],
      denyArgs: [],
      allowScripts: true,
      envAllow: ["*"],
      secretsAllow: [],
      users: [],
      defaultMemoryMb: 0,
      defaultMaxProcs: 0,
      maxProcs: 32_768,
    });
    expect(open.policy.maxCpus).toBeGreaterThanOrEqual(1);
    expect(open.policy.maxMemoryMb).toBeGreaterThan(0);

    const c = load({
      file: file(`
[agent]
token = "t"
[shell]
enabled = true
allow = ["/usr/bin/*", "/opt/tools/**"]
deny = ["/usr/bin/rm"]
deny_args = ["--force", '^curl .*\\|']
allow_scripts = false
env_allow = ["LANG", "APP_*"]
secrets_allow = ["DEPLOY_*"]
users = ["nobody"]
max_cpus = 1.5
max_memory_mb = 2048
max_procs = 200
default_memory_mb = 512
default_max_procs = 64
limits = "rlimit"
`),
    }).shell;
    expect(c.limits).toBe("rlimit");
    expect(c.policy).toEqual({
      allow: ["/usr/bin/*", "/opt/tools/**"],
      deny: ["/usr/bin/rm"],
      denyArgs: ["--force", "^curl .*\\|"],
      allowScripts: false,
      envAllow: ["LANG", "APP_*"],
      secretsAllow: ["DEPLOY_*"],
      users: ["nobody"],
      maxCpus: 1.5,
      maxMemoryMb: 2048,
      maxProcs: 200,
      defaultMemoryMb: 512,
      defaultMaxProcs: 64,
    });
  });

  it("names the key of every bad [shell] setting", () => {
    const msg = problem({
      file: file(`
[agent]
token = "t"
[shell]
allow = ["usr/bin/*"]
deny = "/bin/rm"
deny_args = ["(unclosed"]
env_allow = ["A-B"]
users = ["bad user"]
limits = "cgroups"
max_cpus = 0
max_memory_mb = 100
default_memory_mb = 200
`),
    });
    expect(msg).toMatch(
      /shell\.allow\[0\]: expected an absolute path glob like "\/usr\/bin\/\*" \(or "\*\*\/name" for a name anywhere\), got "usr\/bin\/\*"/,
    );
    expect(msg).toMatch(/shell\.deny: expected a list of absolute path globs/);
    expect(msg).toMatch(/shell\.deny_args\[0\]: not a valid regular expression/);
    expect(msg).toMatch(/shell\.env_allow\[0\]: expected a variable name glob/);
    expect(msg).toMatch(/shell\.users\[0\]: expected a user name, got "bad user"/);
    expect(msg).toMatch(/shell\.limits: expected "auto", "cgroup", "rlimit" or "off", got "cgroups"/);
    expect(msg).toMatch(/shell\.max_cpus: expected a number of cores from 0\.01 to 4096, got 0/);

    expect(
      problem({
        file: file(`[agent]\ntoken = "t"\n[shell]\nmax_memory_mb = 100\ndefault_memory_mb = 200\n`),
      }),
    ).toMatch(/shell\.default_memory_mb: 200 is above shell\.max_memory_mb \(100\)/);
    expect(
      problem({ file: file(`[agent]\ntoken = "t"\n[shell]\nlimits = "off"\ndefault_max_procs = 10\n`) }),
    ).toMatch(/shell\.default_max_procs: cannot apply with shell\.limits = "off"/);
    expect(problem({ flags: { token: "t", labels: "switchboard.limits=none" } })).toMatch(
      /agent\.labels\.switchboard\.limits: labels starting with "switchboard\." are set by the agent itself/,
    );
  });

  it("warns about users that do not exist on this machine", () => {
    const c = load({ file: file(`[agent]\ntoken = "t"\n[shell]\nusers = ["no-such-user-sb"]\n`) });
    expect(c.warnings.join("\n")).toMatch(/shell\.users: no such user on this machine: no-such-user-sb/);
  });
});

describe("parseHubAddress", () => {
  it("normalizes what users write to host:port", () => {
    expect(parseHubAddress("hub.example.com:7000")).toBe("hub.example.com:7000");
    expect(parseHubAddress("hub.example.com")).toBe("hub.example.com:7000");
    expect(parseHubAddress("http://10.1.2.3:7100/")).toBe("10.1.2.3:7100");
    expect(parseHubAddress(" grpc://h:1 ")).toBe("h:1");
    expect(parseHubAddress("[::1]:7000")).toBe("[::1]:7000");
    expect(parseHubAddress("[::1]")).toBe("[::1]:7000");
  });

  it("rejects what it cannot dial", () => {
    for (const bad of [
      "",
      "https://h:1",
      "ftp://h:1",
      "h:1/path",
      "h:x",
      "h:70000",
      "::1:7000",
      "bad host:1",
    ]) {
      expect(() => parseHubAddress(bad), bad).toThrow();
    }
  });
});
