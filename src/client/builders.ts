// Builders for task specs, so callers write `shell({ argv })` rather than protobuf unions. Each returns
// the `spec` part of a TaskRequest: spread it and add a target, `{ ...shell({ argv }), target }`.
import type { SubmitRequest } from "../gen/switchboard/v1/client.js";
import { ShellSpec, type TaskSpec, type Target } from "../gen/switchboard/v1/task.js";

/** Where a task may run: one agent, any agent of a pool, or any agent carrying all the labels. */
export interface TargetInput {
  /** That agent, by id. */
  agentId?: string;
  /** The least-loaded healthy agent of this pool. */
  pool?: string;
  /** Any agent whose labels include all of these. */
  labels?: Record<string, string>;
}

/**
 * A task to submit: what it does (a spec from a builder such as {@link shell} or {@link sql}) and where
 * it may run, with its deadline. Every run method of {@link SwitchboardClient} takes one.
 *
 * @example
 * ```ts
 * const req: TaskRequest = { ...shell({ argv: ["uptime"] }), target: { pool: "db" }, timeoutMs: 10_000 };
 * const result = await client.execute(req);
 * ```
 */
export interface TaskRequest {
  /** What the task does; build it with {@link echo}, {@link shell}, {@link sql}, {@link http}, {@link docker} or {@link file}. */
  spec: TaskSpec;
  /** Where it may run. */
  target: TargetInput;
  /** Deadline from submission (queue wait included); 0 or absent: none. */
  timeoutMs?: number;
  /** Queue even when no agent of the target is connected (until the deadline). */
  waitForAgent?: boolean;
  /** Aborting cancels the task on the hub and rejects the call. */
  signal?: AbortSignal;
  /**
   * run() only: the hub cancels the task when the call ends before the task (this process died or lost
   * the hub), for work whose output has nowhere else to go, such as a download. Default: it runs on.
   */
  cancelOnDisconnect?: boolean;
}

/** The parameters of a {@link shell} task: a process on the agent, its environment, user and limits. */
export interface ShellOptions {
  /** argv[0] is looked up on the agent's PATH. Exclusive with `script`. */
  argv?: string[];
  /** Run as `bash -c script`. Exclusive with `argv`. */
  script?: string;
  /** Working directory; default: the agent's. */
  cwd?: string;
  /** Added to the agent's environment. */
  env?: Record<string, string>;
  /** Written to the process (a string as UTF-8), then stdin is closed unless `stdinStream`. */
  stdin?: Uint8Array | string;
  /** The process's own timeout; default: none (the task's deadline still applies). */
  timeoutMs?: number;
  /** On cancel or timeout: SIGTERM, then SIGKILL after this long; default: the agent's (5000). */
  killGraceMs?: number;
  /** Run as this user: one of the agent's `[shell] users` (the agent must run as root). */
  user?: string;
  /** With `user`: one of the user's groups as the primary group; default: the user's own. */
  group?: string;
  /** Limits within the agent's caps; unset fields: the agent's defaults. */
  limits?: ShellLimitsOptions;
  /** Names of the agent's own environment variables to pass in (its `[shell] secrets_allow`); values never travel. */
  secrets?: string[];
  /** Run in a pseudo-terminal (the agent's `[shell] pty` must be on); input and resizes via openInput. */
  tty?: boolean;
  /** The terminal's initial width; default 80 columns. */
  cols?: number;
  /** The terminal's initial height; default 24 rows. */
  rows?: number;
  /** Keep stdin open (after `stdin`) for client.openInput(); its end() closes it. */
  stdinStream?: boolean;
}

/** Resource limits of a {@link shell} task; an unset field: the agent's default. */
export interface ShellLimitsOptions {
  /** A share of cores, e.g. 0.5 (needs cgroups on the agent). */
  cpus?: number;
  /** Memory in MiB; past it the process is killed. */
  memoryMb?: number;
  /** Processes and threads the task may have at once. */
  maxProcs?: number;
}

function bytes(b: Uint8Array | string | undefined): Buffer {
  if (b === undefined) return Buffer.alloc(0);
  if (typeof b === "string") return Buffer.from(b, "utf8");
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * A task that returns its payload (as `Finished.result`): a round trip through the hub and an agent, to
 * check that a target is reachable or to measure the path.
 */
export function echo(payload: Uint8Array | string): Pick<TaskRequest, "spec"> {
  return { spec: { kind: { $case: "echo", value: { payload: bytes(payload) } } } };
}

/**
 * A process on the agent: `argv` (no shell involved) or a bash `script`. Its stdout and stderr stream back
 * as output events; the task succeeds when it exits with 0.
 *
 * @throws TypeError unless exactly one of `argv` (non-empty) and `script` is given.
 * @example
 * ```ts
 * const { info, stdout } = await client.execute({ ...shell({ argv: ["df", "-h"] }), target: { pool: "web" } });
 * console.log(info.exitCode, stdout.toString());
 * ```
 */
export function shell(opts: ShellOptions): Pick<TaskRequest, "spec"> {
  const hasArgv = (opts.argv?.length ?? 0) > 0;
  if (hasArgv === (opts.script !== undefined)) {
    throw new TypeError("shell(): give exactly one of argv (a non-empty list) or script");
  }
  return {
    spec: {
      kind: {
        $case: "shell",
        value: ShellSpec.fromPartial({
          argv: opts.argv ?? [],
          script: opts.script ?? "",
          cwd: opts.cwd ?? "",
          env: opts.env ?? {},
          stdin: bytes(opts.stdin),
          timeoutMs: opts.timeoutMs ?? 0,
          killGraceMs: opts.killGraceMs ?? 0,
          user: opts.user ?? "",
          group: opts.group ?? "",
          ...(opts.limits
            ? {
                limits: {
                  cpus: opts.limits.cpus ?? 0,
                  memoryMb: opts.limits.memoryMb ?? 0,
                  maxProcs: opts.limits.maxProcs ?? 0,
                },
              }
            : {}),
          secrets: opts.secrets ?? [],
          tty: opts.tty ?? false,
          cols: opts.cols ?? 0,
          rows: opts.rows ?? 0,
          stdinStream: opts.stdinStream ?? false,
        }),
      },
    },
  };
}

/** The parameters of a {@link sql} task. The statement runs on the agent; credentials never leave it. */
export interface SqlOptions {
  /** A datasource configured on the agent, or a driver name ("postgres", "mysql", "sqlite"): its first one. */
  datasource: string;
  /** One statement; parameters as $1.. (PostgreSQL, SQLite) or ? (MySQL, SQLite). */
  query: string;
  /** Positional parameters ($1.. or ?), as JSON values. */
  params?: unknown[];
  /** Describe this table (columns, types, keys, indexes) in the result's header. */
  table?: string;
  /** Fail past this many rows (the datasource's own max_rows applies too). */
  maxRows?: number;
  /** Statement timeout; default: the datasource's. */
  timeoutMs?: number;
  /** Rows read from the database at a time; default 500. */
  batchRows?: number;
  /**
   * How rows travel: "ndjson" (default) as JSON arrays that query() yields as rows; "csv" encoded by the
   * agent, which query() yields as bytes ready to write (the cheapest way to a CSV file).
   */
  format?: "ndjson" | "csv";
}

/**
 * A SQL statement on a datasource configured on the agent. The task's stdout is a header line (columns,
 * and the described table) then one JSON array per row; {@link SwitchboardClient.query} parses it.
 *
 * @example
 * ```ts
 * const q = sql({ datasource: "postgres", query: "select id, name from users where id = $1", params: [7] });
 * for await (const ev of client.query({ ...q, target: { pool: "db" } })) {
 *   if (ev.kind === "rows") console.log(ev.rows);
 * }
 * ```
 */
export function sql(opts: SqlOptions): Pick<TaskRequest, "spec"> {
  return {
    spec: {
      kind: {
        $case: "sql",
        value: {
          datasource: opts.datasource,
          query: opts.query,
          paramsJson: opts.params && opts.params.length > 0 ? JSON.stringify(opts.params) : "",
          table: opts.table ?? "",
          maxRows: opts.maxRows ?? 0,
          timeoutMs: opts.timeoutMs ?? 0,
          batchRows: opts.batchRows ?? 0,
          format: opts.format ?? "",
        },
      },
    },
  };
}

/** The parameters of an {@link http} task: a request the agent makes to a service it can reach. */
export interface HttpOptions {
  /** Must start with one of the agent's [http] allow prefixes. */
  url: string;
  /** Default GET. */
  method?: string;
  /** Several values of one header: join them with ", ". Host, Content-Length and framing are the agent's. */
  headers?: Record<string, string>;
  /** The request body (a string as UTF-8); default: none. */
  body?: Uint8Array | string;
  /** The whole request, body included; default: the agent's [http] timeout_secs. */
  timeoutMs?: number;
  /** Decode gzip, deflate and br bodies on the agent (and ask for them with Accept-Encoding). */
  decode?: boolean;
  /** Follow up to this many redirects, each checked against the allowlist; default 0: none. */
  maxRedirects?: number;
  /**
   * The body is sent as the task's input (`client.openInput(taskId)` once it started, then `end()`),
   * streamed to the service as it arrives: any size. A 307 or 308 redirect cannot be followed then.
   */
  bodyFromInput?: boolean;
  /** With bodyFromInput: the body's length, sent as Content-Length (and checked); default: chunked. */
  bodyLength?: number;
}

/**
 * An HTTP request made by the agent. The task's stderr carries the response's status and headers as one
 * JSON line (HttpResponseHead), its stdout the body; Finished.result is JSON {status, bytes, url}.
 */
export function http(opts: HttpOptions): Pick<TaskRequest, "spec"> {
  return {
    spec: {
      kind: {
        $case: "http",
        value: {
          method: opts.method ?? "",
          url: opts.url,
          headers: opts.headers ?? {},
          body: bytes(opts.body),
          timeoutMs: opts.timeoutMs ?? 0,
          decode: opts.decode ?? false,
          maxRedirects: opts.maxRedirects ?? 0,
          bodyFromInput: opts.bodyFromInput ?? false,
          bodyLength: opts.bodyLength ?? 0,
        },
      },
    },
  };
}

/** The Docker operations a {@link docker} task can perform. */
export type DockerOp = "ps" | "images" | "run" | "stop" | "rm" | "logs" | "inspect";

/** The parameters of a {@link docker} task; which fields apply depends on `op` (each says which). */
export interface DockerOptions {
  /** The operation. */
  op: DockerOp;
  /** run: the image; never pulled, it must be on the agent's machine already. */
  image?: string;
  /** run: command and arguments; default: the image's. */
  cmd?: string[];
  /** stop, rm, logs, inspect: its id or name; run: the name to give it. */
  container?: string;
  /** run: the container's environment. */
  env?: Record<string, string>;
  /** run: answer once it started (result: JSON {id, name}); else its output streams and its exit code is the task's. */
  detach?: boolean;
  /** logs: go on until the container stops (or the task is cancelled). */
  follow?: boolean;
  /** ps: stopped containers too. */
  all?: boolean;
  /** rm: a running container too. */
  force?: boolean;
  /** run: remove the container once it exited. */
  remove?: boolean;
  /** stop, and the stop of a cancelled attached run: SIGKILL after this long; default 10. */
  stopTimeoutSecs?: number;
  /** logs: only the last N lines. */
  tail?: number;
}

/**
 * A Docker Engine operation on the agent (its [docker] section must enable it). ps, images and inspect
 * answer with the engine's JSON (stdout and Finished.result); an attached run streams the container's
 * stdout and stderr and ends with its exit code; a cancel stops the container.
 */
export function docker(opts: DockerOptions): Pick<TaskRequest, "spec"> {
  if (opts.op === "run" && !opts.image) throw new TypeError("docker(): run needs an image");
  if (["stop", "rm", "logs", "inspect"].includes(opts.op) && !opts.container)
    throw new TypeError(`docker(): ${opts.op} needs a container (its id or name)`);
  return {
    spec: {
      kind: {
        $case: "docker",
        value: {
          op: opts.op,
          image: opts.image ?? "",
          cmd: opts.cmd ?? [],
          container: opts.container ?? "",
          env: opts.env ?? {},
          detach: opts.detach ?? false,
          follow: opts.follow ?? false,
          all: opts.all ?? false,
          force: opts.force ?? false,
          remove: opts.remove ?? false,
          stopTimeoutSecs: opts.stopTimeoutSecs ?? 0,
          tail: opts.tail ?? 0,
        },
      },
    },
  };
}

/** The parameters of a {@link file} task. */
export interface FileOptions {
  /** Whether the agent sends the file (download) or receives it (upload). */
  op: "download" | "upload";
  /** Absolute, under one of the agent's [files] roots. */
  path: string;
  /** A directory, as a tar stream (both ways). */
  archive?: "tar";
  /** download: start at this byte (the result's sha256 still covers the whole file). */
  offset?: number;
  /** upload: the content's length (a directory: the tar stream's, with its sha256). */
  size?: number;
  /**
   * upload: hex SHA-256 of the content; the agent renames onto the path only when it matches. A file
   * upload may leave it out and give it to the input's `end(sha256)` instead, computed while sending.
   */
  sha256?: string;
  /** upload of a file whose sha256 comes at the end: names the partial file that `resume` continues. */
  resumeKey?: string;
  /** upload: permission bits; default 0644. */
  mode?: number;
  /** upload: carry on from what an interrupted upload of the same content left ({"offset":N} on stdout). */
  resume?: boolean;
  /** upload: replace an existing file or directory. */
  overwrite?: boolean;
}

/**
 * A file transfer (the agent's [files] roots must hold the path). A download's bytes are its stdout; an
 * upload's are sent with `client.openInput(taskId)` once it started. Finished.result is JSON FileResult.
 */
export function file(opts: FileOptions): Pick<TaskRequest, "spec"> {
  return {
    spec: {
      kind: {
        $case: "file",
        value: {
          op: opts.op,
          path: opts.path,
          offset: opts.offset ?? 0,
          size: opts.size ?? 0,
          sha256: opts.sha256 ?? "",
          mode: opts.mode ?? 0,
          resume: opts.resume ?? false,
          archive: opts.archive ?? "",
          overwrite: opts.overwrite ?? false,
          resumeKey: opts.resumeKey ?? "",
        },
      },
    },
  };
}

/** The wire form of a target: absent fields become the empty values the hub reads as "not set". */
export function toTarget(t: TargetInput): Target {
  return { agentId: t.agentId ?? "", pool: t.pool ?? "", labels: t.labels ?? {} };
}

/**
 * The wire form of a TaskRequest, as the hub's Submit, Run and Execute calls take it. The client does this
 * itself; use it to send requests over a Session stream or to log exactly what is submitted.
 */
export function toSubmitRequest(req: TaskRequest): SubmitRequest {
  return {
    target: toTarget(req.target),
    spec: req.spec,
    timeoutMs: req.timeoutMs ?? 0,
    waitForAgent: req.waitForAgent ?? false,
    cancelOnDisconnect: req.cancelOnDisconnect ?? false,
  };
}
