// The running agent: wires the link, the pipeline, heartbeats and statistics, and owns the graceful
// shutdown (Goodbye, no more credits, running tasks get their grace, the rest are cancelled, the
// outbox is flushed, the stream half-closed). index.ts's startAgent is the public way in.
import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { hostname } from "node:os";
import { Code, codeName } from "../common/errors.js";
import { newInstanceId } from "../common/ids.js";
import { createLogger, type Logger } from "../common/logger.js";
import { VERSION } from "../common/version.js";
import type { Hello } from "../gen/switchboard/v1/agent.js";
import type { Backoff } from "./link/backoff.js";
import type { AgentConfig } from "./config.js";
import { DockerExecutor } from "./executors/docker/index.js";
import { EchoExecutor } from "./executors/echo/index.js";
import { FileExecutor } from "./executors/file/index.js";
import { HttpExecutor } from "./executors/http/index.js";
import { Confinement, ShellExecutor, type ShellExecutorOptions } from "./executors/shell/index.js";
import { SqlExecutor } from "./executors/sql/index.js";
import { Heartbeater } from "./link/heartbeat.js";
import { startLocalApi, type LocalApi } from "./local-api.js";
import { NodeHost } from "./nodes/node-host.js";
import { AgentLink } from "./link/link.js";
import { Outbox } from "./link/outbox.js";
import { Pipeline } from "./pipeline/pipeline.js";
import { Datasources, loadOpeners } from "./executors/sql/index.js";
import { AgentStats, StatsReporter } from "./stats.js";

export interface Agent {
  readonly agentId: string;
  isConnected(): boolean;
  /** Resolves once a hub session is up; rejects at the deadline, saying what failed last. */
  whenConnected(timeoutMs: number): Promise<void>;
  /** Graceful drain; resolves once the agent is at rest. Calling it again returns the same promise. */
  shutdown(opts?: { graceMs?: number }): Promise<void>;
}

/** Knobs for tests; production uses the defaults. */
export interface AgentTuning {
  backoff?: Backoff;
  welcomeTimeoutMs?: number;
  closeTimeoutMs?: number;
  shell?: Pick<ShellExecutorOptions, "pipeLingerMs" | "killWaitMs" | "idleFlushMs">;
}

type AgentState = "running" | "shutting_down" | "stopped";

export const DEFAULT_SHUTDOWN_GRACE_MS = 30_000;
/** After a Drain the agent keeps the session this long at most for the tasks it still holds. */
const DRAIN_HOLD_MAX_MS = 60 * 60_000;
const FLUSH_MS = 10_000;
/** Stream ends after which the hub will not resume the session: its tasks stop at once. */
const NO_RESUME: ReadonlySet<number> = new Set([Code.UNAUTHENTICATED, Code.PERMISSION_DENIED]);
/** After Goodbye: how long Assigns the hub sent before it read the Goodbye may take to arrive. */
const GOODBYE_SETTLE_MS = 250;

export async function createAgent(
  config: AgentConfig,
  logger?: Logger,
  tuning: AgentTuning = {},
): Promise<Agent> {
  const { agent: cfg } = config;
  const log = (logger ?? createLogger("agent")).child({ agentId: cfg.agentId });
  try {
    await mkdir(cfg.dataDir, { recursive: true });
  } catch (e) {
    throw new Error(`agent.data_dir: cannot create ${cfg.dataDir}: ${(e as Error).message}`);
  }
  for (const w of config.warnings) log.warn(w);
  // Spill files of an earlier run hold events of sessions nobody can resume now.
  const spillDir = join(cfg.dataDir, "spill");
  for (const f of await readdir(spillDir).catch(() => [] as string[])) {
    if (f.endsWith(".spill")) await rm(join(spillDir, f), { force: true });
  }

  const datasources = new Datasources(config.datasources, log, await loadOpeners(config.datasources));
  // The first check runs before the first Hello, so the first heartbeat already tells the truth.
  await datasources.start(config.monitoring.healthCheckIntervalMs);

  let state: AgentState = "running";
  const stats = new AgentStats();
  // The outbox reports to the pipeline, created just below; nothing is pushed before it exists.
  const outbox = new Outbox(
    cfg.outboxCapacity,
    {
      written: (msg) => {
        if (msg.body?.$case === "event" && msg.body.value.event?.$case === "finished") {
          stats.completed += 1;
          stats.lastCompletedTaskId = msg.body.value.taskId;
        }
      },
      shrank: () => p.outboxShrank(),
    },
    undefined,
    {
      memoryBytes: cfg.resumeBufferBytes,
      spillMaxBytes: cfg.resumeSpillBytes,
      ...(cfg.resumeSpillBytes > 0 ? { spillPath: join(spillDir, `outbox-${process.pid}.spill`) } : {}),
    },
  );
  // Nodes of an earlier run are adopted (or restarted) before the first Hello, which lists them. Changes
  // are reported while a session is up; the next Hello and every heartbeat carry the whole table anyway.
  let sessionUp = false;
  const nodes = new NodeHost(config, log, (node) => {
    if (!sessionUp) return;
    outbox.pushUrgent({
      body: {
        $case: "nodeReply",
        value: { id: 0, code: 0, errorMessage: "", nodes: [node], logs: undefined },
      },
    });
  });
  await nodes.start();
  // How shell tasks are tracked and limited (cgroups, else rlimits), decided once; `switchboard agents`
  // shows it as the label switchboard.limits.
  const confinement = config.shell.enabled
    ? await Confinement.open(config.shell.limits, cfg.agentId, log)
    : undefined;
  const files = new FileExecutor({
    agentId: cfg.agentId,
    roots: config.files.roots,
    idleTimeoutMs: config.files.idleTimeoutMs,
    maxChunkBytes: config.shell.maxChunkBytes,
    partialTtlMs: config.files.partialTtlMs,
    partialsFile: join(cfg.dataDir, "partial-uploads.json"),
    logger: log.child({ component: "files" }),
  });
  await files.startSweeping();
  const p = new Pipeline({
    agentId: cfg.agentId,
    poolSize: cfg.poolSize,
    threshold: cfg.threshold,
    inboxCapacity: cfg.inboxCapacity,
    outbox,
    executors: [
      new EchoExecutor(),
      new ShellExecutor({
        enabled: config.shell.enabled,
        agentId: cfg.agentId,
        killGraceMs: config.shell.killGraceMs,
        maxChunkBytes: config.shell.maxChunkBytes,
        pty: config.shell.pty,
        policy: config.shell.policy,
        ...(confinement ? { confinement } : {}),
        ...tuning.shell,
      }),
      new SqlExecutor({ agentId: cfg.agentId, datasources, maxChunkBytes: config.shell.maxChunkBytes }),
      new DockerExecutor({
        enabled: config.docker.enabled,
        agentId: cfg.agentId,
        socket: config.docker.socket,
        maxChunkBytes: config.shell.maxChunkBytes,
      }),
      new HttpExecutor({
        agentId: cfg.agentId,
        allow: config.http.allow,
        defaultTimeoutMs: config.http.timeoutMs,
        maxRedirects: config.http.maxRedirects,
        maxChunkBytes: config.shell.maxChunkBytes,
      }),
      files,
    ],
    stats,
    logger: log,
    datasources,
    nodes,
    nodeCommand: (cmd) => {
      void nodes
        .handle(cmd)
        .then((reply) => outbox.pushUrgent({ body: { $case: "nodeReply", value: reply } }));
    },
  });
  // Test hook, off unless SWITCHBOARD_TEST_HOOKS=1: SIGUSR2 stalls and resumes the pipeline.
  if (process.env.SWITCHBOARD_TEST_HOOKS === "1") {
    let stalled = false;
    process.on("SIGUSR2", () => p.setStalled((stalled = !stalled)));
  }
  const heartbeater = new Heartbeater(
    () => p.heartbeat(),
    (m) => outbox.pushUrgent(m),
  );
  const reporter = new StatsReporter(
    stats,
    () => ({
      running: p.running,
      inboxDepth: p.inboxDepth,
      inboxCapacity: p.inboxCapacity,
      outboxDepth: outbox.depth,
      outboxCapacity: outbox.capacity,
    }),
    log,
    config.monitoring.statsIntervalMs,
  );

  const hello: Hello = {
    agentId: cfg.agentId,
    pool: cfg.pool,
    labels: { ...cfg.labels, ...(confinement ? { "switchboard.limits": confinement.method } : {}) },
    hostname: hostname(),
    platform: cfg.platform,
    version: VERSION,
    taskKinds: [
      "echo",
      ...(config.shell.enabled ? ["shell"] : []),
      ...(datasources.size > 0 ? ["sql"] : []),
      ...(config.docker.enabled ? ["docker"] : []),
      ...(config.http.allow.length > 0 ? ["http"] : []),
      ...(config.files.roots.length > 0 ? ["file"] : []),
    ],
    maxConcurrency: cfg.poolSize,
    instanceId: newInstanceId(),
    acceptsBatches: true,
    resume: undefined,
    nodes: [],
    maxStorageNodes: cfg.maxStorageNodes,
    agentEndpoint: "",
  };
  let api: LocalApi | undefined;
  if (cfg.api) {
    try {
      api = await startLocalApi({ ...cfg.api, nodes, logger: log, metrics: () => localMetrics() });
      hello.agentEndpoint = `${hostname()}:${api.port}`;
    } catch (e) {
      if (!cfg.api.portIsDefault) throw e;
      log.warn(
        { port: cfg.api.port, err: (e as Error).message },
        "the local API's default port is taken: running without it (set agent.agent_port)",
      );
    }
  }

  const link: AgentLink = new AgentLink({
    addresses: cfg.hub,
    token: cfg.token,
    hello,
    resume: () => p.resumeRequest(),
    maxConcurrency: () => p.poolSizeNow,
    nodes: () => nodes.list(),
    outbox,
    logger: log,
    ...(tuning.backoff ? { backoff: tuning.backoff } : {}),
    ...(tuning.welcomeTimeoutMs ? { welcomeTimeoutMs: tuning.welcomeTimeoutMs } : {}),
    ...(tuning.closeTimeoutMs ? { closeTimeoutMs: tuning.closeTimeoutMs } : {}),
    readPauseDepth: 2 * cfg.outboxCapacity + 4 * cfg.poolSize,
    ...(config.tls ? { tls: config.tls } : {}),
    transport: cfg.transport,
    hubConcurrency: cfg.hubConcurrency,
    handler: {
      sessionStarted: (s) => {
        p.beginSession({
          epoch: s.epoch,
          initialOutputWindowBytes: s.welcome.initialOutputWindowBytes,
          maxMessageBytes: s.welcome.maxMessageBytes,
          sessionId: s.welcome.sessionId,
          resumeGraceMs: s.welcome.resumeGraceMs,
          inputOffsets: s.welcome.inputOffsets,
          ...(s.welcome.resume ? { resume: s.welcome.resume } : {}),
        });
        heartbeater.start(s.welcome.heartbeatIntervalMs || config.monitoring.heartbeatIntervalMs);
        sessionUp = true;
      },
      message: (s, msg) => {
        p.handle(s.epoch, msg);
        if (msg.body?.$case === "drain") {
          // The hub wants this session gone: once its tasks have reported, close it and dial the next hub.
          p.whenIdle(DRAIN_HOLD_MAX_MS, s.epoch)
            .then(() => link.release(s.epoch, FLUSH_MS))
            .catch((e: unknown) => log.error({ err: e }, "closing the drained session failed"));
        }
      },
      sessionEnded: (s, end) => {
        heartbeater.stop();
        sessionUp = false;
        // A broken link keeps the tasks for the hub's resume grace; a refusal or a drain does not.
        const hold = state === "running" && !end.drained && !NO_RESUME.has(end.code);
        p.endSession(s.epoch, `${codeName(end.code)}${end.details ? `: ${end.details}` : ""}`, hold);
      },
    },
  });

  function localMetrics(): string {
    const list = nodes.list();
    const lines = [
      "# HELP switchboard_agent_connected 1 while the agent has a session with the hub.",
      "# TYPE switchboard_agent_connected gauge",
      `switchboard_agent_connected ${link.isConnected() ? 1 : 0}`,
      "# HELP switchboard_agent_tasks_running Tasks executing now.",
      "# TYPE switchboard_agent_tasks_running gauge",
      `switchboard_agent_tasks_running ${p.running}`,
      "# HELP switchboard_agent_tasks_completed_total Tasks finished since the agent started.",
      "# TYPE switchboard_agent_tasks_completed_total counter",
      `switchboard_agent_tasks_completed_total ${stats.completed}`,
      "# HELP switchboard_agent_nodes Supervised nodes by status.",
      "# TYPE switchboard_agent_nodes gauge",
    ];
    for (const st of ["starting", "running", "stopping", "stopped", "crashed", "backoff"]) {
      lines.push(`switchboard_agent_nodes{status="${st}"} ${list.filter((n) => n.status === st).length}`);
    }
    lines.push(
      "# HELP switchboard_agent_node_restarts_total Restarts of each supervised node.",
      "# TYPE switchboard_agent_node_restarts_total counter",
    );
    for (const n of list) {
      lines.push(`switchboard_agent_node_restarts_total{node_id="${n.nodeId}"} ${n.restartCount}`);
    }
    return `${lines.join("\n")}\n`;
  }

  log.info(
    {
      hub: cfg.hub,
      transport: cfg.transport,
      pool: cfg.pool,
      labels: cfg.labels,
      poolSize: cfg.poolSize,
      threshold: cfg.threshold,
      shell: config.shell.enabled,
      pty: config.shell.enabled && config.shell.pty,
      ...(confinement ? { limits: confinement.method, limitsNote: confinement.note } : {}),
      docker: config.docker.enabled ? config.docker.socket : false,
      httpAllow: config.http.allow,
      fileRoots: config.files.roots,
      datasources: config.datasources.map((d) => `${d.name} (${d.driver}${d.readOnly ? ", read-only" : ""})`),
      configFile: config.sources.file ?? "",
      tokenFrom: config.sources.token,
      version: VERSION,
    },
    "agent starting",
  );
  link.start();
  reporter.start();

  let stopping: Promise<void> | undefined;
  const shutdown = async (graceMs: number): Promise<void> => {
    state = "shutting_down";
    log.info({ graceMs, holding: p.holding(), connected: link.isConnected() }, "agent shutting down");
    p.stopGranting();
    if (link.isConnected()) {
      outbox.pushUrgent({ body: { $case: "goodbye", value: { reason: "agent shutting down" } } });
    }
    link.stopDialing();
    const deadline = Date.now() + graceMs;
    let idle = await p.whenIdle(graceMs);
    if (idle && link.isConnected() && p.unusedCredits > 0) {
      // The hub may have sent Assigns before it read the Goodbye; they are accepted work: let them
      // arrive and run within the grace, rather than half-close under them.
      await new Promise((r) =>
        setTimeout(r, Math.min(GOODBYE_SETTLE_MS, Math.max(0, deadline - Date.now()))),
      );
      idle = await p.whenIdle(Math.max(0, deadline - Date.now()));
    }
    if (!idle) {
      const n = p.stopAll("shutdown", "agent shutting down");
      log.warn({ cancelledTasks: n, graceMs }, "shutdown grace over: cancelling the tasks still running");
      const boundMs = config.shell.killGraceMs + 10_000;
      if (!(await p.whenIdle(boundMs))) {
        log.error(
          { holding: p.holding(), waitedMs: boundMs },
          "some tasks did not end after they were cancelled",
        );
      }
    }
    await link.close(FLUSH_MS);
    await api?.close();
    await nodes.close();
    confinement?.close();
    await datasources.close();
    await files.stopSweeping();
    outbox.close();
    heartbeater.stop();
    reporter.stop();
    reporter.logNow();
    state = "stopped";
    log.info({ state }, "agent stopped");
  };

  return {
    agentId: cfg.agentId,
    isConnected: () => state !== "stopped" && link.isConnected(),
    whenConnected: (timeoutMs) => link.whenConnected(timeoutMs),
    shutdown: (opts) => (stopping ??= shutdown(opts?.graceMs ?? DEFAULT_SHUTDOWN_GRACE_MS)),
  };
}
