// The agent's configuration: its settings table (./settings.ts) loaded from a TOML file (seed 004's
// sections plus ours), the SWITCHBOARD_* environment and flags, then checked as a whole (what no
// single key can say: token or token file, TLS pairs, shell caps, datasource fields) into a typed
// AgentConfig. Every error names the key and says where the bad value came from.
import { existsSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  loadSettings,
  SettingsError,
  type LoadedSettings,
  type LoadInput,
  type SettingValues,
} from "../common/settings.js";
import type { ClientTlsFiles } from "../common/tls.js";
import type { DatasourceConfig } from "./executors/sql/index.js";
import { lookupUser, type LimitsMode, type ShellPolicy } from "./executors/shell/index.js";
import { AGENT_SETTINGS, DRIVERS } from "./settings.js";

export interface AgentConfig {
  agent: {
    agentId: string;
    /** Normalized "host:port" targets, dialled in turn. */
    hub: string[];
    token: string;
    pool: string;
    labels: Record<string, string>;
    platform: string;
    maxStorageNodes: number;
    /** Executors, and the max concurrency announced in Hello. */
    poolSize: number;
    /** Outbox fill, in percent of its capacity, above which credits are withheld. */
    threshold: number;
    inboxCapacity: number;
    /** In events. */
    outboxCapacity: number;
    /** Absolute. */
    dataDir: string;
    /** While the link is down: task events held in memory, then spilled (0: no spill file). */
    resumeBufferBytes: number;
    resumeSpillBytes: number;
    /** "grpc": one bidi stream to the hub's gRPC port; "http": HTTP/1.1 long-polling on its HTTP port. */
    transport: "grpc" | "http";
    /** HTTP transport: requests in flight to the hub at once. */
    hubConcurrency: number;
    /** The local API (GridAgent gRPC, /healthz, /metrics): port (0: any free one), host; undefined: off. */
    api?: { host: string; port: number; portIsDefault: boolean; tokens: string[] };
  };
  storage: {
    /** Empty: this program's own `storage-node`. */
    binaryPath: string;
    /** argv template for the default binary; {port}, {data} and {node_id} are filled in. */
    args: string[];
    /** Absolute. */
    dataPath: string;
    defaultMemoryMb: number;
    defaultPortRangeStart: number;
    allowedBinaries: string[];
    stopGraceMs: number;
    startupTimeoutMs: number;
    readyCheck: "tcp" | "none";
    backoffInitialMs: number;
    backoffMaxMs: number;
    crashLoopRestarts: number;
    crashLoopWindowMs: number;
    memoryCheckIntervalMs: number;
    logMaxBytes: number;
    logFiles: number;
    /** On agent shutdown: stop the nodes (true) or leave them running for the next start to adopt. */
    stopNodesOnExit: boolean;
  };
  monitoring: {
    /** Used until the hub's Welcome names its own interval. */
    heartbeatIntervalMs: number;
    healthCheckIntervalMs: number;
    restartFailedNodes: boolean;
    statsIntervalMs: number;
  };
  shell: {
    enabled: boolean;
    killGraceMs: number;
    maxChunkBytes: number;
    /** Interactive sessions: tasks may ask for a pseudo-terminal (tty). Off unless enabled. */
    pty: boolean;
    /** How tasks are confined: "auto" (cgroups, else rlimit), "cgroup", "rlimit", "off". */
    limits: LimitsMode;
    /** Programs, arguments, scripts, env, secrets, users and limit caps tasks may ask for. */
    policy: ShellPolicy;
  };
  docker: {
    enabled: boolean;
    /** Absolute path of the Docker Engine API's unix socket (Docker's, or podman's compatible one). */
    socket: string;
  };
  http: {
    /** URL prefixes http tasks may reach, normalized; empty: http tasks are refused. */
    allow: string[];
    /** A task's whole-request timeout when it sets none. */
    timeoutMs: number;
    /** The most redirects a task may ask to follow. */
    maxRedirects: number;
  };
  files: {
    /** Absolute, normalized directories file tasks may use; empty: file tasks are refused. */
    roots: string[];
    /** Upload: how long the client may send nothing before the task fails (its bytes kept for resume). */
    idleTimeoutMs: number;
    /** A partial upload nobody resumed this long is removed; 0: kept until resumed. */
    partialTtlMs: number;
  };
  /** `[datasources.NAME]`, passwords resolved; in the file's order. */
  datasources: DatasourceConfig[];
  /** TLS to the hub; absent: plaintext. */
  tls?: ClientTlsFiles;
  /** Where the file and the token came from, for the start-up log (never the token itself). */
  sources: { file?: string; token: string };
  /** Worth a warning at start, e.g. a token file that other users can read. */
  warnings: string[];
}

/** A bad setting; one sentence per problem. */
export { SettingsError as ConfigError };

/** Flags as commander hands them over (camelCase attributes of the flags in the settings table). */
export type AgentFlags = Record<string, string | number | boolean | string[] | undefined>;

export type LoadAgentConfigInput = Omit<LoadInput, "flags"> & { flags?: AgentFlags };

type Values = SettingValues<typeof AGENT_SETTINGS.settings>;
type Loaded = LoadedSettings<typeof AGENT_SETTINGS.settings>;

/** The file seed 004's agent reads from its working directory when it is given no path. */
export const WORKING_DIR_CONFIG_FILE = "agent-config.toml";

export interface ConfigFileChoice {
  file: string;
  /** How it was chosen, for the start-up log. */
  from: "--config" | "argument" | "working directory";
}

/**
 * Which config file the agent reads: --config; else the path given as the command's argument (seed 004
 * starts its agent as `agent path/to/agent-config.toml`); else ./agent-config.toml if it exists, as
 * seed 004's agent does; else none.
 */
export function chooseConfigFile(opts: {
  flag?: string;
  argument?: string;
  cwd?: string;
}): ConfigFileChoice | undefined {
  const { flag, argument } = opts;
  if (flag !== undefined && argument !== undefined && resolve(flag) !== resolve(argument)) {
    throw new SettingsError([
      `--config: names ${flag} while the path argument names ${argument}; give the config file once`,
    ]);
  }
  if (flag !== undefined) return { file: flag, from: "--config" };
  if (argument !== undefined) return { file: argument, from: "argument" };
  const here = join(opts.cwd ?? process.cwd(), WORKING_DIR_CONFIG_FILE);
  return existsSync(here) ? { file: here, from: "working directory" } : undefined;
}

/** Reads, merges and validates the agent's configuration. Throws ConfigError naming every bad key. */
export function loadAgentConfig(input: LoadAgentConfigInput): AgentConfig {
  const env = input.env ?? process.env;
  const flags = input.flags ?? {};
  const configFlag = flags.config;
  if (configFlag !== undefined && typeof configFlag !== "string") {
    throw new SettingsError([`--config: expected a file path, got ${JSON.stringify(configFlag)}`]);
  }
  const file = configFlag ?? input.file;
  const loaded = loadSettings(AGENT_SETTINGS, { env, flags, ...(file !== undefined ? { file } : {}) });
  const { values: v, where } = loaded;
  const problems: string[] = [];
  const warnings: string[] = [];
  const datasources = resolveDatasources(v.datasources, env, loaded, problems, warnings);
  checkShell(v, loaded, problems, warnings);

  let token = "";
  let tokenSource = "";
  if (v["agent.token"] !== undefined && v["agent.token_file"] !== undefined) {
    problems.push(`agent.token_file: set either token or token_file, not both${where("agent.token_file")}`);
  } else if (v["agent.token"] !== undefined) {
    token = v["agent.token"].trim();
    const origin = loaded.origin("agent.token");
    tokenSource =
      origin.kind === "file"
        ? `${origin.file} (agent.token)`
        : origin.kind === "default"
          ? "agent.token"
          : origin.name;
  } else if (v["agent.token_file"] !== undefined) {
    const path = resolve(v["agent.token_file"]);
    try {
      token = readFileSync(path, "utf8").trim();
      const mode = statSync(path).mode & 0o777;
      if ((mode & 0o077) !== 0) {
        warnings.push(
          `agent.token_file: ${path} can be read by other users (mode ${mode.toString(8)}); chmod 600 it`,
        );
      }
      if (token === "") problems.push(`agent.token_file: ${path} is empty${where("agent.token_file")}`);
    } catch (e) {
      problems.push(
        `agent.token_file: cannot read ${path}: ${(e as Error).message}${where("agent.token_file")}`,
      );
    }
    tokenSource = path;
  } else {
    problems.push(
      "agent.token: no agent token; set token or token_file in [agent], SWITCHBOARD_TOKEN, or --token / --token-file",
    );
  }
  const tls = { ca: v["tls.ca"], cert: v["tls.cert"], key: v["tls.key"] };
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    const missing = tls.cert === undefined ? "cert" : "key";
    problems.push(
      `tls.${missing}: a client certificate needs both tls.cert and tls.key${where(missing === "cert" ? "tls.key" : "tls.cert")}`,
    );
  }
  for (const key of ["ca", "cert", "key"] as const) {
    const f = tls[key];
    if (f === undefined) continue;
    try {
      statSync(resolve(f));
    } catch (e) {
      problems.push(
        `tls.${key}: cannot read ${resolve(f)}: ${(e as NodeJS.ErrnoException).code ?? String(e)}${where(`tls.${key}`)}`,
      );
    }
  }
  const tlsOn = v["tls.enabled"] ?? (tls.ca !== undefined || tls.cert !== undefined);
  if (problems.length > 0) throw new SettingsError(problems);
  const serverName = v["tls.server_name"];
  const tlsFiles: ClientTlsFiles | undefined = tlsOn
    ? {
        ...(tls.ca !== undefined ? { ca: resolve(tls.ca) } : {}),
        ...(tls.cert !== undefined ? { cert: resolve(tls.cert) } : {}),
        ...(tls.key !== undefined ? { key: resolve(tls.key) } : {}),
        ...(serverName !== undefined ? { serverName } : {}),
      }
    : undefined;
  const ms = (secs: number): number => Math.round(secs * 1000);
  const dataDir = v["agent.data_dir"];
  const apiToken = v["agent.api_token"];

  return {
    agent: {
      agentId: v["agent.agent_id"],
      hub: v["agent.hub"] ?? [`127.0.0.1:7000`],
      token,
      pool: v["agent.pool"],
      labels: v["agent.labels"],
      platform: v["agent.platform"],
      maxStorageNodes: v["agent.max_storage_nodes"],
      poolSize: v["agent.pool_size"],
      threshold: v["agent.threshold"],
      inboxCapacity: v["agent.inbox_capacity"],
      outboxCapacity: v["agent.outbox_capacity"],
      dataDir: resolve(dataDir),
      resumeBufferBytes: v["agent.resume_buffer_mb"] * 1024 * 1024,
      resumeSpillBytes: v["agent.resume_spill_mb"] * 1024 * 1024,
      transport: v["agent.transport"],
      hubConcurrency: v["agent.hub_concurrency"],
      ...(v["agent.agent_api"]
        ? {
            api: {
              host: v["agent.agent_host"],
              port: v["agent.agent_port"],
              portIsDefault: loaded.origin("agent.agent_port").kind === "default",
              tokens: [token, ...(apiToken !== undefined ? [apiToken.trim()] : [])],
            },
          }
        : {}),
    },
    storage: {
      binaryPath:
        v["storage.binary_path"].trim() === "" ? "" : resolveBinary(v["storage.binary_path"].trim()),
      args: v["storage.args"],
      dataPath: resolve(v["storage.data_path"] ?? resolve(dataDir, "nodes")),
      defaultMemoryMb: v["storage.default_memory_mb"],
      defaultPortRangeStart: v["storage.default_port_range_start"],
      allowedBinaries: v["storage.allowed_binaries"].map(resolveBinary),
      stopGraceMs: ms(v["storage.stop_grace_secs"]),
      startupTimeoutMs: ms(v["storage.startup_timeout_secs"]),
      readyCheck: v["storage.ready_check"],
      backoffInitialMs: ms(v["storage.restart_backoff_initial_secs"]),
      backoffMaxMs: ms(v["storage.restart_backoff_max_secs"]),
      crashLoopRestarts: v["storage.crash_loop_restarts"],
      crashLoopWindowMs: ms(v["storage.crash_loop_window_secs"]),
      memoryCheckIntervalMs: ms(v["storage.memory_check_interval_secs"]),
      logMaxBytes: v["storage.log_max_mb"] * 1024 * 1024,
      logFiles: v["storage.log_files"],
      stopNodesOnExit: v["storage.stop_nodes_on_exit"],
    },
    monitoring: {
      heartbeatIntervalMs: ms(v["monitoring.heartbeat_interval_secs"]),
      healthCheckIntervalMs: ms(v["monitoring.health_check_interval_secs"]),
      restartFailedNodes: v["monitoring.restart_failed_nodes"],
      statsIntervalMs: ms(v["monitoring.stats_interval_secs"]),
    },
    shell: {
      enabled: v["shell.enabled"],
      killGraceMs: v["shell.kill_grace_ms"],
      maxChunkBytes: v["shell.max_chunk_bytes"],
      pty: v["shell.pty"],
      limits: v["shell.limits"],
      policy: {
        allow: v["shell.allow"],
        deny: v["shell.deny"],
        denyArgs: v["shell.deny_args"],
        allowScripts: v["shell.allow_scripts"],
        envAllow: v["shell.env_allow"],
        secretsAllow: v["shell.secrets_allow"],
        users: v["shell.users"],
        maxCpus: v["shell.max_cpus"],
        maxMemoryMb: v["shell.max_memory_mb"],
        maxProcs: v["shell.max_procs"],
        defaultMemoryMb: v["shell.default_memory_mb"],
        defaultMaxProcs: v["shell.default_max_procs"],
      },
    },
    docker: {
      enabled: v["docker.enabled"],
      // DOCKER_HOST's form (unix:///path) is accepted too.
      socket: resolve(v["docker.socket"].replace(/^unix:\/\//, "")),
    },
    http: {
      allow: v["http.allow"],
      timeoutMs: ms(v["http.timeout_secs"]),
      maxRedirects: v["http.max_redirects"],
    },
    files: {
      roots: v["files.roots"],
      idleTimeoutMs: ms(v["files.idle_timeout_secs"]),
      partialTtlMs: v["files.partial_ttl_secs"] * 1000,
    },
    datasources,
    ...(tlsFiles ? { tls: tlsFiles } : {}),
    sources: { ...(file !== undefined ? { file } : {}), token: tokenSource },
    warnings,
  };
}

/** What the [shell] keys cannot say alone: defaults within caps, limits that can be enforced, users that exist. */
function checkShell(v: Values, loaded: Loaded, problems: string[], warnings: string[]): void {
  const where = (key: string): string => loaded.where(`shell.${key}`);
  if (v["shell.default_memory_mb"] > v["shell.max_memory_mb"]) {
    problems.push(
      `shell.default_memory_mb: ${v["shell.default_memory_mb"]} is above shell.max_memory_mb (${v["shell.max_memory_mb"]})${where("default_memory_mb")}`,
    );
  }
  if (v["shell.default_max_procs"] > v["shell.max_procs"]) {
    problems.push(
      `shell.default_max_procs: ${v["shell.default_max_procs"]} is above shell.max_procs (${v["shell.max_procs"]})${where("default_max_procs")}`,
    );
  }
  if (v["shell.limits"] === "off") {
    for (const key of ["default_memory_mb", "default_max_procs"] as const) {
      if (v[`shell.${key}`] > 0)
        problems.push(`shell.${key}: cannot apply with shell.limits = "off"${where(key)}`);
    }
  }
  for (const key of Object.keys(v["agent.labels"])) {
    if (key.startsWith("switchboard.")) {
      problems.push(
        `agent.labels.${key}: labels starting with "switchboard." are set by the agent itself (switchboard.limits)${loaded.where("agent.labels")}`,
      );
    }
  }
  const users = v["shell.users"];
  if (users.length > 0 && process.geteuid?.() !== 0) {
    warnings.push(
      `shell.users: the agent does not run as root, so tasks asking to run as ${users.join(", ")} will be refused`,
    );
  }
  const unknown = users.filter((u) => lookupUser(u) === undefined);
  if (unknown.length > 0) {
    warnings.push(
      `shell.users: no such user on this machine: ${unknown.join(", ")} (tasks naming them are refused)`,
    );
  }
}

/** A path with a slash is made absolute; a bare name is left to PATH. */
function resolveBinary(b: string): string {
  return b.includes("/") ? resolve(b) : b;
}

type DatasourceInput = Values["datasources"][string];

/** Checks what the schema cannot (which fields a driver needs) and resolves passwords from env or file. */
function resolveDatasources(
  input: Record<string, DatasourceInput>,
  env: NodeJS.ProcessEnv,
  loaded: Loaded,
  problems: string[],
  warnings: string[],
): DatasourceConfig[] {
  const out: DatasourceConfig[] = [];
  for (const [name, d] of Object.entries(input)) {
    const key = `datasources.${name}`;
    const where = loaded.where("datasources");
    const driver = DRIVERS[d.driver]!;
    const before = problems.length;
    if (driver === "sqlite") {
      if (d.path === undefined)
        problems.push(`${key}.path: a sqlite datasource needs path (the database file)${where}`);
      for (const k of ["url", "host", "port", "user", "database", "password_env", "password_file"] as const) {
        if (d[k] !== undefined)
          problems.push(`${key}.${k}: not used by a sqlite datasource; set path${where}`);
      }
    } else {
      if (d.path !== undefined)
        problems.push(`${key}.path: only sqlite datasources have a path; set url or host${where}`);
      if (d.url === undefined && d.host === undefined) {
        problems.push(`${key}: a ${driver} datasource needs url or host${where}`);
      }
      if (d.url !== undefined) {
        const scheme = driver === "postgres" ? /^postgres(ql)?:\/\//i : /^(mysql|mariadb):\/\//i;
        if (!scheme.test(d.url) || !URL.canParse(d.url)) {
          problems.push(
            `${key}.url: expected ${driver === "postgres" ? "postgres://" : "mysql://"}user@host:port/database${where}`,
          );
        } else if (/^[a-z]+:\/\/[^/@]*:[^/@]*@/i.test(d.url)) {
          warnings.push(
            `${key}.url: holds a password; put it in password_env or password_file so the config file can be shared`,
          );
        }
      }
    }
    if (d.password_env !== undefined && d.password_file !== undefined) {
      problems.push(`${key}.password_file: set either password_env or password_file, not both${where}`);
    }
    let password: string | undefined;
    if (d.password_env !== undefined) {
      password = env[d.password_env];
      if (password === undefined) {
        problems.push(`${key}.password_env: the environment variable ${d.password_env} is not set${where}`);
      }
    } else if (d.password_file !== undefined) {
      const path = resolve(d.password_file);
      try {
        password = readFileSync(path, "utf8").replace(/\r?\n$/, "");
        if ((statSync(path).mode & 0o077) !== 0) {
          warnings.push(`${key}.password_file: ${path} can be read by other users; chmod 600 it`);
        }
      } catch (e) {
        problems.push(
          `${key}.password_file: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}${where}`,
        );
      }
    }
    if (problems.length > before) continue;
    out.push({
      name,
      driver,
      ...(d.url !== undefined ? { url: d.url } : {}),
      ...(d.host !== undefined ? { host: d.host } : {}),
      ...(d.port !== undefined ? { port: d.port } : {}),
      ...(d.user !== undefined ? { user: d.user } : {}),
      ...(d.database !== undefined ? { database: d.database } : {}),
      ...(password !== undefined ? { password } : {}),
      ...(d.path !== undefined ? { path: resolve(d.path) } : {}),
      readOnly: d.read_only,
      statementTimeoutMs: Math.round(d.statement_timeout * 1000),
      poolSize: d.pool_size,
      maxRows: d.max_rows,
      connectTimeoutMs: Math.round(d.connect_timeout * 1000),
    });
  }
  return out;
}
