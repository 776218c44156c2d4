// The hub's configuration: its settings table (./settings.ts) loaded from the TOML file, the
// SWITCHBOARD_* environment and flags, then checked as a whole (what no single key can say) into a
// typed HubConfig. Every error names the key and where its value came from.
import { resolve } from "node:path";
import { loadSettings, SettingsError, type LoadInput } from "../common/settings.js";
import { isLoopbackHost, type ServerTlsFiles } from "../common/tls.js";
import { HUB_SETTINGS } from "./settings.js";

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
  /** PostgreSQL instead of the SQLite file in dataDir; undefined: SQLite. */
  postgresStore?: { url: string; passwordFile?: string; schema: string; poolSize: number };
  /** Member of a cluster of hubs (on the PostgreSQL store, talking through NATS); undefined: alone. */
  cluster?: ClusterConfig;
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

export interface ClusterConfig {
  /** NATS server URLs. */
  nats: string[];
  /** This hub's id; undefined: the host name and the bound listen port. */
  hubId?: string;
  /** The address to show for this hub; undefined: the host name and the bound listen port. */
  advertise?: string;
  /** A lease not renewed for this long is a hub gone. */
  leaseMs: number;
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

/** A bad setting; one sentence per problem. */
export { SettingsError as ConfigError };

export type LoadHubConfigInput = LoadInput;

/** Where the agent HTTP API listens: the setting, else the gRPC listen host on port 7080; undefined: off. */
export function httpListenOf(cfg: HubConfig): { listen: string; isDefault: boolean } | undefined {
  if (cfg.httpListen === "off") return undefined;
  if (cfg.httpListen !== undefined) return { listen: cfg.httpListen, isDefault: false };
  return { listen: `${cfg.listen.slice(0, cfg.listen.lastIndexOf(":"))}:7080`, isDefault: true };
}

const ms = (secs: number): number => Math.round(secs * 1000);

export function loadHubConfig(input: LoadHubConfigInput = {}): HubConfig {
  const flags = input.flags ?? {};
  const file = typeof flags.config === "string" ? flags.config : input.file;
  const { values: v, where } = loadSettings(HUB_SETTINGS, {
    ...input,
    ...(file !== undefined ? { file } : {}),
  });
  const cert = v["tls.cert"];
  const key = v["tls.key"];
  const clientCa = v["tls.client_ca"];
  const problems: string[] = [];
  const cfg: HubConfig = {
    listen: v["hub.listen"],
    ...(v["hub.http_listen"] !== undefined ? { httpListen: v["hub.http_listen"] } : {}),
    dataDir: resolve(v["hub.data_dir"]),
    heartbeatIntervalMs: ms(v["monitoring.heartbeat_interval_secs"]),
    offlineAfterMs: ms(v["monitoring.offline_after_secs"]),
    queueLimit: v["hub.queue_limit"],
    maxMessageBytes: v["hub.max_message_bytes"],
    outputCapBytes: v["store.output_cap_bytes"],
    ...(v["store.url"] !== undefined
      ? {
          postgresStore: {
            url: v["store.url"],
            ...(v["store.password_file"] !== undefined ? { passwordFile: v["store.password_file"] } : {}),
            schema: v["store.schema"],
            poolSize: v["store.pool_size"],
          },
        }
      : {}),
    ...(v["cluster.nats"] !== undefined
      ? {
          cluster: {
            nats: v["cluster.nats"]
              .split(",")
              .map((u) => u.trim())
              .filter(Boolean),
            ...(v["cluster.hub_id"] !== undefined ? { hubId: v["cluster.hub_id"] } : {}),
            ...(v["cluster.advertise"] !== undefined ? { advertise: v["cluster.advertise"] } : {}),
            leaseMs: ms(v["cluster.lease_secs"]),
          },
        }
      : {}),
    drainGraceMs: ms(v["hub.drain_grace_secs"]),
    resumeGraceMs: ms(v["hub.resume_grace_secs"]),
    outputWindowBytes: v["hub.output_window_bytes"],
    insecure: v["hub.insecure"],
    seedTokenless: v["seed000.tokenless"],
    seedMaxMessageBytes: v["seed000.max_message_bytes"],
    http: {
      headersTimeoutMs: ms(v["hub.http_headers_timeout_secs"]),
      requestTimeoutMs: ms(v["hub.http_request_timeout_secs"]),
      bodyIdleTimeoutMs: ms(v["hub.http_body_idle_timeout_secs"]),
      maxUnauthenticated: v["hub.http_max_unauthenticated"],
    },
    nodes: {
      spawnTimeoutMs: ms(v["nodes.spawn_timeout_secs"]),
      stopTimeoutMs: ms(v["nodes.stop_timeout_secs"]),
      statusTimeoutMs: ms(v["nodes.status_timeout_secs"]),
      rescheduleAfterMs: ms(v["nodes.reschedule_after_secs"]),
    },
  };
  const storeUrl = v["store.url"];
  if (storeUrl !== undefined && !/^postgres(ql)?:\/\/./.test(storeUrl)) {
    problems.push(
      `store.url must be a PostgreSQL URL (postgres://user@host:5432/database), not ${JSON.stringify(redactedUrl(storeUrl))}${where("store.url")}`,
    );
  }
  if (storeUrl === undefined && v["store.password_file"] !== undefined) {
    problems.push(
      `store.password_file is for a PostgreSQL store: set store.url too${where("store.password_file")}`,
    );
  }
  const nats = v["cluster.nats"];
  if (nats !== undefined) {
    if (storeUrl === undefined) {
      problems.push(
        `cluster.nats: the hubs of a cluster share their state in PostgreSQL: set store.url (--store postgres://…) too${where("cluster.nats")}`,
      );
    }
    for (const u of cfg.cluster?.nats ?? []) {
      if (!/^(nats|tls|wss?):\/\/[^\s]+$|^[\w.-]+:\d+$/.test(u))
        problems.push(
          `cluster.nats: ${JSON.stringify(redactedUrl(u))} is not a NATS URL (nats://host:4222)${where("cluster.nats")}`,
        );
    }
    if (cfg.cluster?.nats.length === 0)
      problems.push(`cluster.nats: no NATS URL given${where("cluster.nats")}`);
  } else {
    for (const key of ["cluster.hub_id", "cluster.advertise"] as const) {
      if (v[key] !== undefined)
        problems.push(`${key} is for a cluster of hubs: set cluster.nats too${where(key)}`);
    }
  }
  if (cfg.offlineAfterMs <= cfg.heartbeatIntervalMs) {
    problems.push(
      `monitoring.offline_after_secs (${cfg.offlineAfterMs / 1000}) must be longer than monitoring.heartbeat_interval_secs (${cfg.heartbeatIntervalMs / 1000})${where("monitoring.offline_after_secs")}`,
    );
  }
  if (cfg.http.requestTimeoutMs < cfg.http.headersTimeoutMs) {
    problems.push(
      `hub.http_request_timeout_secs (${cfg.http.requestTimeoutMs / 1000}) must be at least hub.http_headers_timeout_secs (${cfg.http.headersTimeoutMs / 1000}): a request's headers are part of it${where("hub.http_request_timeout_secs")}`,
    );
  }
  if ((cert === undefined) !== (key === undefined)) {
    problems.push(
      `tls.${cert === undefined ? "cert" : "key"}: TLS needs both a certificate and its key (tls.cert and tls.key, or --tls-cert and --tls-key)`,
    );
  } else if (clientCa !== undefined && cert === undefined) {
    problems.push("tls.client_ca: requiring client certificates needs TLS: set tls.cert and tls.key too");
  }
  if (cert !== undefined && key !== undefined) {
    cfg.tls = {
      cert: resolve(cert),
      key: resolve(key),
      ...(clientCa !== undefined ? { clientCa: resolve(clientCa) } : {}),
    };
  }
  const plaintextReachable = (address: string): boolean =>
    !cfg.tls && !cfg.insecure && !isLoopbackHost(address.slice(0, address.lastIndexOf(":")));
  if (cfg.httpListen !== undefined && cfg.httpListen !== "off" && plaintextReachable(cfg.httpListen)) {
    problems.push(
      `hub.http_listen: ${cfg.httpListen} can be reached from other machines, and tokens would cross the network in the clear; give a certificate, listen on 127.0.0.1, or pass --insecure`,
    );
  }
  if (plaintextReachable(cfg.listen)) {
    problems.push(
      `hub.listen: ${cfg.listen} can be reached from other machines, and tokens would cross the network in the clear; give a certificate (tls.cert and tls.key, or --tls-cert and --tls-key), listen on 127.0.0.1, or pass --insecure to serve plaintext anyway`,
    );
  }
  const host = cfg.listen.slice(0, cfg.listen.lastIndexOf(":"));
  if (cfg.seedTokenless && !isLoopbackHost(host) && cfg.tls?.clientCa === undefined) {
    problems.push(
      `seed000.tokenless: ${cfg.listen} can be reached from other machines; seed-000 calls without a token are allowed only on a loopback listener or with mutual TLS (tls.client_ca)`,
    );
  }
  if (problems.length > 0) throw new SettingsError(problems);
  return cfg;
}

/** A URL as it may be shown: its password replaced. */
export function redactedUrl(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^:/@]*):[^@/]*@/i, "$1:***@");
}
