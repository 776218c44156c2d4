// The agent's configuration: a TOML file (seed 004's sections plus ours), then SWITCHBOARD_* environment
// variables, then flags; later ones win. Validated once, here, into a typed AgentConfig; every error
// names the key and says where the bad value came from (the file, the variable or the flag).
import { existsSync, readFileSync, statSync } from "node:fs";
import { arch, availableParallelism, hostname, platform, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { parse as parseToml } from "smol-toml";
import { z } from "zod";
import { parseDuration } from "../common/duration.js";
import { MAX_AGENT_CONCURRENCY } from "../common/limits.js";
import type { ClientTlsFiles } from "../common/tls.js";
import type { DatasourceConfig, SqlDriver } from "./sql/datasource.js";
import { parseAllowPrefix } from "./executors/http-policy.js";
import type { LimitsMode } from "./executors/confinement.js";
import type { ShellPolicy } from "./executors/shell-policy.js";
import { lookupUser } from "./executors/user-identity.js";
import { parseHubAddress } from "./hub-address.js";

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

export class ConfigError extends Error {
  /** One sentence per problem; `message` is these joined by newlines. */
  readonly problems: string[];
  constructor(problems: string[]) {
    super(problems.join("\n"));
    this.name = "ConfigError";
    this.problems = problems;
  }
}

export type AgentFlags = Record<string, string | number | boolean | string[] | undefined>;

export interface LoadAgentConfigInput {
  file?: string;
  /** Default: process.env. */
  env?: NodeJS.ProcessEnv;
  flags?: AgentFlags;
}

// ---- where a value came from ----

type Origin =
  | { kind: "file"; file: string }
  | { kind: "env"; name: string }
  | { kind: "flag"; name: string }
  | { kind: "default"; what: string };

function describeOrigin(o: Origin | undefined): string {
  if (!o) return "";
  switch (o.kind) {
    case "file":
      return ` (in ${o.file})`;
    case "env":
      return ` (from ${o.name})`;
    case "flag":
      return ` (from ${o.name})`;
    case "default":
      return ` (default: ${o.what})`;
  }
}

// ---- overrides from the environment and flags ----

/** How a string from the environment or a flag is read before validation. */
type OverrideType = "string" | "int" | "bool" | "list" | "labels" | "secs";

interface Override {
  section: string;
  key: string;
  type: OverrideType;
}

const ENV_OVERRIDES: Record<string, Override> = {
  SWITCHBOARD_HUB: { section: "agent", key: "hub", type: "list" },
  SWITCHBOARD_TOKEN: { section: "agent", key: "token", type: "string" },
  SWITCHBOARD_AGENT_ID: { section: "agent", key: "agent_id", type: "string" },
  SWITCHBOARD_POOL: { section: "agent", key: "pool", type: "string" },
  SWITCHBOARD_LABELS: { section: "agent", key: "labels", type: "labels" },
  SWITCHBOARD_SHELL_ENABLED: { section: "shell", key: "enabled", type: "bool" },
  SWITCHBOARD_POOL_SIZE: { section: "agent", key: "pool_size", type: "int" },
  SWITCHBOARD_THRESHOLD: { section: "agent", key: "threshold", type: "int" },
  SWITCHBOARD_TLS_CA: { section: "tls", key: "ca", type: "string" },
  SWITCHBOARD_TLS_CERT: { section: "tls", key: "cert", type: "string" },
  SWITCHBOARD_TLS_KEY: { section: "tls", key: "key", type: "string" },
  SWITCHBOARD_AGENT_PORT: { section: "agent", key: "agent_port", type: "int" },
  SWITCHBOARD_TRANSPORT: { section: "agent", key: "transport", type: "string" },
};

/** Flag keys as commander hands them over (camelCase), with the flag a user typed. */
const FLAG_OVERRIDES: Record<string, Override & { flag: string }> = {
  hub: { section: "agent", key: "hub", type: "list", flag: "--hub" },
  token: { section: "agent", key: "token", type: "string", flag: "--token" },
  tokenFile: { section: "agent", key: "token_file", type: "string", flag: "--token-file" },
  agentId: { section: "agent", key: "agent_id", type: "string", flag: "--agent-id" },
  pool: { section: "agent", key: "pool", type: "string", flag: "--pool" },
  labels: { section: "agent", key: "labels", type: "labels", flag: "--labels" },
  poolSize: { section: "agent", key: "pool_size", type: "int", flag: "--pool-size" },
  threshold: { section: "agent", key: "threshold", type: "int", flag: "--threshold" },
  shell: { section: "shell", key: "enabled", type: "bool", flag: "--shell" },
  dataDir: { section: "agent", key: "data_dir", type: "string", flag: "--data" },
  agentPort: { section: "agent", key: "agent_port", type: "int", flag: "--agent-port" },
  transport: { section: "agent", key: "transport", type: "string", flag: "--transport" },
  hubConcurrency: { section: "agent", key: "hub_concurrency", type: "int", flag: "--hub-concurrency" },
  agentHost: { section: "agent", key: "agent_host", type: "string", flag: "--agent-host" },
  storageDataPath: { section: "storage", key: "data_path", type: "string", flag: "--storage-data" },
  tls: { section: "tls", key: "enabled", type: "bool", flag: "--tls" },
  tlsCa: { section: "tls", key: "ca", type: "string", flag: "--tls-ca" },
  tlsCert: { section: "tls", key: "cert", type: "string", flag: "--tls-cert" },
  tlsKey: { section: "tls", key: "key", type: "string", flag: "--tls-key" },
  tlsServerName: { section: "tls", key: "server_name", type: "string", flag: "--tls-server-name" },
  heartbeatInterval: {
    section: "monitoring",
    key: "heartbeat_interval_secs",
    type: "secs",
    flag: "--heartbeat-interval",
  },
};

const TRUE_WORDS = new Set(["1", "true", "yes", "on"]);
const FALSE_WORDS = new Set(["0", "false", "no", "off"]);

/** Strings become numbers or booleans when they clearly are; anything else is left for validation to name. */
function coerce(value: string | number | boolean | string[], type: OverrideType): unknown {
  if (typeof value !== "string") return value; // commander already typed it (a number, a boolean, a list)
  const s = value.trim();
  switch (type) {
    case "int":
      return /^-?\d+(\.\d+)?$/.test(s) ? Number(s) : value;
    case "bool":
      if (TRUE_WORDS.has(s.toLowerCase())) return true;
      if (FALSE_WORDS.has(s.toLowerCase())) return false;
      return value;
    case "secs":
      // A bare number is seconds, like the file's *_secs keys; "500ms", "2m" are durations.
      if (/^\d+(\.\d+)?$/.test(s)) return Number(s);
      try {
        return parseDuration(s) / 1000;
      } catch {
        return value;
      }
    default:
      return value;
  }
}

// ---- validation ----

function show(v: unknown): string {
  if (v === undefined) return "nothing";
  if (typeof v === "bigint") return `${v}`;
  let s: string | undefined;
  try {
    s = JSON.stringify(v);
  } catch {
    s = undefined;
  }
  s ??= Object.prototype.toString.call(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function check<T>(ok: (v: unknown) => boolean, expected: string): z.ZodType<T> {
  return z.custom<T>((v) => ok(v), { error: (iss) => `expected ${expected}, got ${show(iss.input)}` });
}

/** An integer in [min, max]; the message says whether the type or the range is wrong. */
function integer(kind: string, min: number, max: number, notPositive = false): z.ZodType<number> {
  return z.unknown().transform((v, ctx) => {
    // "a positive integer, got 0" reads better than a range for a value that is not positive at all.
    if (typeof v !== "number" || !Number.isInteger(v) || (notPositive && v < 1)) {
      ctx.addIssue({ code: "custom", message: `expected ${kind}, got ${show(v)}` });
      return z.NEVER;
    }
    if (v < min || v > max) {
      ctx.addIssue({ code: "custom", message: `expected ${kind} from ${min} to ${max}, got ${v}` });
      return z.NEVER;
    }
    return v;
  });
}

const positiveInt = (max: number): z.ZodType<number> => integer("a positive integer", 1, max, true);

const seconds = check<number>(
  (v) => typeof v === "number" && Number.isFinite(v) && v > 0 && v <= 86_400,
  "a positive number of seconds (at most 86400)",
);

const bool = check<boolean>((v) => typeof v === "boolean", "true or false");

const text = check<string>((v) => typeof v === "string" && v.trim() !== "", "a non-empty string");

const NAME = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;
const identifier = (what: string): z.ZodType<string> =>
  check<string>(
    (v) => typeof v === "string" && NAME.test(v),
    `${what} of letters, digits and . _ : @ - (at most 128, starting with a letter or digit)`,
  );

/** Hub addresses: a TOML array or string; from a variable or a flag, comma-separated (items of a repeated flag too). */
const hubList = z.unknown().transform((v, ctx) => {
  if (!Array.isArray(v) && typeof v !== "string") {
    ctx.addIssue({ code: "custom", message: `expected a list of host:port addresses, got ${show(v)}` });
    return z.NEVER;
  }
  const items: unknown[] = typeof v === "string" ? [v] : (v as unknown[]);
  const out: string[] = [];
  items.forEach((item, i) => {
    const path = Array.isArray(v) ? [i] : [];
    if (typeof item !== "string") {
      ctx.addIssue({ code: "custom", message: `expected host:port, got ${show(item)}`, path });
      return;
    }
    for (const part of item.split(",")) {
      if (part.trim() === "" && item.includes(",")) continue; // "a,,b" or a trailing comma
      try {
        out.push(parseHubAddress(part));
      } catch (e) {
        ctx.addIssue({ code: "custom", message: (e as Error).message, path });
      }
    }
  });
  if (out.length === 0 && items.length === 0) {
    ctx.addIssue({ code: "custom", message: "expected at least one host:port, got an empty list" });
  }
  return out;
});

const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/;

/** Labels: a TOML table of strings, or "k=v,k=v" from the environment or a flag (repeatable flag: a list). */
const labelMap = z.unknown().transform((v, ctx) => {
  const out: Record<string, string> = {};
  const bad = (message: string, path: (string | number)[] = []): void =>
    ctx.addIssue({ code: "custom", message, path });
  if (typeof v === "string" || Array.isArray(v)) {
    const items = (typeof v === "string" ? [v] : (v as unknown[])).flatMap((x) =>
      typeof x === "string" ? x.split(",") : [x],
    );
    for (const item of items) {
      if (typeof item !== "string") {
        bad(`expected k=v pairs separated by commas, got ${show(item)}`);
        continue;
      }
      if (item.trim() === "") continue;
      const eq = item.indexOf("=");
      const key = eq > 0 ? item.slice(0, eq).trim() : "";
      if (eq <= 0 || !LABEL_KEY.test(key)) {
        bad(`expected k=v pairs separated by commas, got ${show(item)}`);
        continue;
      }
      out[key] = item.slice(eq + 1).trim();
    }
    return out;
  }
  if (typeof v !== "object" || v === null) {
    bad(`expected a table of strings like { region = "eu" }, got ${show(v)}`);
    return z.NEVER;
  }
  for (const [key, value] of Object.entries(v)) {
    if (!LABEL_KEY.test(key)) bad(`invalid label name; use letters, digits and . _ / -`, [key]);
    else if (typeof value !== "string") bad(`expected a string, got ${show(value)}`, [key]);
    else out[key] = value;
  }
  return out;
});

const MAX_CHUNK_LIMIT = 8 * 1024 * 1024;

// No prefault here: the loader always fills agent_id (the host name by default), so the section exists.
const agentSection = z.strictObject({
  agent_id: identifier("a name"),
  hub: hubList.optional(),
  // Seed 004's name for the hub address, and seed 003's (usually written "http://host:7000").
  master_host: hubList.optional(),
  master_endpoint: hubList.optional(),
  token: text.optional(),
  token_file: text.optional(),
  pool: identifier("a pool name").default("default"),
  labels: labelMap.default({}),
  platform: text.default(`${platform()}-${arch()}`),
  max_storage_nodes: integer("an integer", 0, 10_000).default(10),
  pool_size: positiveInt(MAX_AGENT_CONCURRENCY).default(4),
  threshold: integer("a percentage", 1, 100).default(80),
  inbox_capacity: positiveInt(100_000).default(100),
  outbox_capacity: positiveInt(1_000_000).default(1000),
  resume_buffer_mb: positiveInt(64 * 1024).default(64),
  resume_spill_mb: integer("an integer", 0, 1024 * 1024).default(1024),
  data_dir: text.default("./agent-data"),
  transport: check<"grpc" | "http">((v) => v === "grpc" || v === "http", '"grpc" or "http"').default("grpc"),
  hub_concurrency: positiveInt(64).default(2),
  agent_api: bool.default(true),
  agent_port: integer("a port (0: any free one)", 0, 65_535).default(8001),
  agent_host: text.default("127.0.0.1"),
  api_token: text.optional(),
});

const storageSection = z
  .strictObject({
    binary_path: z.string().default(""),
    args: z.array(z.string()).default(["--port", "{port}", "--data", "{data}", "--node-id", "{node_id}"]),
    data_path: text.optional(),
    default_memory_mb: positiveInt(16 * 1024 * 1024).default(2048),
    default_port_range_start: integer("a port", 1, 65_535).default(50_051),
    allowed_binaries: z.array(text).default([]),
    stop_grace_secs: seconds.default(5),
    startup_timeout_secs: seconds.default(20),
    ready_check: z.enum(["tcp", "none"]).default("tcp"),
    restart_backoff_initial_secs: seconds.default(1),
    restart_backoff_max_secs: seconds.default(60),
    crash_loop_restarts: positiveInt(1000).default(3),
    crash_loop_window_secs: seconds.default(60),
    memory_check_interval_secs: seconds.default(2),
    log_max_mb: positiveInt(1024 * 1024).default(10),
    log_files: positiveInt(100).default(3),
    stop_nodes_on_exit: bool.default(false),
  })
  .prefault({});

const monitoringSection = z
  .strictObject({
    heartbeat_interval_secs: seconds.default(5),
    health_check_interval_secs: seconds.default(10),
    restart_failed_nodes: bool.default(true),
    stats_interval_secs: seconds.default(10),
  })
  .prefault({});

/** A list of strings each checked by `ok`, a bad item named by its index. */
function checkedList(expected: string, ok: (s: string) => string | undefined) {
  return z.unknown().transform((v, ctx) => {
    if (!Array.isArray(v)) {
      ctx.addIssue({ code: "custom", message: `expected a list of ${expected}, got ${show(v)}` });
      return z.NEVER;
    }
    const out: string[] = [];
    (v as unknown[]).forEach((item, i) => {
      const problem = typeof item === "string" ? ok(item) : `expected ${expected}, got ${show(item)}`;
      if (problem !== undefined) ctx.addIssue({ code: "custom", message: problem, path: [i] });
      else out.push(item as string);
    });
    return out;
  });
}

const pathGlobs = checkedList('absolute path globs like "/usr/bin/*"', (g) =>
  g.startsWith("/") || g.startsWith("**/")
    ? undefined
    : `expected an absolute path glob like "/usr/bin/*" (or "**/name" for a name anywhere), got ${show(g)}`,
);
const nameGlobs = checkedList('variable name globs like "LANG" or "APP_*"', (g) =>
  /^[A-Za-z0-9_*?]+$/.test(g)
    ? undefined
    : `expected a variable name glob (letters, digits, _, * and ?), got ${show(g)}`,
);
const patterns = checkedList("regular expressions", (r) => {
  try {
    new RegExp(r);
    return undefined;
  } catch (e) {
    return `not a valid regular expression: ${(e as Error).message}`;
  }
});
const userNames = checkedList("user names", (u) =>
  /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/.test(u) ? undefined : `expected a user name, got ${show(u)}`,
);
const cpuCount = check<number>(
  (v) => typeof v === "number" && Number.isFinite(v) && v >= 0.01 && v <= 4096,
  "a number of cores from 0.01 to 4096",
);

const shellSection = z
  .strictObject({
    enabled: bool.default(false),
    kill_grace_ms: integer("a number of milliseconds", 0, 600_000).default(5000),
    max_chunk_bytes: positiveInt(MAX_CHUNK_LIMIT).default(1024 * 1024),
    pty: bool.default(false),
    allow: pathGlobs.default([]),
    deny: pathGlobs.default([]),
    deny_args: patterns.default([]),
    allow_scripts: bool.default(true),
    env_allow: nameGlobs.default(["*"]),
    secrets_allow: nameGlobs.default([]),
    users: userNames.default([]),
    limits: check<LimitsMode>(
      (v) => v === "auto" || v === "cgroup" || v === "rlimit" || v === "off",
      '"auto", "cgroup", "rlimit" or "off"',
    ).default("auto"),
    max_cpus: cpuCount.default(availableParallelism()),
    max_memory_mb: positiveInt(16 * 1024 * 1024).default(Math.floor(totalmem() / 1024 / 1024)),
    max_procs: positiveInt(4_194_304).default(32_768),
    default_memory_mb: integer("a number of MiB (0: none)", 0, 16 * 1024 * 1024).default(0),
    default_max_procs: integer("a number of processes (0: none)", 0, 4_194_304).default(0),
  })
  .prefault({});

const dockerSection = z
  .strictObject({
    enabled: bool.default(false),
    socket: text.default("/var/run/docker.sock"),
  })
  .prefault({});

/** `[http] allow`: URL prefixes, normalized; a bad item is named by its index. */
const urlPrefixes = z.unknown().transform((v, ctx) => {
  if (!Array.isArray(v)) {
    ctx.addIssue({
      code: "custom",
      message: `expected a list of URL prefixes like ["http://svc.internal:8080/api/"], got ${show(v)}`,
    });
    return z.NEVER;
  }
  const out: string[] = [];
  (v as unknown[]).forEach((item, i) => {
    const p = typeof item === "string" ? parseAllowPrefix(item) : `expected a URL prefix, got ${show(item)}`;
    if (typeof p === "string") ctx.addIssue({ code: "custom", message: p, path: [i] });
    else out.push(p.href);
  });
  return out;
});

const httpSection = z
  .strictObject({
    allow: urlPrefixes.default([]),
    timeout_secs: seconds.default(60),
    max_redirects: integer("an integer", 0, 100).default(10),
  })
  .prefault({});

/** `[files] roots`: absolute directories, normalized; a bad item is named by its index. */
const fileRoots = z.unknown().transform((v, ctx) => {
  if (!Array.isArray(v)) {
    ctx.addIssue({
      code: "custom",
      message: `expected a list of absolute directories like ["/srv/data"], got ${show(v)}`,
    });
    return z.NEVER;
  }
  const out: string[] = [];
  (v as unknown[]).forEach((item, i) => {
    if (typeof item !== "string" || !item.startsWith("/") || item.includes("\0")) {
      ctx.addIssue({ code: "custom", message: `expected an absolute path, got ${show(item)}`, path: [i] });
    } else out.push(resolve(item));
  });
  return out;
});

const filesSection = z
  .strictObject({
    roots: fileRoots.default([]),
    idle_timeout_secs: seconds.default(60),
    partial_ttl_secs: integer("a whole number of seconds", 0, 10 * 365 * 86_400).default(7 * 86_400),
  })
  .prefault({});

const tlsSection = z
  .strictObject({
    /** Default: on when ca or cert is set. */
    enabled: bool.optional(),
    ca: text.optional(),
    cert: text.optional(),
    key: text.optional(),
    server_name: text.optional(),
  })
  .prefault({});

const DRIVERS: Record<string, SqlDriver> = {
  postgres: "postgres",
  postgresql: "postgres",
  mysql: "mysql",
  mariadb: "mysql",
  sqlite: "sqlite",
  sqlite3: "sqlite",
};

/** A duration: seconds as a number, or "500ms", "30s", "2m". */
const durationSecs = z.unknown().transform((v, ctx) => {
  if (typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= 86_400) return v;
  if (typeof v === "string") {
    try {
      const ms = parseDuration(v.trim());
      if (ms >= 0 && ms <= 86_400_000) return ms / 1000;
    } catch {
      // reported below
    }
  }
  ctx.addIssue({
    code: "custom",
    message: `expected seconds (a number) or a duration like "30s" or "500ms" (at most a day), got ${show(v)}`,
  });
  return z.NEVER;
});

const datasourceSchema = z.strictObject({
  driver: check<string>(
    (v) => typeof v === "string" && v in DRIVERS,
    `one of ${Object.keys(DRIVERS)
      .map((d) => `"${d}"`)
      .join(", ")}`,
  ),
  url: text.optional(),
  host: text.optional(),
  port: integer("a port", 1, 65_535).optional(),
  user: text.optional(),
  database: text.optional(),
  password_env: text.optional(),
  password_file: text.optional(),
  path: text.optional(),
  read_only: bool.default(true),
  statement_timeout: durationSecs.default(0),
  pool_size: positiveInt(1000).default(4),
  max_rows: integer("an integer", 0, Number.MAX_SAFE_INTEGER).default(0),
  connect_timeout: durationSecs.default(10),
});

const datasourcesSection = z
  .record(
    check<string>((v) => typeof v === "string" && NAME.test(v), "a datasource name"),
    datasourceSchema,
  )
  .default({});

const fileSchema = z.strictObject({
  agent: agentSection,
  storage: storageSection,
  monitoring: monitoringSection,
  shell: shellSection,
  docker: dockerSection,
  http: httpSection,
  files: filesSection,
  tls: tlsSection,
  datasources: datasourcesSection,
});

const SECTIONS = [
  "agent",
  "storage",
  "monitoring",
  "shell",
  "docker",
  "http",
  "files",
  "tls",
  "datasources",
] as const;

// ---- loading ----

type RawTree = Record<string, unknown>;

class Layers {
  readonly raw: RawTree = {};
  private readonly origins = new Map<string, Origin>();

  setFile(doc: RawTree, file: string): void {
    for (const [section, body] of Object.entries(doc)) {
      this.raw[section] = isTable(body) ? { ...body } : body;
      this.origins.set(section, { kind: "file", file });
      if (isTable(body))
        for (const key of Object.keys(body)) this.origins.set(`${section}.${key}`, { kind: "file", file });
    }
  }

  set(section: string, key: string, value: unknown, origin: Origin): void {
    let body = this.raw[section];
    if (body === undefined) body = this.raw[section] = {};
    if (!isTable(body)) return; // the file made it a non-table: validation reports that
    // Settings that name the same thing in two ways: the later source replaces both.
    for (const sibling of SAME_SETTING[`${section}.${key}`] ?? []) delete body[sibling];
    body[key] = value;
    this.origins.set(`${section}.${key}`, origin);
  }

  originOf(path: readonly PropertyKey[]): Origin | undefined {
    const [section, key] = path;
    if (typeof key === "string") return this.origins.get(`${String(section)}.${key}`);
    return this.origins.get(String(section));
  }
}

const SAME_SETTING: Record<string, string[]> = {
  "agent.token": ["token_file"],
  "agent.token_file": ["token"],
  "agent.hub": ["master_host", "master_endpoint"],
};

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function dotted(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

function readTomlFile(file: string): RawTree {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new ConfigError([`${file}: cannot read the config file: ${(e as Error).message}`]);
  }
  try {
    return parseToml(text);
  } catch (e) {
    const err = e as Error & { line?: number; column?: number };
    const where = err.line ? ` at line ${err.line}, column ${err.column ?? 0}` : "";
    const first = (err.message ?? String(e)).split("\n")[0]!.replace(/^Invalid TOML document:\s*/, "");
    throw new ConfigError([`${file}: invalid TOML${where}: ${first}`]);
  }
}

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
    throw new ConfigError([
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
    throw new ConfigError([`--config: expected a file path, got ${show(configFlag)}`]);
  }
  const file = configFlag ?? input.file;

  const layers = new Layers();
  if (file !== undefined) layers.setFile(readTomlFile(file), file);
  for (const [name, o] of Object.entries(ENV_OVERRIDES)) {
    const value = env[name];
    // An empty variable counts as unset, so `SWITCHBOARD_TOKEN= cmd` cannot smuggle in an empty token.
    if (value === undefined || value === "") continue;
    layers.set(o.section, o.key, coerce(value, o.type), { kind: "env", name });
  }
  for (const [name, o] of Object.entries(FLAG_OVERRIDES)) {
    const value = flags[name];
    if (value === undefined) continue;
    layers.set(o.section, o.key, coerce(value, o.type), { kind: "flag", name: o.flag });
  }
  const agentRaw = layers.raw.agent;
  if (agentRaw === undefined || (isTable(agentRaw) && agentRaw.agent_id === undefined)) {
    layers.set("agent", "agent_id", hostname(), { kind: "default", what: "the host name" });
  }

  const parsed = fileSchema.safeParse(layers.raw);
  const problems: string[] = [];
  const warnings: string[] = [];
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      if (issue.code === "unrecognized_keys") {
        for (const key of issue.keys) {
          const path = [...issue.path, key];
          const what =
            issue.path.length === 0
              ? `unknown section; known sections are ${SECTIONS.map((s) => `[${s}]`).join(", ")}`
              : "unknown key";
          problems.push(`${dotted(path)}: ${what}${describeOrigin(layers.originOf(path))}`);
        }
      } else if (issue.code === "invalid_type" && issue.path.length === 1) {
        problems.push(
          `${dotted(issue.path)}: expected a table${describeOrigin(layers.originOf(issue.path))}`,
        );
      } else {
        problems.push(
          `${dotted(issue.path)}: ${issue.message}${describeOrigin(layers.originOf(issue.path))}`,
        );
      }
    }
    throw new ConfigError(problems);
  }
  const { agent, storage, monitoring, shell, docker, http, tls } = parsed.data;
  const datasources = resolveDatasources(parsed.data.datasources, env, layers, problems, warnings);

  const hubKeys = (["hub", "master_host", "master_endpoint"] as const).filter((k) => agent[k] !== undefined);
  if (hubKeys.length > 1) {
    const extra = hubKeys[hubKeys.length - 1]!;
    problems.push(
      `agent.${extra}: set one of ${hubKeys.join(" and ")} (the hub address under its older names), not several${describeOrigin(layers.originOf(["agent", extra]))}`,
    );
  }
  if (agent.token !== undefined && agent.token_file !== undefined) {
    problems.push(
      `agent.token_file: set either token or token_file, not both${describeOrigin(layers.originOf(["agent", "token_file"]))}`,
    );
  }
  checkShell(shell, agent.labels, layers, problems, warnings);
  let token = "";
  let tokenSource = "";
  if (agent.token !== undefined) {
    token = agent.token.trim();
    tokenSource = sourceName(layers.originOf(["agent", "token"]), "agent.token");
  } else if (agent.token_file !== undefined) {
    const origin = layers.originOf(["agent", "token_file"]);
    const path = resolve(agent.token_file);
    try {
      token = readFileSync(path, "utf8").trim();
      const mode = statSync(path).mode & 0o777;
      if ((mode & 0o077) !== 0) {
        warnings.push(
          `agent.token_file: ${path} can be read by other users (mode ${mode.toString(8)}); chmod 600 it`,
        );
      }
      if (token === "") problems.push(`agent.token_file: ${path} is empty${describeOrigin(origin)}`);
    } catch (e) {
      problems.push(
        `agent.token_file: cannot read ${path}: ${(e as Error).message}${describeOrigin(origin)}`,
      );
    }
    tokenSource = path;
  } else {
    problems.push(
      "agent.token: no agent token; set token or token_file in [agent], SWITCHBOARD_TOKEN, or --token / --token-file",
    );
  }
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    const missing = tls.cert === undefined ? "cert" : "key";
    problems.push(
      `tls.${missing}: a client certificate needs both tls.cert and tls.key${describeOrigin(layers.originOf(["tls", missing === "cert" ? "key" : "cert"]))}`,
    );
  }
  for (const key of ["ca", "cert", "key"] as const) {
    const f = tls[key];
    if (f === undefined) continue;
    try {
      statSync(resolve(f));
    } catch (e) {
      problems.push(
        `tls.${key}: cannot read ${resolve(f)}: ${(e as NodeJS.ErrnoException).code ?? String(e)}${describeOrigin(layers.originOf(["tls", key]))}`,
      );
    }
  }
  const tlsOn = tls.enabled ?? (tls.ca !== undefined || tls.cert !== undefined);
  if (problems.length > 0) throw new ConfigError(problems);
  const tlsFiles: ClientTlsFiles | undefined = tlsOn
    ? {
        ...(tls.ca !== undefined ? { ca: resolve(tls.ca) } : {}),
        ...(tls.cert !== undefined ? { cert: resolve(tls.cert) } : {}),
        ...(tls.key !== undefined ? { key: resolve(tls.key) } : {}),
        ...(tls.server_name !== undefined ? { serverName: tls.server_name } : {}),
      }
    : undefined;

  return {
    agent: {
      agentId: agent.agent_id,
      hub: agent.hub ?? agent.master_host ?? agent.master_endpoint ?? [`127.0.0.1:7000`],
      token,
      pool: agent.pool,
      labels: agent.labels,
      platform: agent.platform,
      maxStorageNodes: agent.max_storage_nodes,
      poolSize: agent.pool_size,
      threshold: agent.threshold,
      inboxCapacity: agent.inbox_capacity,
      outboxCapacity: agent.outbox_capacity,
      dataDir: resolve(agent.data_dir),
      resumeBufferBytes: agent.resume_buffer_mb * 1024 * 1024,
      resumeSpillBytes: agent.resume_spill_mb * 1024 * 1024,
      transport: agent.transport,
      hubConcurrency: agent.hub_concurrency,
      ...(agent.agent_api
        ? {
            api: {
              host: agent.agent_host,
              port: agent.agent_port,
              portIsDefault: layers.originOf(["agent", "agent_port"]) === undefined,
              tokens: [token, ...(agent.api_token !== undefined ? [agent.api_token.trim()] : [])],
            },
          }
        : {}),
    },
    storage: {
      binaryPath: storage.binary_path.trim() === "" ? "" : resolveBinary(storage.binary_path.trim()),
      args: storage.args,
      dataPath: resolve(storage.data_path ?? resolve(agent.data_dir, "nodes")),
      defaultMemoryMb: storage.default_memory_mb,
      defaultPortRangeStart: storage.default_port_range_start,
      allowedBinaries: storage.allowed_binaries.map(resolveBinary),
      stopGraceMs: Math.round(storage.stop_grace_secs * 1000),
      startupTimeoutMs: Math.round(storage.startup_timeout_secs * 1000),
      readyCheck: storage.ready_check,
      backoffInitialMs: Math.round(storage.restart_backoff_initial_secs * 1000),
      backoffMaxMs: Math.round(storage.restart_backoff_max_secs * 1000),
      crashLoopRestarts: storage.crash_loop_restarts,
      crashLoopWindowMs: Math.round(storage.crash_loop_window_secs * 1000),
      memoryCheckIntervalMs: Math.round(storage.memory_check_interval_secs * 1000),
      logMaxBytes: storage.log_max_mb * 1024 * 1024,
      logFiles: storage.log_files,
      stopNodesOnExit: storage.stop_nodes_on_exit,
    },
    monitoring: {
      heartbeatIntervalMs: Math.round(monitoring.heartbeat_interval_secs * 1000),
      healthCheckIntervalMs: Math.round(monitoring.health_check_interval_secs * 1000),
      restartFailedNodes: monitoring.restart_failed_nodes,
      statsIntervalMs: Math.round(monitoring.stats_interval_secs * 1000),
    },
    shell: {
      enabled: shell.enabled,
      killGraceMs: shell.kill_grace_ms,
      maxChunkBytes: shell.max_chunk_bytes,
      pty: shell.pty,
      limits: shell.limits,
      policy: {
        allow: shell.allow,
        deny: shell.deny,
        denyArgs: shell.deny_args,
        allowScripts: shell.allow_scripts,
        envAllow: shell.env_allow,
        secretsAllow: shell.secrets_allow,
        users: shell.users,
        maxCpus: shell.max_cpus,
        maxMemoryMb: shell.max_memory_mb,
        maxProcs: shell.max_procs,
        defaultMemoryMb: shell.default_memory_mb,
        defaultMaxProcs: shell.default_max_procs,
      },
    },
    docker: {
      enabled: docker.enabled,
      // DOCKER_HOST's form (unix:///path) is accepted too.
      socket: resolve(docker.socket.replace(/^unix:\/\//, "")),
    },
    http: {
      allow: http.allow,
      timeoutMs: Math.round(http.timeout_secs * 1000),
      maxRedirects: http.max_redirects,
    },
    files: {
      roots: parsed.data.files.roots,
      idleTimeoutMs: Math.round(parsed.data.files.idle_timeout_secs * 1000),
      partialTtlMs: parsed.data.files.partial_ttl_secs * 1000,
    },
    datasources,
    ...(tlsFiles ? { tls: tlsFiles } : {}),
    sources: { ...(file !== undefined ? { file } : {}), token: tokenSource },
    warnings,
  };
}

/** What the [shell] schema cannot see alone: defaults within caps, limits that can be enforced, users that exist. */
function checkShell(
  shell: z.output<typeof shellSection>,
  labels: Record<string, string>,
  layers: Layers,
  problems: string[],
  warnings: string[],
): void {
  const where = (key: string): string => describeOrigin(layers.originOf(["shell", key]));
  if (shell.default_memory_mb > shell.max_memory_mb) {
    problems.push(
      `shell.default_memory_mb: ${shell.default_memory_mb} is above shell.max_memory_mb (${shell.max_memory_mb})${where("default_memory_mb")}`,
    );
  }
  if (shell.default_max_procs > shell.max_procs) {
    problems.push(
      `shell.default_max_procs: ${shell.default_max_procs} is above shell.max_procs (${shell.max_procs})${where("default_max_procs")}`,
    );
  }
  if (shell.limits === "off") {
    for (const key of ["default_memory_mb", "default_max_procs"] as const) {
      if (shell[key] > 0) problems.push(`shell.${key}: cannot apply with shell.limits = "off"${where(key)}`);
    }
  }
  for (const key of Object.keys(labels)) {
    if (key.startsWith("switchboard.")) {
      problems.push(
        `agent.labels.${key}: labels starting with "switchboard." are set by the agent itself (switchboard.limits)${describeOrigin(layers.originOf(["agent", "labels"]))}`,
      );
    }
  }
  if (shell.users.length > 0 && process.geteuid?.() !== 0) {
    warnings.push(
      `shell.users: the agent does not run as root, so tasks asking to run as ${shell.users.join(", ")} will be refused`,
    );
  }
  const unknown = shell.users.filter((u) => lookupUser(u) === undefined);
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

function sourceName(origin: Origin | undefined, fallback: string): string {
  if (!origin) return fallback;
  if (origin.kind === "file") return `${origin.file} (agent.token)`;
  if (origin.kind === "env" || origin.kind === "flag") return origin.name;
  return fallback;
}

type DatasourceInput = z.output<typeof datasourceSchema>;

/** Checks what the schema cannot (which fields a driver needs) and resolves passwords from env or file. */
function resolveDatasources(
  input: Record<string, DatasourceInput>,
  env: NodeJS.ProcessEnv,
  layers: Layers,
  problems: string[],
  warnings: string[],
): DatasourceConfig[] {
  const out: DatasourceConfig[] = [];
  for (const [name, d] of Object.entries(input)) {
    const key = `datasources.${name}`;
    const where = describeOrigin(layers.originOf(["datasources", name]));
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
