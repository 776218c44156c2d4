// Every setting the agent reads, declared once: its TOML key, environment variable, flag, type, default
// and help. The loader (./config.ts), `switchboard agent --help` and docs/configuration/agent.md are made
// from it. The sections are the grid agent's [agent], [storage] and [monitoring], and ours.
import { resolve } from "node:path";
import { arch, availableParallelism, hostname, platform, totalmem } from "node:os";
import { z } from "zod";
import { MAX_AGENT_CONCURRENCY } from "../common/limits.js";
import { defineSettings, show } from "../common/settings.js";
import {
  bool,
  check,
  checkedList,
  durationSecs,
  identifier,
  integer,
  NAME,
  oneOf,
  positiveInt,
  seconds,
  text,
} from "../common/setting-types.js";
import { parseAllowPrefix } from "./executors/http-policy.js";
import type { LimitsMode } from "./executors/confinement.js";
import { parseHubAddress } from "./hub-address.js";
import type { SqlDriver } from "./executors/sql/index.js";

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

export const DRIVERS: Record<string, SqlDriver> = {
  postgres: "postgres",
  postgresql: "postgres",
  mysql: "mysql",
  mariadb: "mysql",
  sqlite: "sqlite",
  sqlite3: "sqlite",
};

const MAX_CHUNK_LIMIT = 8 * 1024 * 1024;

const datasourceName = check<string>((v) => typeof v === "string" && NAME.test(v), "a datasource name");

export const AGENT_SETTINGS = defineSettings({
  program: "agent",
  commandFlags: ["config", "logLevel"],
  sections: [
    { name: "agent", help: "Who the agent is, which hub it dials and how much work it takes." },
    {
      name: "storage",
      help: "Supervised nodes: the program they run, where their data lives, how they are restarted.",
    },
    { name: "monitoring", help: "Heartbeats, health checks and statistics." },
    {
      name: "shell",
      help: "Shell tasks and terminals, and the command policy (see docs/security.md#the-shell).",
    },
    { name: "http", help: "HTTP tasks; refused (and not announced) while `allow` is empty." },
    { name: "docker", help: "Docker tasks; refused (and not announced) unless enabled." },
    {
      name: "files",
      help: "File tasks (`switchboard cp`); refused (and not announced) while `roots` is empty.",
    },
    {
      name: "tls",
      help: "TLS to the hub: on when `ca` or `cert` is set (or `enabled = true`: the system's CAs).",
    },
    { name: "datasources", help: "SQL datasources, one table each; clients name them (`--db NAME`)." },
  ],
  settings: {
    "agent.agent_id": {
      schema: identifier("a name"),
      default: () => hostname(),
      defaultText: "the host name",
      input: "string",
      env: "SWITCHBOARD_AGENT_ID",
      flag: "--agent-id <id>",
      help: "this agent's id",
    },
    "agent.hub": {
      schema: hubList,
      defaultText: "`127.0.0.1:7000`",
      input: "list",
      env: "SWITCHBOARD_HUB",
      flag: "--hub <host:port>",
      repeatable: true,
      // Seed 004's name for it, and seed 003's (usually written "http://host:7000").
      aliases: ["agent.master_host", "agent.master_endpoint"],
      help: "hub addresses, tried in turn (a flag may repeat, a variable separates them with commas)",
    },
    "agent.token": {
      schema: text,
      input: "string",
      env: "SWITCHBOARD_TOKEN",
      flag: "--token <token>",
      sameAs: ["agent.token_file"],
      hideExample: true,
      help: "the agent token (`switchboard token create --role agent --pool P`)",
    },
    "agent.token_file": {
      schema: text,
      input: "string",
      flag: "--token-file <file>",
      sameAs: ["agent.token"],
      help: "read the token from this file (mode 0600)",
    },
    "agent.pool": {
      schema: identifier("a pool name"),
      default: "default",
      input: "string",
      env: "SWITCHBOARD_POOL",
      flag: "--pool <name>",
      help: "the pool to join",
    },
    "agent.labels": {
      schema: labelMap,
      default: {},
      input: "labels",
      env: "SWITCHBOARD_LABELS",
      flag: "--labels <k=v,...>",
      help: "labels for targeting, e.g. region=eu,gpu=true",
    },
    "agent.platform": {
      schema: text,
      default: () => `${platform()}-${arch()}`,
      defaultText: "the OS and architecture, e.g. `linux-x64`",
      input: "string",
      help: "the platform shown in `switchboard agents`",
    },
    "agent.pool_size": {
      schema: positiveInt(MAX_AGENT_CONCURRENCY),
      default: 4,
      input: "number",
      env: "SWITCHBOARD_POOL_SIZE",
      flag: "--pool-size <n>",
      help: "executors: tasks run at once",
    },
    "agent.threshold": {
      schema: integer("a percentage", 1, 100),
      default: 80,
      input: "number",
      env: "SWITCHBOARD_THRESHOLD",
      flag: "--threshold <percent>",
      help: "outbox fill (percent) above which the agent takes no new work",
    },
    "agent.inbox_capacity": {
      schema: positiveInt(100_000),
      default: 100,
      input: "number",
      help: "tasks waiting for an executor",
    },
    "agent.outbox_capacity": {
      schema: positiveInt(1_000_000),
      default: 1000,
      input: "number",
      help: "task events waiting to be sent",
    },
    "agent.resume_buffer_mb": {
      schema: positiveInt(64 * 1024),
      default: 64,
      input: "number",
      help: "link down: task events held in memory, then spilled to data_dir/spill",
    },
    "agent.resume_spill_mb": {
      schema: integer("an integer", 0, 1024 * 1024),
      default: 1024,
      input: "number",
      help: "...up to this much on disk (0: no file; tasks pause at the memory cap)",
    },
    "agent.data_dir": {
      schema: text,
      default: "./agent-data",
      input: "string",
      flag: "--data <dir>",
      help: "the agent's data dir",
    },
    "agent.max_storage_nodes": {
      schema: integer("an integer", 0, 10_000),
      default: 10,
      input: "number",
      help: "supervised nodes it runs at most (0: none)",
    },
    "agent.transport": {
      schema: oneOf(["grpc", "http"] as const),
      default: "grpc",
      input: "string",
      env: "SWITCHBOARD_TRANSPORT",
      flag: "--transport <grpc|http>",
      help: "grpc: one stream to the hub's gRPC port; http: long-polling on its HTTP port (7080), for networks that let only HTTP/1.1 out",
    },
    "agent.hub_concurrency": {
      schema: positiveInt(64),
      default: 2,
      input: "number",
      flag: "--hub-concurrency <n>",
      help: "http transport: requests in flight to the hub at once",
    },
    "agent.agent_api": {
      schema: bool,
      default: true,
      input: "bool",
      help: "serve the local API (GridAgent gRPC, /healthz, /metrics)",
    },
    "agent.agent_port": {
      schema: integer("a port (0: any free one)", 0, 65_535),
      default: 8001,
      input: "number",
      env: "SWITCHBOARD_AGENT_PORT",
      flag: "--agent-port <port>",
      help: "the local API's port (0: any free one); if the default port is taken the agent runs without it and says so, a port you set that is taken stops it",
    },
    "agent.agent_host": {
      schema: text,
      default: "127.0.0.1",
      input: "string",
      flag: "--agent-host <host>",
      help: "the address the local API listens on",
    },
    "agent.api_token": {
      schema: text,
      input: "string",
      hideExample: true,
      help: "accepted by the local API besides the agent's own token",
    },
    "storage.binary_path": {
      schema: z.string(),
      default: "",
      input: "string",
      help: 'the node program; "": this program\'s `switchboard storage-node`',
    },
    "storage.args": {
      schema: z.array(z.string()),
      default: ["--port", "{port}", "--data", "{data}", "--node-id", "{node_id}"],
      input: "list",
      help: "its arguments; {port}, {data} and {node_id} are filled in",
    },
    "storage.data_path": {
      schema: text,
      defaultText: "`<data_dir>/nodes`",
      input: "string",
      flag: "--storage-data <dir>",
      help: "every node's storage path must be inside it (symlinks checked)",
    },
    "storage.allowed_binaries": {
      schema: z.array(text),
      default: [],
      input: "list",
      help: "other programs a spawn may name (their args fill {port} {data} {node_id})",
    },
    "storage.default_memory_mb": {
      schema: positiveInt(16 * 1024 * 1024),
      default: 2048,
      input: "number",
      help: "RSS of the node's whole process tree; past it: killed, restarted",
    },
    "storage.default_port_range_start": {
      schema: integer("a port", 1, 65_535),
      default: 50_051,
      input: "number",
      help: "a spawn without a port gets the first free one from here",
    },
    "storage.startup_timeout_secs": {
      schema: seconds,
      default: 20,
      input: "secs",
      help: "the node must accept connections on its port by then",
    },
    "storage.ready_check": {
      schema: oneOf(["tcp", "none"] as const),
      default: "tcp",
      input: "string",
      help: '"tcp": running once the port answers from the node\'s own processes; "none": once alive 1 s',
    },
    "storage.stop_grace_secs": {
      schema: seconds,
      default: 5,
      input: "secs",
      help: "SIGTERM to its process group, then SIGKILL",
    },
    "storage.restart_backoff_initial_secs": {
      schema: seconds,
      default: 1,
      input: "secs",
      help: "doubles per restart, up to the max",
    },
    "storage.restart_backoff_max_secs": {
      schema: seconds,
      default: 60,
      input: "secs",
      help: "the longest wait between restarts",
    },
    "storage.crash_loop_restarts": {
      schema: positiveInt(1000),
      default: 3,
      input: "number",
      help: "this many restarts within the window: the agent is Degraded",
    },
    "storage.crash_loop_window_secs": {
      schema: seconds,
      default: 60,
      input: "secs",
      help: "the crash loop's window",
    },
    "storage.memory_check_interval_secs": {
      schema: seconds,
      default: 2,
      input: "secs",
      help: "how often nodes' memory is measured",
    },
    "storage.log_max_mb": {
      schema: positiveInt(1024 * 1024),
      default: 10,
      input: "number",
      help: "each node's stdout/stderr file, rotated (copy and truncate)",
    },
    "storage.log_files": {
      schema: positiveInt(100),
      default: 3,
      input: "number",
      help: "rotated files kept",
    },
    "storage.stop_nodes_on_exit": {
      schema: bool,
      default: false,
      input: "bool",
      help: "false: an agent restart leaves its nodes running and re-adopts them",
    },
    "monitoring.heartbeat_interval_secs": {
      schema: seconds,
      default: 5,
      input: "secs",
      flag: "--heartbeat-interval <duration>",
      help: "until the hub's Welcome names its own",
    },
    "monitoring.health_check_interval_secs": {
      schema: seconds,
      default: 10,
      input: "secs",
      help: "datasource checks (every 3 s while one is down)",
    },
    "monitoring.restart_failed_nodes": {
      schema: bool,
      default: true,
      input: "bool",
      help: "restart nodes that crash",
    },
    "monitoring.stats_interval_secs": {
      schema: seconds,
      default: 10,
      input: "secs",
      help: "the statistics log line",
    },
    "shell.enabled": {
      schema: bool,
      default: false,
      input: "bool",
      env: "SWITCHBOARD_SHELL_ENABLED",
      flag: "--shell",
      help: "shell tasks are refused unless enabled",
    },
    "shell.kill_grace_ms": {
      schema: integer("a number of milliseconds", 0, 600_000),
      default: 5000,
      input: "number",
      help: "SIGTERM -> SIGKILL on cancel or timeout",
    },
    "shell.max_chunk_bytes": {
      schema: positiveInt(MAX_CHUNK_LIMIT),
      default: 1024 * 1024,
      input: "number",
      help: "longer lines are split",
    },
    "shell.pty": {
      schema: bool,
      default: false,
      input: "bool",
      help: "interactive sessions (switchboard shell, exec -it) need true; refused with a message naming this key",
    },
    "shell.allow": {
      schema: pathGlobs,
      default: [],
      input: "list",
      help: 'the boundary: globs on the resolved executable (PATH lookup, symlinks followed: either path may match), e.g. ["/usr/bin/*"]; empty: any program. With * within a path segment, ** across, ? one character. Programs that run others (env, xargs, sudo, busybox, shells, interpreters, awk, find -exec) pass only by an entry naming them exactly',
    },
    "shell.deny": {
      schema: pathGlobs,
      default: [],
      input: "list",
      help: "globs as for allow; deny wins over allow. It catches mistakes; it is not a boundary",
    },
    "shell.deny_args": {
      schema: patterns,
      default: [],
      input: "list",
      help: 'regexes on the argv joined with spaces (a script: "bash -c SCRIPT"); like deny, it catches mistakes, not a boundary',
    },
    "shell.allow_scripts": {
      schema: bool,
      default: true,
      input: "bool",
      help: "false: `bash -c` scripts are refused (a script is opaque to allow/deny); under an allow list a script also needs an entry naming bash",
    },
    "shell.env_allow": {
      schema: nameGlobs,
      default: ["*"],
      input: "list",
      help: "globs on the names of variables a task may set",
    },
    "shell.secrets_allow": {
      schema: nameGlobs,
      default: [],
      input: "list",
      help: "agent variables a task may ask for by name (`--secret NAME`); taken out of every other task's environment, never sent or logged",
    },
    "shell.users": {
      schema: userNames,
      default: [],
      input: "list",
      help: "users a task may run as (`--user`); empty: none. Needs root and setpriv",
    },
    "shell.limits": {
      schema: oneOf<LimitsMode>(["auto", "cgroup", "rlimit", "off"]),
      default: "auto",
      input: "string",
      help: '"auto": cgroups if usable, else "rlimit"; "cgroup" (or refuse to start), "rlimit", "off" (tasks asking for limits are refused)',
    },
    "shell.max_cpus": {
      schema: cpuCount,
      default: () => availableParallelism(),
      defaultText: "the machine's cores",
      input: "number",
      help: "the most cores a task may ask for",
    },
    "shell.max_memory_mb": {
      schema: positiveInt(16 * 1024 * 1024),
      default: () => Math.floor(totalmem() / 1024 / 1024),
      defaultText: "the machine's memory",
      input: "number",
      help: "the most memory a task may ask for",
    },
    "shell.max_procs": {
      schema: positiveInt(4_194_304),
      default: 32_768,
      input: "number",
      help: "the most processes a task may ask for",
    },
    "shell.default_memory_mb": {
      schema: integer("a number of MiB (0: none)", 0, 16 * 1024 * 1024),
      default: 0,
      input: "number",
      help: "applied to tasks that ask for none; 0: no limit",
    },
    "shell.default_max_procs": {
      schema: integer("a number of processes (0: none)", 0, 4_194_304),
      default: 0,
      input: "number",
      help: "applied to tasks that ask for none; 0: no limit",
    },
    "http.allow": {
      schema: urlPrefixes,
      default: [],
      input: "list",
      help: 'URL prefixes tasks may reach, e.g. ["http://svc.internal:8080/api/"]',
    },
    "http.timeout_secs": {
      schema: seconds,
      default: 60,
      input: "secs",
      help: "a request's whole time, body included, when the task sets none",
    },
    "http.max_redirects": {
      schema: integer("an integer", 0, 100),
      default: 10,
      input: "number",
      help: "the most redirects a task may ask to follow",
    },
    "docker.enabled": {
      schema: bool,
      default: false,
      input: "bool",
      help: "docker tasks are refused unless enabled",
    },
    "docker.socket": {
      schema: text,
      default: "/var/run/docker.sock",
      input: "string",
      help: "the Docker Engine API's socket (podman's: /run/podman/podman.sock)",
    },
    "files.roots": {
      schema: fileRoots,
      default: [],
      input: "list",
      help: "absolute directories; every path must lie inside one, symlinks resolved. migrate --copy-data between machines needs them to cover storage.data_path",
    },
    "files.idle_timeout_secs": {
      schema: seconds,
      default: 60,
      input: "secs",
      help: "an upload whose client sends nothing this long fails (its bytes kept for --resume)",
    },
    "files.partial_ttl_secs": {
      schema: integer("a whole number of seconds", 0, 10 * 365 * 86_400),
      default: 7 * 86_400,
      input: "number",
      help: "what an interrupted upload kept for --resume is removed after this long untouched (0: never)",
    },
    "tls.enabled": {
      schema: bool,
      input: "bool",
      flag: "--tls",
      defaultText: "on when ca or cert is set",
      help: "dial the hub with TLS, trusting the system's CAs",
    },
    "tls.ca": {
      schema: text,
      input: "string",
      env: "SWITCHBOARD_TLS_CA",
      flag: "--tls-ca <file>",
      help: "the CA that signed the hub's certificate (PEM)",
    },
    "tls.cert": {
      schema: text,
      input: "string",
      env: "SWITCHBOARD_TLS_CERT",
      flag: "--tls-cert <file>",
      help: "client certificate, for a hub that requires one (mutual TLS)",
    },
    "tls.key": {
      schema: text,
      input: "string",
      env: "SWITCHBOARD_TLS_KEY",
      flag: "--tls-key <file>",
      help: "the client certificate's private key",
    },
    "tls.server_name": {
      schema: text,
      input: "string",
      flag: "--tls-server-name <name>",
      help: "the name to check the hub's certificate against, if not the dialled host",
    },
    datasources: {
      help: "A client names a datasource, or a driver (`postgres`, `mysql`, `sqlite`) for the agent's first datasource of that driver.",
      placeholder: "NAME",
      name: datasourceName,
      example: {
        main: {
          driver: "postgres",
          url: "postgres://reporter@db.internal:5432/sales",
          password_env: "SALES_DB_PASSWORD",
          read_only: true,
          statement_timeout: "5m",
        },
      },
      table: {
        driver: {
          schema: check<string>(
            (v) => typeof v === "string" && v in DRIVERS,
            `one of ${Object.keys(DRIVERS)
              .map((d) => `"${d}"`)
              .join(", ")}`,
          ),
          input: "string",
          required: true,
          help: "postgres, mysql (MariaDB too) or sqlite",
        },
        url: {
          schema: text,
          input: "string",
          help: "postgres://user@host:port/database or mysql://...; or host, port, user, database",
        },
        host: { schema: text, input: "string", help: "the server's host" },
        port: { schema: integer("a port", 1, 65_535), input: "number", help: "the server's port" },
        user: { schema: text, input: "string", help: "the database user" },
        database: { schema: text, input: "string", help: "the database" },
        password_env: {
          schema: text,
          input: "string",
          help: "the variable that holds the password; never logged",
        },
        password_file: { schema: text, input: "string", help: "or a file that holds it (mode 0600)" },
        path: { schema: text, input: "string", help: "sqlite: the database file" },
        read_only: {
          schema: bool,
          default: true,
          input: "bool",
          help: "the database refuses writes, and the agent refuses a user that may do more than read: connect as a least-privilege role (see docs/security.md#databases)",
        },
        statement_timeout: {
          schema: durationSecs,
          default: 0,
          input: "secs",
          help: "0: none. On PostgreSQL it spans reading the whole result",
        },
        pool_size: {
          schema: positiveInt(1000),
          default: 4,
          input: "number",
          help: "connections kept (SQLite: reader threads)",
        },
        max_rows: {
          schema: integer("an integer", 0, Number.MAX_SAFE_INTEGER),
          default: 0,
          input: "number",
          help: "a longer result fails after sending this many rows; 0: no limit",
        },
        connect_timeout: {
          schema: durationSecs,
          default: 10,
          input: "secs",
          help: "how long a connection may take",
        },
      },
    },
  },
});
