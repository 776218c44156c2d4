// Every setting the hub reads, declared once: its TOML key, environment variable, flag, type, default
// and help. The loader, `switchboard hub --help` and docs/configuration/hub.md are made from it.
import { DEFAULT_MAX_MESSAGE_BYTES } from "../common/grpc-options.js";
import { defineSettings } from "../common/settings.js";
import {
  bool,
  integer,
  listenAddress,
  positiveInt,
  seconds,
  secondsOrZero,
  text,
  check,
} from "../common/setting-types.js";

const httpListen = check<string>(
  (v) => v === "off" || listenAddress.safeParse(v).success,
  'host:port such as 0.0.0.0:7080, or "off"',
);

export const HUB_SETTINGS = defineSettings({
  program: "hub",
  commandFlags: ["config", "logLevel"],
  sections: [
    {
      name: "hub",
      help: "Where the hub listens, where it keeps its data, and the bounds it holds agents and clients to.",
    },
    { name: "monitoring", help: "Agent liveness." },
    { name: "store", help: "What the store keeps." },
    {
      name: "cluster",
      help: "Several hubs on one PostgreSQL store, talking through NATS (needs store.url).",
    },
    {
      name: "nodes",
      help: "Supervised nodes: deadlines of operations forwarded to agents, and rescheduling.",
    },
    { name: "seed000", help: "The seed-000 services (`SendCommand`, `Connect`) on the same listener." },
    {
      name: "tls",
      help: "Without a certificate the hub listens only on loopback addresses, unless `--insecure`.",
    },
  ],
  settings: {
    "hub.listen": {
      schema: listenAddress,
      default: "0.0.0.0:7000",
      input: "string",
      env: "SWITCHBOARD_LISTEN",
      flag: "--listen <host:port>",
      help: "gRPC address for agents and clients; port 0 picks a free one",
    },
    "hub.http_listen": {
      schema: httpListen,
      defaultText: "the listen host, port 7080",
      input: "string",
      env: "SWITCHBOARD_HTTP_LISTEN",
      flag: "--http-listen <host:port>",
      help: 'the agents\' HTTP/1.1 long-poll API; "off": none (if the default port is taken the hub runs without it, saying so)',
    },
    "hub.data_dir": {
      schema: text,
      default: "./data",
      input: "string",
      env: "SWITCHBOARD_DATA",
      flag: "--data <dir>",
      help: "the SQLite store, admin.token and hub.json",
    },
    "hub.queue_limit": {
      schema: positiveInt(10_000_000),
      default: 1000,
      input: "number",
      env: "SWITCHBOARD_QUEUE_LIMIT",
      flag: "--queue-limit <n>",
      help: "tasks waiting per target before RESOURCE_EXHAUSTED",
    },
    "hub.max_message_bytes": {
      schema: integer("a number of bytes", 64 * 1024, 2 ** 31 - 1),
      default: DEFAULT_MAX_MESSAGE_BYTES,
      input: "number",
      flag: "--max-message-bytes <n>",
      help: "larger gRPC messages are refused with RESOURCE_EXHAUSTED",
    },
    "hub.output_window_bytes": {
      // Several output chunks (up to 1 MiB each) in flight: with two, the agent waits for a grant after
      // each one, and a 1 GiB stream ran about 20% slower (bench shell-stdout-1gib, cp-download-1gib).
      schema: integer("a number of bytes", 64 * 1024, 1024 * 1024 * 1024),
      default: 4 * 1024 * 1024,
      input: "number",
      help: "output a task may send ahead of its slowest reader (hub memory per streaming task)",
    },
    "hub.drain_grace_secs": {
      schema: secondsOrZero,
      default: 30,
      input: "secs",
      flag: "--drain-grace <duration>",
      help: "on SIGTERM, how long running tasks may take to finish",
    },
    "hub.resume_grace_secs": {
      schema: secondsOrZero,
      default: 30,
      input: "secs",
      flag: "--resume-grace <duration>",
      help: "a broken agent link: how long its running tasks wait for it to resume (0: no resume)",
    },
    "hub.insecure": {
      schema: bool,
      default: false,
      input: "bool",
      flag: "--insecure",
      help: "serve plaintext on an address other machines can reach",
    },
    // Agents send their headers and small bodies at once; an output batch (<= the message size limit)
    // gets two minutes even on a slow link, and never 15 s without a byte.
    "hub.http_headers_timeout_secs": {
      schema: seconds,
      default: 10,
      input: "secs",
      help: "the agent HTTP API: a request's headers must arrive within this (from its first byte)",
    },
    "hub.http_request_timeout_secs": {
      schema: seconds,
      default: 120,
      input: "secs",
      help: "the agent HTTP API: a whole request must arrive within this (a long poll's wait is not counted)",
    },
    "hub.http_body_idle_timeout_secs": {
      schema: seconds,
      default: 15,
      input: "secs",
      help: "the agent HTTP API: a body that stops arriving for this long is dropped (408)",
    },
    "hub.http_max_unauthenticated": {
      schema: positiveInt(1_000_000),
      default: 256,
      input: "number",
      help: "the agent HTTP API: connections that have not yet presented a valid token, at most",
    },
    "monitoring.heartbeat_interval_secs": {
      schema: seconds,
      default: 5,
      input: "secs",
      flag: "--heartbeat-interval <duration>",
      help: "heartbeat interval asked of agents",
    },
    "monitoring.offline_after_secs": {
      schema: seconds,
      default: 30,
      input: "secs",
      flag: "--offline-after <duration>",
      help: "an agent silent this long is Offline",
    },
    "store.url": {
      schema: text,
      input: "string",
      env: "SWITCHBOARD_STORE",
      flag: "--store <url>",
      help: "keep the hub's state in PostgreSQL (postgres://user@host:5432/db) instead of the SQLite file in hub.data_dir; a password here is never logged, but prefer store.password_file or PGPASSWORD",
    },
    "store.password_file": {
      schema: text,
      input: "string",
      env: "SWITCHBOARD_STORE_PASSWORD_FILE",
      help: "a file holding the PostgreSQL password (its first line), for store.url",
    },
    "store.schema": {
      schema: text,
      default: "switchboard",
      input: "string",
      help: "the PostgreSQL schema the hub owns: its tables and migrations live there",
    },
    "store.pool_size": {
      schema: positiveInt(1000),
      default: 10,
      input: "number",
      help: "PostgreSQL connections the hub keeps open at most",
    },
    "store.output_cap_bytes": {
      schema: integer("a number of bytes", 2, 1024 * 1024 * 1024),
      default: 1024 * 1024,
      input: "number",
      help: "output kept per task (head and tail) for `switchboard logs`",
    },
    "cluster.nats": {
      schema: text,
      input: "string",
      env: "SWITCHBOARD_NATS",
      flag: "--nats <url>",
      help: "join a cluster of hubs: the NATS server(s) they talk through (nats://host:4222, several comma-separated); needs store.url",
    },
    "cluster.hub_id": {
      schema: check<string>(
        (v) => typeof v === "string" && /^[\w.:@-]{1,128}$/.test(v),
        "letters, digits and . _ - @ : (at most 128)",
      ),
      defaultText: "the host name and the listen port (port 0: a random suffix)",
      input: "string",
      env: "SWITCHBOARD_HUB_ID",
      flag: "--hub-id <id>",
      help: "this hub's name in the cluster, unique among its hubs",
    },
    "cluster.advertise": {
      schema: text,
      defaultText: "the host name and the listen port",
      input: "string",
      env: "SWITCHBOARD_ADVERTISE",
      flag: "--advertise <host:port>",
      help: "the address agents and clients should use to reach this hub, shown in `switchboard hubs`",
    },
    "cluster.lease_secs": {
      schema: seconds,
      default: 10,
      input: "secs",
      help: "a hub whose lease row was not renewed for this long is gone (renewed every third of it)",
    },
    "nodes.spawn_timeout_secs": {
      schema: seconds,
      default: 30,
      input: "secs",
      help: "then DEADLINE_EXCEEDED, and the spawn is cancelled on the agent (the agent gives a node 20 s to start)",
    },
    "nodes.stop_timeout_secs": {
      schema: seconds,
      default: 10,
      input: "secs",
      help: "then DEADLINE_EXCEEDED",
    },
    "nodes.status_timeout_secs": {
      schema: seconds,
      default: 5,
      input: "secs",
      help: "then the cached record, marked stale with its age",
    },
    "nodes.reschedule_after_secs": {
      schema: seconds,
      default: 60,
      input: "secs",
      flag: "--reschedule-after <duration>",
      help: "nodes spawned with --reschedule move off an agent offline this long",
    },
    "seed000.tokenless": {
      schema: bool,
      default: false,
      input: "bool",
      flag: "--seed-tokenless",
      help: "accept seed calls without a bearer token: only on a loopback listener or with tls.client_ca (mutual TLS); otherwise the hub refuses to start",
    },
    "seed000.max_message_bytes": {
      // The seed's own server allowed 2 GB - 1 both ways; its clients expect results that large.
      schema: integer("a number of bytes", 64 * 1024, 2_147_483_647),
      default: 2_147_483_647,
      input: "number",
      help: "the largest seed-000 result: SendCommand's answer, a seed worker's QueryResult (the hub's own services keep hub.max_message_bytes)",
    },
    "tls.cert": {
      schema: text,
      input: "string",
      env: "SWITCHBOARD_TLS_CERT",
      flag: "--tls-cert <file>",
      help: "serve TLS with this certificate (PEM, with its chain)",
    },
    "tls.key": {
      schema: text,
      input: "string",
      env: "SWITCHBOARD_TLS_KEY",
      flag: "--tls-key <file>",
      help: "the certificate's private key (PEM)",
    },
    "tls.client_ca": {
      schema: text,
      input: "string",
      env: "SWITCHBOARD_TLS_CLIENT_CA",
      flag: "--tls-client-ca <file>",
      help: "require client certificates signed by this CA (mutual TLS)",
    },
  },
});
