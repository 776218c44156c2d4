// The hub's configuration: TOML file < SWITCHBOARD_* environment < flags, validated once here
// into a typed HubConfig. Every error names the key and where its value came from.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parse as parseToml } from "smol-toml";
import { z } from "zod";
import { parseDuration } from "../common/duration.js";
import { DEFAULT_MAX_MESSAGE_BYTES } from "../common/grpc-options.js";
import { isLoopbackHost, type ServerTlsFiles } from "../common/tls.js";

export interface HubConfig {
  listen: string;
  /**
   * The HTTP port: the agent long-poll API. undefined: the listen host with port 7080 (and if that port
   * is taken the hub runs without it, saying so); "off": none.
   */
  httpListen?: string;
  dataDir: string;
  heartbeatIntervalMs: number;
  offlineAfterMs: number;
  queueLimit: number;
  maxMessageBytes: number;
  outputCapBytes: number;
  drainGraceMs: number;
  /** How long an agent whose link broke keeps its tasks, to resume them; 0 ends them at once. */
  resumeGraceMs: number;
  /** Output bytes a task may send ahead of its slowest consumer. */
  outputWindowBytes: number;
  /** Certificate and key to serve TLS with; with clientCa, clients must present a certificate. */
  tls?: ServerTlsFiles;
  /** Serve plaintext on an address other machines can reach (refused without this). */
  insecure: boolean;
  /** Seed-000 calls without a token are accepted; only on a loopback or mutual-TLS listener. */
  seedTokenless: boolean;
  /** Seed 000's results travel as one message: SendCommand's answer, a seed worker's QueryResult. */
  seedMaxMessageBytes: number;
  /** The agent HTTP API's guards against slow clients and clients without a valid token. */
  http: HttpGuards;
  /** Supervised nodes: per-operation deadlines towards agents, and rescheduling off a lost agent. */
  nodes: {
    spawnTimeoutMs: number;
    stopTimeoutMs: number;
    statusTimeoutMs: number;
    rescheduleAfterMs: number;
  };
}

export interface HttpGuards {
  /** [hub] http_headers_timeout_secs: a request's headers must arrive within this (from its first byte). */
  headersTimeoutMs: number;
  /**
   * [hub] http_request_timeout_secs: a whole request (headers and body) must arrive within this. A long
   * poll is not cut: its small body has arrived long before the hub answers it.
   */
  requestTimeoutMs: number;
  /** [hub] http_body_idle_timeout_secs: a body that stops arriving for this long is dropped (408). */
  bodyIdleTimeoutMs: number;
  /** [hub] http_max_unauthenticated: connections that have not yet presented a valid token, at most. */
  maxUnauthenticated: number;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

export const HUB_DEFAULTS: HubConfig = {
  listen: "0.0.0.0:7000",
  dataDir: "./data",
  heartbeatIntervalMs: 5_000,
  offlineAfterMs: 30_000,
  queueLimit: 1000,
  maxMessageBytes: DEFAULT_MAX_MESSAGE_BYTES,
  outputCapBytes: 1024 * 1024,
  drainGraceMs: 30_000,
  resumeGraceMs: 30_000,
  // Several output chunks (up to 1 MiB each) in flight: with two, the agent waits for a grant after each
  // one, and a 1 GiB stream ran about 20% slower (bench shell-stdout-1gib, cp-download-1gib).
  outputWindowBytes: 4 * 1024 * 1024,
  insecure: false,
  seedTokenless: false,
  // The seed's own server allowed 2 GB - 1 both ways; its clients expect results that large.
  seedMaxMessageBytes: 2_147_483_647,
  // Agents send their headers and small bodies at once; an output batch (<= the message size limit)
  // gets two minutes even on a slow link, and never 15 s without a byte.
  http: {
    headersTimeoutMs: 10_000,
    requestTimeoutMs: 120_000,
    bodyIdleTimeoutMs: 15_000,
    maxUnauthenticated: 256,
  },
  nodes: { spawnTimeoutMs: 30_000, stopTimeoutMs: 10_000, statusTimeoutMs: 5_000, rescheduleAfterMs: 60_000 },
};

const positiveInt = z.number().int().positive();
const fileSchema = z
  .object({
    hub: z
      .object({
        listen: z.string().min(1),
        http_listen: z.string().min(1),
        data_dir: z.string().min(1),
        queue_limit: positiveInt,
        max_message_bytes: positiveInt.min(64 * 1024),
        drain_grace_secs: z.number().nonnegative(),
        resume_grace_secs: z.number().nonnegative(),
        output_window_bytes: positiveInt.min(64 * 1024),
        http_headers_timeout_secs: z.number().positive(),
        http_request_timeout_secs: z.number().positive(),
        http_body_idle_timeout_secs: z.number().positive(),
        http_max_unauthenticated: positiveInt,
      })
      .strict()
      .partial(),
    monitoring: z
      .object({ heartbeat_interval_secs: z.number().positive(), offline_after_secs: z.number().positive() })
      .strict()
      .partial(),
    store: z
      .object({ output_cap_bytes: positiveInt.min(2) })
      .strict()
      .partial(),
    tls: z
      .object({ cert: z.string().min(1), key: z.string().min(1), client_ca: z.string().min(1) })
      .strict()
      .partial(),
    seed000: z
      .object({ tokenless: z.boolean(), max_message_bytes: positiveInt.min(64 * 1024).max(2_147_483_647) })
      .strict()
      .partial(),
    nodes: z
      .object({
        spawn_timeout_secs: z.number().positive(),
        stop_timeout_secs: z.number().positive(),
        status_timeout_secs: z.number().positive(),
        reschedule_after_secs: z.number().positive(),
      })
      .strict()
      .partial(),
  })
  .strict()
  .partial();

export interface LoadHubConfigInput {
  file?: string;
  env?: NodeJS.ProcessEnv;
  flags?: Record<string, string | number | boolean | undefined>;
}

interface TlsSettings {
  cert?: string;
  key?: string;
  clientCa?: string;
}

function describeIssues(error: z.ZodError, where: string): string {
  return error.issues
    .map((i) => {
      const key = i.path.join(".") || "(file)";
      if (i.code === "unrecognized_keys")
        return `${[...i.path, ...i.keys].join(".")}: unknown key (${where})`;
      return `${key}: ${i.message} (${where})`;
    })
    .join("\n");
}

function checkListen(value: string, where: string): string {
  if (
    !/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/.test(value) ||
    Number(value.slice(value.lastIndexOf(":") + 1)) > 65535
  ) {
    throw new ConfigError(`hub.listen: expected host:port such as 0.0.0.0:7000, got "${value}" (${where})`);
  }
  return value;
}

function checkHttpListen(value: string, where: string): string {
  if (value === "off") return value;
  try {
    return checkListen(value, where);
  } catch {
    throw new ConfigError(
      `hub.http_listen: expected host:port such as 0.0.0.0:7080, or "off", got "${value}" (${where})`,
    );
  }
}

/** Where the agent HTTP API listens: the setting, else the gRPC listen host on port 7080; undefined: off. */
export function httpListenOf(cfg: HubConfig): { listen: string; isDefault: boolean } | undefined {
  if (cfg.httpListen === "off") return undefined;
  if (cfg.httpListen !== undefined) return { listen: cfg.httpListen, isDefault: false };
  return { listen: `${cfg.listen.slice(0, cfg.listen.lastIndexOf(":"))}:7080`, isDefault: true };
}

function intFrom(key: string, raw: string | number, where: string, min = 1): number {
  const n = typeof raw === "number" ? raw : Number(raw);
  if (!Number.isInteger(n) || n < min) {
    throw new ConfigError(`${key}: expected an integer >= ${min}, got "${raw}" (${where})`);
  }
  return n;
}

function durationFrom(key: string, raw: string | number, where: string, unitMs: number): number {
  try {
    return typeof raw === "number"
      ? Math.round(raw * unitMs)
      : /^\d+(\.\d+)?$/.test(raw)
        ? Math.round(Number(raw) * unitMs)
        : parseDuration(raw);
  } catch (e) {
    throw new ConfigError(`${key}: ${(e as Error).message} (${where})`);
  }
}

export function loadHubConfig(input: LoadHubConfigInput = {}): HubConfig {
  const env = input.env ?? process.env;
  const flags = input.flags ?? {};
  const cfg: HubConfig = {
    ...HUB_DEFAULTS,
    http: { ...HUB_DEFAULTS.http },
    nodes: { ...HUB_DEFAULTS.nodes },
  };

  const file = typeof flags.config === "string" ? flags.config : input.file;
  const tls: TlsSettings = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      throw new ConfigError(
        `cannot read config file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      );
    }
    let raw: unknown;
    try {
      raw = parseToml(text);
    } catch (e) {
      throw new ConfigError(`${file}: invalid TOML: ${(e as Error).message.split("\n")[0]}`);
    }
    const parsed = fileSchema.safeParse(raw);
    if (!parsed.success) throw new ConfigError(describeIssues(parsed.error, `in ${file}`));
    const f = parsed.data;
    const where = `in ${file}`;
    if (f.hub?.listen !== undefined) cfg.listen = checkListen(f.hub.listen, where);
    if (f.hub?.http_listen !== undefined) cfg.httpListen = checkHttpListen(f.hub.http_listen, where);
    if (f.hub?.data_dir !== undefined) cfg.dataDir = f.hub.data_dir;
    if (f.hub?.queue_limit !== undefined) cfg.queueLimit = f.hub.queue_limit;
    if (f.hub?.max_message_bytes !== undefined) cfg.maxMessageBytes = f.hub.max_message_bytes;
    if (f.hub?.drain_grace_secs !== undefined) cfg.drainGraceMs = Math.round(f.hub.drain_grace_secs * 1000);
    if (f.hub?.resume_grace_secs !== undefined)
      cfg.resumeGraceMs = Math.round(f.hub.resume_grace_secs * 1000);
    if (f.hub?.output_window_bytes !== undefined) cfg.outputWindowBytes = f.hub.output_window_bytes;
    if (f.hub?.http_headers_timeout_secs !== undefined)
      cfg.http.headersTimeoutMs = Math.round(f.hub.http_headers_timeout_secs * 1000);
    if (f.hub?.http_request_timeout_secs !== undefined)
      cfg.http.requestTimeoutMs = Math.round(f.hub.http_request_timeout_secs * 1000);
    if (f.hub?.http_body_idle_timeout_secs !== undefined)
      cfg.http.bodyIdleTimeoutMs = Math.round(f.hub.http_body_idle_timeout_secs * 1000);
    if (f.hub?.http_max_unauthenticated !== undefined)
      cfg.http.maxUnauthenticated = f.hub.http_max_unauthenticated;
    if (f.monitoring?.heartbeat_interval_secs !== undefined)
      cfg.heartbeatIntervalMs = Math.round(f.monitoring.heartbeat_interval_secs * 1000);
    if (f.monitoring?.offline_after_secs !== undefined)
      cfg.offlineAfterMs = Math.round(f.monitoring.offline_after_secs * 1000);
    if (f.store?.output_cap_bytes !== undefined) cfg.outputCapBytes = f.store.output_cap_bytes;
    if (f.tls?.cert !== undefined) tls.cert = f.tls.cert;
    if (f.tls?.key !== undefined) tls.key = f.tls.key;
    if (f.tls?.client_ca !== undefined) tls.clientCa = f.tls.client_ca;
    if (f.seed000?.tokenless !== undefined) cfg.seedTokenless = f.seed000.tokenless;
    if (f.seed000?.max_message_bytes !== undefined) cfg.seedMaxMessageBytes = f.seed000.max_message_bytes;
    const n = f.nodes ?? {};
    if (n.spawn_timeout_secs !== undefined)
      cfg.nodes.spawnTimeoutMs = Math.round(n.spawn_timeout_secs * 1000);
    if (n.stop_timeout_secs !== undefined) cfg.nodes.stopTimeoutMs = Math.round(n.stop_timeout_secs * 1000);
    if (n.status_timeout_secs !== undefined)
      cfg.nodes.statusTimeoutMs = Math.round(n.status_timeout_secs * 1000);
    if (n.reschedule_after_secs !== undefined)
      cfg.nodes.rescheduleAfterMs = Math.round(n.reschedule_after_secs * 1000);
  }

  const e = (name: string): string | undefined => (env[name] ? env[name] : undefined);
  if (e("SWITCHBOARD_LISTEN")) cfg.listen = checkListen(e("SWITCHBOARD_LISTEN")!, "from SWITCHBOARD_LISTEN");
  if (e("SWITCHBOARD_HTTP_LISTEN"))
    cfg.httpListen = checkHttpListen(e("SWITCHBOARD_HTTP_LISTEN")!, "from SWITCHBOARD_HTTP_LISTEN");
  if (e("SWITCHBOARD_DATA")) cfg.dataDir = e("SWITCHBOARD_DATA")!;
  if (e("SWITCHBOARD_QUEUE_LIMIT"))
    cfg.queueLimit = intFrom(
      "hub.queue_limit",
      e("SWITCHBOARD_QUEUE_LIMIT")!,
      "from SWITCHBOARD_QUEUE_LIMIT",
    );

  if (e("SWITCHBOARD_TLS_CERT")) tls.cert = e("SWITCHBOARD_TLS_CERT");
  if (e("SWITCHBOARD_TLS_KEY")) tls.key = e("SWITCHBOARD_TLS_KEY");
  if (e("SWITCHBOARD_TLS_CLIENT_CA")) tls.clientCa = e("SWITCHBOARD_TLS_CLIENT_CA");

  if (flags.listen !== undefined) cfg.listen = checkListen(String(flags.listen), "from --listen");
  if (flags.httpListen !== undefined)
    cfg.httpListen = checkHttpListen(String(flags.httpListen), "from --http-listen");
  if (typeof flags.tlsCert === "string") tls.cert = flags.tlsCert;
  if (typeof flags.tlsKey === "string") tls.key = flags.tlsKey;
  if (typeof flags.tlsClientCa === "string") tls.clientCa = flags.tlsClientCa;
  if (flags.insecure === true) cfg.insecure = true;
  if (flags.seedTokenless === true) cfg.seedTokenless = true;
  if (flags.data !== undefined) cfg.dataDir = String(flags.data);
  if (flags.queueLimit !== undefined)
    cfg.queueLimit = intFrom("hub.queue_limit", flags.queueLimit as string | number, "from --queue-limit");
  if (flags.drainGrace !== undefined)
    cfg.drainGraceMs = durationFrom(
      "hub.drain_grace_secs",
      flags.drainGrace as string | number,
      "from --drain-grace",
      1000,
    );
  if (flags.resumeGrace !== undefined)
    cfg.resumeGraceMs = durationFrom(
      "hub.resume_grace_secs",
      flags.resumeGrace as string | number,
      "from --resume-grace",
      1000,
    );
  if (flags.heartbeatInterval !== undefined)
    cfg.heartbeatIntervalMs = durationFrom(
      "monitoring.heartbeat_interval_secs",
      flags.heartbeatInterval as string | number,
      "from --heartbeat-interval",
      1000,
    );
  if (flags.maxMessageBytes !== undefined) {
    cfg.maxMessageBytes = intFrom(
      "hub.max_message_bytes",
      flags.maxMessageBytes as string | number,
      "from --max-message-bytes",
      64 * 1024,
    );
  }
  if (flags.rescheduleAfter !== undefined)
    cfg.nodes.rescheduleAfterMs = durationFrom(
      "nodes.reschedule_after_secs",
      flags.rescheduleAfter as string | number,
      "from --reschedule-after",
      1000,
    );
  if (flags.offlineAfter !== undefined)
    cfg.offlineAfterMs = durationFrom(
      "monitoring.offline_after_secs",
      flags.offlineAfter as string | number,
      "from --offline-after",
      1000,
    );

  if (cfg.offlineAfterMs <= cfg.heartbeatIntervalMs) {
    throw new ConfigError(
      `monitoring.offline_after_secs (${cfg.offlineAfterMs / 1000}) must be longer than monitoring.heartbeat_interval_secs (${cfg.heartbeatIntervalMs / 1000})`,
    );
  }
  if (cfg.http.requestTimeoutMs < cfg.http.headersTimeoutMs) {
    throw new ConfigError(
      `hub.http_request_timeout_secs (${cfg.http.requestTimeoutMs / 1000}) must be at least hub.http_headers_timeout_secs (${cfg.http.headersTimeoutMs / 1000}): a request's headers are part of it`,
    );
  }
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new ConfigError(
      `tls.${tls.cert === undefined ? "cert" : "key"}: TLS needs both a certificate and its key (tls.cert and tls.key, or --tls-cert and --tls-key)`,
    );
  }
  if (tls.clientCa !== undefined && tls.cert === undefined) {
    throw new ConfigError(
      "tls.client_ca: requiring client certificates needs TLS: set tls.cert and tls.key too",
    );
  }
  if (tls.cert !== undefined && tls.key !== undefined) {
    cfg.tls = { cert: resolve(tls.cert), key: resolve(tls.key) };
    if (tls.clientCa !== undefined) cfg.tls.clientCa = resolve(tls.clientCa);
  }
  const host = cfg.listen.slice(0, cfg.listen.lastIndexOf(":"));
  if (cfg.httpListen !== undefined && cfg.httpListen !== "off") {
    const httpHost = cfg.httpListen.slice(0, cfg.httpListen.lastIndexOf(":"));
    if (!cfg.tls && !cfg.insecure && !isLoopbackHost(httpHost)) {
      throw new ConfigError(
        `hub.http_listen: ${cfg.httpListen} can be reached from other machines, and tokens would cross the network in the clear; give a certificate, listen on 127.0.0.1, or pass --insecure`,
      );
    }
  }
  if (!cfg.tls && !cfg.insecure && !isLoopbackHost(host)) {
    throw new ConfigError(
      `hub.listen: ${cfg.listen} can be reached from other machines, and tokens would cross the network in the clear; give a certificate (tls.cert and tls.key, or --tls-cert and --tls-key), listen on 127.0.0.1, or pass --insecure to serve plaintext anyway`,
    );
  }
  if (cfg.seedTokenless && !isLoopbackHost(host) && cfg.tls?.clientCa === undefined) {
    throw new ConfigError(
      `seed000.tokenless: ${cfg.listen} can be reached from other machines; seed-000 calls without a token are allowed only on a loopback listener or with mutual TLS (tls.client_ca)`,
    );
  }
  cfg.dataDir = resolve(cfg.dataDir);
  return cfg;
}
