// `switchboard http`: an HTTP request made by an agent to a service only it can reach, used like curl.
// The body streams to stdout (binary safe) or to a file written whole or not at all; the agent reads the
// response only as fast as this command writes it. A --data-file or -F body is sent as the task's input,
// read as it goes (any size). Exit 0 whatever the HTTP status, unless --fail.
import { once } from "node:events";
import { createWriteStream, type WriteStream } from "node:fs";
import { rename, rm, stat } from "node:fs/promises";
import type { Command } from "commander";
import {
  http,
  parseHttpHead,
  type HttpResponseHead,
  type SwitchboardClient,
  type TaskRequest,
} from "../../client/index.js";
import { DEFAULT_MAX_MESSAGE_BYTES } from "../../common/grpc-options.js";
import { OutputStream, TaskState, type Finished } from "../../gen/switchboard/v1/task.js";
import { CliError, EXIT, usageError } from "../cli-error.js";
import { clientCommand, targetAction, withClient, type TargetFlags } from "../client-command.js";
import { fileChunks } from "../file-chunks.js";
import { collect, durationFlag, intFlag } from "../flags.js";
import { multipartBody, parseFormField, type StreamedBody } from "../multipart.js";
import { ProgressLine } from "../progress-line.js";
import { exitCodeOf } from "./exec.js";
import { cancelOnInterruptOrClosedPipe } from "../signals.js";

interface HttpFlags extends TargetFlags {
  request?: string;
  header?: string[];
  data?: string[];
  dataFile?: string;
  form?: string[];
  compressed?: boolean;
  location?: boolean;
  maxRedirs?: string;
  include?: boolean;
  out?: string;
  fail?: boolean;
  timeout?: string;
  wait?: boolean;
  progress?: boolean;
}

/** curl's exit code for an HTTP status of 400 or more under --fail. */
export const EXIT_HTTP_ERROR = 22;
/** A -d body travels inside one message to the hub, with room for the rest of the task. */
const MAX_BODY_BYTES = DEFAULT_MAX_MESSAGE_BYTES - 1024 * 1024;
const DEFAULT_MAX_REDIRS = 5;

export function registerHttp(program: Command): void {
  const cmd = clientCommand(program, "http", "make an HTTP request from an agent (like curl)")
    .argument("<url>", "the URL; it must start with one of the agent's [http] allow prefixes")
    .option("-X, --request <method>", "the method (default GET, or POST with a body)")
    .option("-H, --header <'Name: value'>", "a request header (repeatable)", collect)
    .option("-d, --data <data>", "send this as the body (repeatable: joined with &)", collect)
    .option("--data-file <file>", "send this file as the body (streamed: any size)")
    .option("-F, --form <name=value|name=@file>", "a multipart/form-data field or file (repeatable)", collect)
    .option("--compressed", "ask for a compressed response and decode it on the agent")
    .option("-L, --location", "follow redirects (each one must stay on the allowlist)")
    .option(
      "--max-redirs <n>",
      `follow at most this many redirects (implies -L; default ${DEFAULT_MAX_REDIRS})`,
    )
    .option("-i, --include", "print the status line and headers before the body")
    .option("-o, --out <file>", "write the body to this file, only once it is complete")
    .option("-f, --fail", `on an HTTP status of 400 or more print no body and exit ${EXIT_HTTP_ERROR}`)
    .option("--timeout <duration>", "the whole request, queueing included (e.g. 30s, 5m); exit code 124")
    .option("--wait", "queue even when no agent of the target is connected (until --timeout)")
    .option("--no-progress", "no progress line on stderr")
    .addHelpText(
      "after",
      `
Examples:
  switchboard http --pool edge http://svc.internal:8080/healthz
  switchboard http --agent eu-1 -H 'Accept: application/json' -i http://api.internal/v1/users
  switchboard http --pool edge -X POST -d '{"a":1}' -H 'Content-Type: application/json' http://api.internal/v1/items
  switchboard http --pool edge -F report=@out.csv http://api.internal/upload
  switchboard http --pool edge --compressed -L -o dump.bin http://files.internal/dump

Exit code: 0 when the request completed, whatever its status (unless --fail: ${EXIT_HTTP_ERROR} for 400 and up);
1 when it failed (refused by the agent, network error; the reason is on stderr); 124 timed out;
130 cancelled (Ctrl-C); 2 on bad usage.`,
    );
  targetAction(cmd, async (target, rawUrl: string, flags: HttpFlags, command: Command) => {
    const built = await buildRequest(rawUrl, flags);
    const req: TaskRequest = {
      spec: built.spec,
      // The response has nowhere to go once this command is gone: the agent drops the request.
      cancelOnDisconnect: true,
      target,
      waitForAgent: flags.wait ?? false,
    };
    const timeoutMs = flags.timeout !== undefined ? durationFlag("--timeout", flags.timeout) : 0;
    if (timeoutMs > 0) req.timeoutMs = timeoutMs;

    const cancel = cancelOnInterruptOrClosedPipe("cancelling the request");
    const progress = new ProgressLine(process.stderr, {
      enabled: flags.progress !== false && (flags.out !== undefined || process.stdout.isTTY !== true),
      rows: false,
    });
    const body = await BodyOut.open(flags.out);
    let bodyError: Error | undefined;
    try {
      process.exitCode = await withClient(command, async (client) => {
        let taskId = "?";
        let head: HttpResponseHead | undefined;
        let headText = "";
        let bytes = 0;
        let finished: Finished | undefined;
        const streamed = built.streamed;
        const stopSending = new AbortController();
        let sending: Promise<void> | undefined;
        try {
          for await (const ev of client.run(
            { ...req, signal: cancel.signal },
            { onTaskId: (id) => (taskId = id) },
          )) {
            const e = ev.event;
            if (e?.$case === "started" && streamed && !sending) {
              sending = sendBody(client, taskId, streamed, stopSending.signal).catch((err: unknown) => {
                // A body that cannot be read (or sent) ends the request: the task is cancelled.
                bodyError = err instanceof Error ? err : new Error(String(err));
                cancel.abort();
              });
            } else if (e?.$case === "output") {
              if (e.value.stream === OutputStream.OUTPUT_STREAM_STDERR && head === undefined) {
                headText += Buffer.from(e.value.data).toString("utf8");
                const nl = headText.indexOf("\n");
                if (nl === -1) continue;
                head = parseHttpHead(headText.slice(0, nl));
                if (!head) throw new CliError(`task ${taskId}: the agent's response head is not JSON`);
                if (flags.fail && head.status >= 400) {
                  process.stderr.write(`error: ${head.url} answered ${head.status} ${head.status_text}\n`);
                  return EXIT_HTTP_ERROR; // leaving the loop cancels the task
                }
                const length = Number(head.headers["content-length"]?.[0]);
                if (Number.isSafeInteger(length) && !flags.compressed) progress.setTotal(length);
                if (flags.include) await body.write(formatHead(head));
              } else if (e.value.stream === OutputStream.OUTPUT_STREAM_STDOUT) {
                bytes += e.value.data.length;
                progress.update(0, bytes);
                await body.write(e.value.data);
              }
            } else if (e?.$case === "finished") {
              finished = e.value;
            }
          }
        } finally {
          stopSending.abort();
          await sending;
        }
        if (bodyError) throw bodyError; // said as a CliError below
        if (!finished) throw new CliError(`the hub ended the stream of task ${taskId} without a result`);
        progress.done();
        if (finished.state !== TaskState.TASK_STATE_SUCCEEDED) return exitCodeOf(finished, taskId);
        await body.commit();
        return EXIT.ok;
      });
    } catch (e) {
      if (bodyError) throw new CliError(`sending the request body failed: ${bodyError.message}`);
      if (cancel.signal.aborted) throw new CliError("the request was cancelled", EXIT.interrupted);
      throw e;
    } finally {
      progress.done();
      await body.discard();
      cancel.dispose();
    }
  });
}

/** Sends a streamed body as the task's input, until it ends or the task does. */
async function sendBody(
  client: SwitchboardClient,
  taskId: string,
  body: StreamedBody,
  stop: AbortSignal,
): Promise<void> {
  const input = client.openInput(taskId);
  let ended = false;
  try {
    for await (const chunk of body.read()) {
      if (stop.aborted) return;
      await input.write(chunk);
    }
    if (stop.aborted) return;
    ended = true;
    await input.end();
  } finally {
    if (!ended) input.close();
  }
}

/** A file as a streamed body, no further than the size it had when the task was made. */
async function fileBody(path: string): Promise<StreamedBody> {
  const st = await stat(path).catch((e: NodeJS.ErrnoException) => {
    throw usageError(`--data-file: cannot read ${path}: ${e.code ?? e.message}`);
  });
  if (!st.isFile()) throw usageError(`--data-file: ${path} is not a file`);
  return {
    contentType: "application/octet-stream",
    length: st.size,
    read: () => fileChunks(path, 0, st.size),
  };
}

/**
 * The task from the command line: method, headers and body as curl would send them; a --data-file or -F
 * body is `streamed`, sent as the task's input once it started.
 */
async function buildRequest(
  rawUrl: string,
  flags: HttpFlags,
): Promise<{ spec: TaskRequest["spec"]; streamed?: StreamedBody }> {
  const url = /^[a-z][a-z0-9+.-]*:\/\//i.test(rawUrl) ? rawUrl : `http://${rawUrl}`;
  if (!URL.canParse(url)) throw usageError(`not a valid URL: ${JSON.stringify(rawUrl)}`);
  const headers: Record<string, string> = {};
  for (const h of flags.header ?? []) {
    const colon = h.indexOf(":");
    const name = colon > 0 ? h.slice(0, colon).trim() : "";
    if (name === "" || /\s/.test(name)) {
      throw usageError(`-H: expected 'Name: value', got ${JSON.stringify(h)}`);
    }
    const value = h.slice(colon + 1).trim();
    const existing = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
    if (existing !== undefined) headers[existing] = `${headers[existing]}, ${value}`;
    else headers[name] = value;
  }
  const bodies = [flags.data, flags.dataFile, flags.form].filter((b) => b !== undefined).length;
  if (bodies > 1) throw usageError("give one of -d, --data-file and -F");
  let body: Buffer | undefined;
  let streamed: StreamedBody | undefined;
  let contentType: string | undefined;
  if (flags.data !== undefined) {
    body = Buffer.from(flags.data.join("&"));
    contentType = "application/x-www-form-urlencoded";
    if (body.length > MAX_BODY_BYTES) {
      throw usageError(
        `-d: the body has ${body.length} bytes; one given inline may be at most ${MAX_BODY_BYTES}`,
        "send a large body with --data-file, which streams it",
      );
    }
  } else if (flags.dataFile !== undefined) {
    streamed = await fileBody(flags.dataFile);
    contentType = streamed.contentType;
  } else if (flags.form !== undefined) {
    streamed = await multipartBody(flags.form.map(parseFormField));
    contentType = streamed.contentType;
  }
  const hasType = Object.keys(headers).some((k) => k.toLowerCase() === "content-type");
  if (contentType !== undefined && (!hasType || flags.form !== undefined)) {
    // A multipart body needs its own boundary in the type, whatever -H said.
    for (const k of Object.keys(headers)) if (k.toLowerCase() === "content-type") delete headers[k];
    headers["Content-Type"] = contentType;
  }
  const follow = flags.location === true || flags.maxRedirs !== undefined;
  const { spec } = http({
    url,
    method: flags.request ?? (body !== undefined || streamed !== undefined ? "POST" : "GET"),
    headers,
    ...(body !== undefined ? { body } : {}),
    ...(streamed !== undefined ? { bodyFromInput: true, bodyLength: streamed.length } : {}),
    decode: flags.compressed ?? false,
    maxRedirects: follow
      ? flags.maxRedirs !== undefined
        ? intFlag("--max-redirs", flags.maxRedirs, 0)
        : DEFAULT_MAX_REDIRS
      : 0,
    ...(flags.timeout !== undefined ? { timeoutMs: durationFlag("--timeout", flags.timeout) } : {}),
  });
  return streamed ? { spec, streamed } : { spec };
}

/** The status line and headers as curl -i prints them. */
export function formatHead(head: HttpResponseHead): string {
  let s = `HTTP/1.1 ${head.status}${head.status_text ? ` ${head.status_text}` : ""}\r\n`;
  for (const [name, values] of Object.entries(head.headers)) {
    for (const v of values) s += `${name}: ${v}\r\n`;
  }
  return `${s}\r\n`;
}

/**
 * Where the body goes: stdout as it comes, or a file written under a temporary name and renamed once the
 * task succeeded, so that a failed or cancelled transfer never leaves a partial file under the real name.
 */
class BodyOut {
  private error: Error | undefined;

  private constructor(
    private readonly out: NodeJS.WritableStream,
    private file: WriteStream | undefined,
    private readonly paths?: { tmp: string; final: string },
  ) {
    file?.on("error", (e) => (this.error ??= e));
  }

  static async open(path: string | undefined): Promise<BodyOut> {
    if (path === undefined) return new BodyOut(process.stdout, undefined);
    const tmp = `${path}.partial-${process.pid}`;
    const file = createWriteStream(tmp, { mode: 0o644 });
    try {
      await once(file, "open");
    } catch (e) {
      throw usageError(`--out: cannot write ${tmp}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    return new BodyOut(file, file, { tmp, final: path });
  }

  async write(data: Uint8Array | string): Promise<void> {
    this.throwIfFailed();
    if (!this.out.write(data)) await once(this.out, "drain");
    this.throwIfFailed();
  }

  /** The body is complete: the file takes its real name. */
  async commit(): Promise<void> {
    const file = this.file;
    if (!file || !this.paths) return;
    await new Promise<void>((resolve, reject) => file.end((e?: Error | null) => (e ? reject(e) : resolve())));
    this.throwIfFailed();
    await rename(this.paths.tmp, this.paths.final);
    this.file = undefined;
  }

  /** Removes the temporary file unless commit() renamed it. */
  async discard(): Promise<void> {
    if (!this.file || !this.paths) return;
    this.file.destroy();
    this.file = undefined;
    await rm(this.paths.tmp, { force: true });
  }

  private throwIfFailed(): void {
    if (this.error)
      throw new CliError(`--out: writing ${this.paths?.tmp ?? "the body"} failed: ${this.error.message}`);
  }
}
