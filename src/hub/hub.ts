// Starting and stopping a hub: open the store, make the first admin token, recover what a crash
// left, serve gRPC, and on shutdown drain before closing anything.
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { join } from "node:path";
import { Server } from "@grpc/grpc-js";
import { serverOptions } from "../common/grpc-options.js";
import { listenError, StartupError } from "../common/startup-error.js";
import { serverCredentials } from "../common/tls.js";
import { silentLogger, type Logger } from "../common/logger.js";
import { agentServiceDefinition, clientServiceDefinition } from "../common/codec.js";
import { type AgentServiceServer } from "../gen/switchboard/v1/agent.js";
import { AdminServiceService, NodeServiceService } from "../gen/switchboard/v1/client.js";
import { TokenAuthority } from "./auth.js";
import { ClusterMember } from "./cluster/cluster-member.js";
import { isClusterStore } from "./cluster/cluster-store.js";
import type { RelayHost } from "./cluster/task-relay.js";
import { httpListenOf, redactedUrl, type ClusterConfig, type HubConfig } from "./config.js";
import { Code, SwitchboardError } from "../common/errors.js";
import { errorMessage } from "./store/errors.js";
import { VERSION } from "../common/version.js";
import { startHttpAgentApi, type HttpAgentApi } from "./http-agent-api.js";
import { HubCore } from "./hub-core.js";
import { widenHttp2Windows } from "./http2-windows.js";
import { adminService } from "./services/admin-service.js";
import { nodeService } from "./services/node-service.js";
import { clientService } from "./services/client-service.js";
import {
  AgntServiceService,
  SeedClientServiceService,
  seedMessageLimits,
  seedServices,
} from "./seed000/seed-service.js";
import { openSqliteStore, type Store } from "./store/index.js";
import { openPostgresStore } from "./store/postgres/index.js";

/** Least time a stopping hub waits for a store that cannot write, however long the drain took. */
const STORE_CLOSE_WAIT_MS = 10_000;

export interface Hub {
  readonly address: string;
  /** The agent HTTP API ("host:port"), if it serves one. */
  readonly httpAddress: string | undefined;
  readonly adminTokenFile: string;
  readonly store: Store;
  readonly core: HubCore;
  shutdown(opts?: { graceMs?: number }): Promise<void>;
}

export async function startHub(config: HubConfig, logger: Logger = silentLogger()): Promise<Hub> {
  // Read the certificate files first: a bad one stops the hub before it opens anything.
  const creds = serverCredentials(config.tls);
  try {
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new StartupError(
      `hub.data_dir ${config.dataDir} cannot be created: ${(e as Error).message} (set hub.data_dir to a directory the hub may write)`,
      "hub.data_dir",
      { cause: e },
    );
  }
  // A cluster's hub is named before its store opens: the tasks it inserts are its own.
  const hubId = config.cluster ? clusterHubId(config) : undefined;
  const store = await openStore(config, logger.child({ part: "store" }), hubId);
  const auth = new TokenAuthority(store, logger);
  let adminTokenFile: string;
  try {
    adminTokenFile = await auth.bootstrapAdmin(config.dataDir);
  } catch (e) {
    await store.close({ waitWritableMs: 0 });
    throw new StartupError(
      `hub.data_dir ${config.dataDir}: cannot write the admin token there: ${(e as Error).message} (free space there, or set hub.data_dir to a directory the hub may write)`,
      "hub.data_dir",
      { cause: e },
    );
  }
  const core = new HubCore(config, store, auth, logger);
  await core.recover();

  const server = new Server({
    ...serverOptions(config.maxMessageBytes),
    // Seed 000's results get the seed's own limit; every other call keeps the hub's.
    interceptors: [seedMessageLimits(config.seedMaxMessageBytes, logger)],
  });
  const agentService: AgentServiceServer = { connect: (call) => core.connect(call) };
  server.addService(agentServiceDefinition, agentService);
  server.addService(clientServiceDefinition, clientService(core));
  server.addService(AdminServiceService, adminService(core));
  server.addService(NodeServiceService, nodeService(core));
  // Seed 000's contract on the same port: its method paths (/AgntService, /ClientService) are distinct.
  const seed = seedServices(core, {
    tokenless: config.seedTokenless,
    maxMessageBytes: config.seedMaxMessageBytes,
  });
  server.addService(AgntServiceService, seed.agent);
  server.addService(SeedClientServiceService, seed.client);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(config.listen, creds, (err, p) => (err ? reject(err) : resolve(p)));
  }).catch(async (err: Error) => {
    await store.close();
    throw listenError(
      err,
      "hub.listen",
      config.listen,
      "set hub.listen or --listen to a free address, or port 0 for any free port",
    );
  });
  const host = config.listen.slice(0, config.listen.lastIndexOf(":"));
  const reachable = host === "0.0.0.0" || host === "[::]" || host === "::" ? "127.0.0.1" : host;
  const address = `${reachable}:${port}`;
  widenHttp2Windows(server, logger);
  let httpApi: HttpAgentApi | undefined;
  const http = httpListenOf(config);
  if (http) {
    try {
      httpApi = await startHttpAgentApi(core, {
        listen: http.listen,
        ...(config.tls ? { tls: config.tls } : {}),
        maxMessageBytes: config.maxMessageBytes,
        guards: config.http,
        logger,
      });
    } catch (err) {
      if (!http.isDefault) {
        server.forceShutdown();
        await store.close();
        throw listenError(
          err,
          "hub.http_listen",
          http.listen,
          'set hub.http_listen or --http-listen to a free address, or "off" to serve no HTTP agent API',
        );
      }
      logger.warn(
        { http_listen: http.listen, err: (err as Error).message },
        "the agent HTTP API's default port is taken: running without it (set hub.http_listen)",
      );
    }
  }
  if (config.cluster) {
    try {
      core.cluster = await joinCluster(config.cluster, hubId!, core, store, auth, port, logger);
    } catch (err) {
      await httpApi?.close();
      server.forceShutdown();
      await store.close();
      throw err;
    }
  }
  core.start();

  const hubJson = join(config.dataDir, "hub.json");
  let stopping: Promise<void> | undefined;
  const shutdown = (opts: { graceMs?: number } = {}): Promise<void> => {
    stopping ??= (async () => {
      const graceMs = opts.graceMs ?? config.drainGraceMs;
      const drainEnds = Date.now() + graceMs;
      await core.shutdown(graceMs);
      await core.cluster?.leave();
      await httpApi?.close();
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 3_000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      // What the hub holds for a store that cannot write (task outcomes, output) is saved if it can
      // write again within the drain's grace, and at least STORE_CLOSE_WAIT_MS after the drain.
      await store.close({
        waitWritableMs: graceMs > 0 ? Math.max(drainEnds - Date.now(), STORE_CLOSE_WAIT_MS) : 0,
      });
      rmSync(hubJson, { force: true });
      logger.info("hub stopped");
    })();
    return stopping;
  };
  try {
    writeHubJson(hubJson, {
      address,
      httpAddress: httpApi?.address,
      pid: process.pid,
      startedAt: core.startedAt,
      tls: config.tls !== undefined,
    });
  } catch (e) {
    await shutdown({ graceMs: 0 });
    throw new StartupError(
      `hub.data_dir ${config.dataDir}: cannot write ${hubJson}: ${(e as Error).message} (free space there, or set hub.data_dir to a directory the hub may write)`,
      "hub.data_dir",
      { cause: e },
    );
  }
  logger.info(
    {
      address,
      http_address: httpApi?.address,
      listen: config.listen,
      data: config.dataDir,
      admin_token_file: adminTokenFile,
    },
    "hub listening",
  );
  return { address, httpAddress: httpApi?.address, adminTokenFile, store, core, shutdown };
}

/** Joins the cluster of hubs on the shared store: a start-up error says what is missing. */
async function joinCluster(
  cluster: ClusterConfig,
  hubId: string,
  core: HubCore,
  store: Store,
  auth: TokenAuthority,
  port: number,
  logger: Logger,
): Promise<ClusterMember> {
  if (!isClusterStore(store)) {
    throw new StartupError(
      "cluster.nats: a cluster of hubs needs a PostgreSQL store (store.url)",
      "cluster.nats",
    );
  }
  const member = new ClusterMember(
    cluster,
    hubId,
    store,
    store.location,
    auth,
    () => core.load(),
    VERSION,
    port,
    logger.child({ part: "cluster" }),
  );
  const host: RelayHost = {
    tasks: core.tasks,
    store,
    auth,
    outputWindowBytes: core.config.outputWindowBytes,
    submit: (p, req) => core.submitHere(p, req),
    assertTaskVisible: (p, taskId) => core.assertTaskVisible(p, taskId),
    capacity: (t) => core.scheduler.capacity(t),
    cancel: (p, taskId, reason) => core.cancel(p, taskId, reason),
  };
  try {
    await member.join(host, core.agents, (gone, tasks) => core.adoptTasksOf(gone, tasks));
  } catch (err) {
    const key =
      err instanceof SwitchboardError && err.code === Code.ALREADY_EXISTS ? "cluster.hub_id" : "cluster.nats";
    throw new StartupError(errorMessage(err), key, { cause: err });
  }
  return member;
}

/**
 * This hub's id in its cluster: cluster.hub_id, else the host name and the listen port (with port 0,
 * the host name and a random suffix: the port is not known before the store opens).
 */
function clusterHubId(config: HubConfig): string {
  if (config.cluster?.hubId) return config.cluster.hubId;
  const port = config.listen.slice(config.listen.lastIndexOf(":") + 1);
  return `${hostname()}:${port === "0" ? randomBytes(3).toString("hex") : port}`;
}

/** hub.json, for the CLI on this machine: written whole under a temporary name, then renamed. */
function writeHubJson(file: string, content: Record<string, unknown>): void {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, JSON.stringify(content) + "\n");
    renameSync(tmp, file);
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * The hub's store: PostgreSQL when store.url names one (shared by hubs), else the SQLite file in
 * hub.data_dir. A store that cannot be opened is a start-up error naming its setting.
 */
async function openStore(config: HubConfig, logger: Logger, owner: string | undefined): Promise<Store> {
  const pgStore = config.postgresStore;
  if (pgStore) {
    let password: string | undefined;
    if (pgStore.passwordFile !== undefined) {
      try {
        password = readFileSync(pgStore.passwordFile, "utf8").split("\n")[0]!.trim();
      } catch (e) {
        throw new StartupError(
          `store.password_file ${pgStore.passwordFile} cannot be read: ${(e as Error).message}`,
          "store.password_file",
          { cause: e },
        );
      }
    }
    try {
      return await openPostgresStore({
        url: pgStore.url,
        ...(password !== undefined ? { password } : {}),
        schema: pgStore.schema,
        poolSize: pgStore.poolSize,
        ...(owner !== undefined ? { owner } : {}),
        outputCapBytes: config.outputCapBytes,
        logger,
      });
    } catch (e) {
      throw new StartupError(
        `store.url ${redactedUrl(pgStore.url)}: the store cannot be opened: ${(e as Error).message} (check that PostgreSQL runs there and that the hub's role may use schema ${pgStore.schema})`,
        "store.url",
        { cause: e },
      );
    }
  }
  const dbFile = join(config.dataDir, "switchboard.db");
  try {
    return openSqliteStore(dbFile, { outputCapBytes: config.outputCapBytes, logger });
  } catch (e) {
    throw new StartupError(
      `hub.data_dir ${config.dataDir}: the store ${dbFile} cannot be opened: ${(e as Error).message} (set hub.data_dir to a directory the hub may write, used by no other hub)`,
      "hub.data_dir",
      { cause: e },
    );
  }
}
