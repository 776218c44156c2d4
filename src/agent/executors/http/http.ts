// Http tasks: one HTTP request from the agent to a service it can reach, under the [http] allow prefixes
// (see http-policy.ts). The response's status and headers go out first as one JSON line on stderr, then
// the body on stdout, read from the socket only while the task's output window is open, so a body of any
// size passes in bounded memory. Redirects are followed only when asked, each hop checked again. A body
// sent as the task's input streams to the service as it arrives (input-body.ts).
import type { ClientRequest, IncomingMessage, OutgoingHttpHeaders } from "node:http";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { isIP } from "node:net";
import { pipeline, type Readable, type Transform } from "node:stream";
import {
  constants as zlib,
  createBrotliDecompress,
  createGunzip,
  createInflate,
  type ZlibOptions,
} from "node:zlib";
import { Code, SwitchboardError } from "../../../common/errors.js";
import type { HttpResponseHead, HttpResultSummary } from "../../../common/http-result.js";
import { VERSION } from "../../../common/version.js";
import { OutputChunker } from "../../output-chunker.js";
import {
  Finished,
  OutputStream,
  TaskState,
  type HttpSpec,
  type TaskError,
  type TaskSpec,
} from "../../../gen/switchboard/v1/task.js";
import {
  disabledRefusal,
  failedFinished,
  stoppedFinished,
  timeLimitMs,
  type Execution,
  type ExecutionContext,
  type Executor,
  type InputChunk,
  type StopRequest,
} from "../executor.js";
import { outputRoom } from "../pipes.js";
import { InputBody } from "./input-body.js";
import {
  checkUrl,
  forbiddenAddress,
  ForbiddenAddressError,
  guardedLookup,
  parseAllowPrefix,
  shownUrl,
  socketHost,
  systemResolver,
  type AllowPrefix,
  type Resolver,
} from "./http-policy.js";

export interface HttpExecutorOptions {
  agentId: string;
  /** `[http] allow`: URL prefixes; empty: http tasks are refused. */
  allow: readonly string[];
  /** The whole request's timeout when the task sets none. */
  defaultTimeoutMs: number;
  /** The most redirects a task may ask to follow. */
  maxRedirects: number;
  /** The largest Output chunk when the session does not say. */
  maxChunkBytes: number;
  /** Name resolution; default dns.lookup. Tests map names to the addresses they need. */
  resolve?: Resolver;
}

const MAX_TIMER_MS = 2_147_483_647;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Set by the agent (framing, the target) or meaningless for one request: a task may not set them. */
const RESERVED_HEADERS = new Set([
  "host",
  "content-length",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "proxy-connection",
  "upgrade",
  "te",
  "trailer",
]);
/** Dropped when a redirect leaves the origin, as browsers and curl do. */
const CREDENTIAL_HEADERS = new Set(["authorization", "proxy-authorization", "cookie"]);
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

export class HttpExecutor implements Executor {
  readonly kind = "http" as const;
  private readonly allow: AllowPrefix[];
  private readonly lookup: ReturnType<typeof guardedLookup>;

  constructor(private readonly opts: HttpExecutorOptions) {
    this.allow = opts.allow.map((raw) => {
      const p = parseAllowPrefix(raw);
      if (typeof p === "string") throw new Error(`[http] allow: ${p}`);
      return p;
    });
    this.lookup = guardedLookup(opts.resolve ?? systemResolver);
  }

  admit(spec: TaskSpec): TaskError | undefined {
    const invalid = (message: string): TaskError => ({ code: Code.INVALID_ARGUMENT, message });
    if (this.allow.length === 0) {
      const turnOn = "list the URL prefixes they may reach in [http] allow";
      return disabledRefusal("http", this.opts.agentId, turnOn);
    }
    if (spec.kind?.$case !== "http") return invalid("not an http task");
    const s = spec.kind.value;
    if (s.method !== "" && !TOKEN.test(s.method)) {
      return invalid(`invalid HTTP method ${JSON.stringify(s.method.slice(0, 40))}`);
    }
    if (s.method.toUpperCase() === "CONNECT") return invalid("CONNECT is not allowed in http tasks");
    if (s.bodyFromInput && s.body.length > 0) {
      return invalid("give the body inline or as the task's input (body_from_input), not both");
    }
    if (s.bodyLength > 0 && !s.bodyFromInput) return invalid("body_length is for a body sent as input");
    for (const [name, value] of Object.entries(s.headers)) {
      if (!TOKEN.test(name)) return invalid(`invalid header name ${JSON.stringify(name.slice(0, 60))}`);
      if (RESERVED_HEADERS.has(name.toLowerCase())) {
        return invalid(`header ${name} is set by the agent; a task may not set it`);
      }
      if (/[\r\n\0]/.test(value)) return invalid(`header ${name}: a value may not hold CR, LF or NUL`);
    }
    if (s.maxRedirects > this.opts.maxRedirects) {
      return invalid(
        `max_redirects ${s.maxRedirects} is above agent ${this.opts.agentId}'s limit of ${this.opts.maxRedirects} ([http] max_redirects)`,
      );
    }
    const verdict = checkUrl(s.url, this.allow, this.opts.agentId);
    return verdict.ok ? undefined : { code: verdict.code, message: verdict.message };
  }

  start(spec: TaskSpec, ctx: ExecutionContext): Execution {
    if (spec.kind?.$case !== "http") throw new Error("HttpExecutor.start needs an http spec");
    return new HttpRun(spec.kind.value, ctx, this.opts, this.allow, this.lookup);
  }
}

/** requesting: waiting for a response's head (a redirect goes back here). streaming: passing the body on. */
type HttpPhase = "requesting" | "streaming" | "done";

const PHASE_TRANSITIONS: Record<HttpPhase, readonly HttpPhase[]> = {
  requesting: ["requesting", "streaming", "done"],
  streaming: ["done"],
  done: [],
};

class HttpRun implements Execution {
  readonly done: Promise<Finished>;
  private phase: HttpPhase = "requesting";
  private readonly abort = new AbortController();
  private stopRequest: StopRequest | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly startedAt = Date.now();
  private readonly maxChunk: number;
  private url: URL;
  private status = 0;
  private bytes = 0;
  /** The body, when it comes as the task's input. */
  private readonly inputBody: InputBody | undefined;

  constructor(
    private readonly spec: HttpSpec,
    private readonly ctx: ExecutionContext,
    private readonly opts: HttpExecutorOptions,
    private readonly allow: readonly AllowPrefix[],
    private readonly lookup: ReturnType<typeof guardedLookup>,
  ) {
    // The agent's chunk size ([shell] max_chunk_bytes), never more than the session's messages can carry.
    this.maxChunk = Math.max(1024, Math.min(opts.maxChunkBytes, ctx.maxChunkBytes ?? Infinity));
    this.url = new URL(spec.url); // admit() checked it
    this.inputBody = spec.bodyFromInput
      ? new InputBody((n) => ctx.grantInput(n), spec.bodyLength)
      : undefined;
    this.armTimeout();
    this.done = this.run().finally(() => {
      clearTimeout(this.timer);
      this.move("done");
    });
  }

  input(chunk: InputChunk): void {
    this.inputBody?.push(chunk);
  }

  stop(request: StopRequest): void {
    if (this.stopRequest || this.phase === "done") return;
    this.stopRequest = request;
    this.abort.abort(new Error(request.reason));
  }

  /** The task's own timeout (else the agent's default) or its deadline, whichever is sooner. */
  private armTimeout(): void {
    const own = this.spec.timeoutMs > 0 ? this.spec.timeoutMs : this.opts.defaultTimeoutMs;
    const limitMs = timeLimitMs(own, this.ctx.deadlineMs, this.startedAt);
    if (limitMs === undefined) return;
    const ms = Math.max(0, limitMs);
    this.timer = setTimeout(
      () => this.stop({ cause: "timed_out", reason: `timeout after ${ms} ms` }),
      Math.min(ms, MAX_TIMER_MS),
    );
  }

  private async run(): Promise<Finished> {
    this.ctx.started(0);
    let method = (this.spec.method || "GET").toUpperCase();
    let body: Buffer | InputBody | undefined =
      this.inputBody ?? (this.spec.body.length > 0 ? Buffer.from(this.spec.body) : undefined);
    let headers = this.initialHeaders();
    let redirects = 0;
    try {
      for (;;) {
        const res = await this.send(method, headers, body);
        const location = res.headers.location;
        const status = res.statusCode ?? 0;
        if (!REDIRECTS.has(status) || location === undefined || this.spec.maxRedirects === 0) {
          return await this.stream(res, method);
        }
        res.destroy();
        let next: URL;
        try {
          next = new URL(location, this.url);
        } catch {
          throw new SwitchboardError(
            Code.FAILED_PRECONDITION,
            `${shownUrl(this.url)} redirected to an invalid URL: ${JSON.stringify(shownUrl(location))}`,
          );
        }
        if (redirects >= this.spec.maxRedirects) {
          throw new SwitchboardError(
            Code.FAILED_PRECONDITION,
            `more than ${this.spec.maxRedirects} redirects; the last from ${shownUrl(this.url)} to ${shownUrl(next)}`,
          );
        }
        const verdict = checkUrl(next.href, this.allow, this.opts.agentId);
        if (!verdict.ok) {
          throw new SwitchboardError(
            verdict.code,
            `redirect from ${shownUrl(this.url)} refused: ${verdict.message}`,
          );
        }
        // 303 (and 301/302 after a POST, as every client does) continues as a GET without the body.
        const toGet =
          (status === 303 && method !== "HEAD") || ((status === 301 || status === 302) && method === "POST");
        if (body instanceof InputBody && !toGet) {
          throw new SwitchboardError(
            Code.FAILED_PRECONDITION,
            `${shownUrl(this.url)} redirected (${status}) to ${shownUrl(next)}, which needs the body again; ` +
              `a body sent as input streams once: send it to ${shownUrl(next)} directly`,
          );
        }
        if (toGet) {
          method = "GET";
          body = undefined;
          headers = without(headers, (name) => name === "content-type");
        }
        if (next.origin !== this.url.origin) {
          headers = without(headers, (name) => CREDENTIAL_HEADERS.has(name));
        }
        redirects++;
        this.url = next;
        this.move("requesting");
      }
    } catch (e) {
      const durationMs = Date.now() - this.startedAt;
      const f = this.stopRequest
        ? stoppedFinished(this.stopRequest, durationMs)
        : failedFinished(...this.describe(e), durationMs);
      if (this.status > 0) f.result = this.summary();
      return f;
    }
  }

  private initialHeaders(): OutgoingHttpHeaders {
    const headers: OutgoingHttpHeaders = { ...this.spec.headers };
    const names = new Set(Object.keys(headers).map((n) => n.toLowerCase()));
    if (!names.has("user-agent")) headers["user-agent"] = `switchboard-agent/${VERSION}`;
    if (this.spec.decode && !names.has("accept-encoding")) headers["accept-encoding"] = "gzip, deflate, br";
    return headers;
  }

  /** Sends one request and resolves with the response's head. */
  private send(
    method: string,
    headers: OutgoingHttpHeaders,
    body: Buffer | InputBody | undefined,
  ): Promise<IncomingMessage> {
    const url = this.url;
    const host = socketHost(url);
    return new Promise((resolve, reject) => {
      const options = {
        host,
        port: url.port !== "" ? Number(url.port) : undefined,
        path: `${url.pathname}${url.search}`,
        method,
        // A streamed body of unknown length (0) goes chunked.
        headers: body && body.length > 0 ? { ...headers, "content-length": body.length } : headers,
        lookup: this.lookup,
        // One connection per request: a pooled socket would skip the address check of its name.
        agent: false as const,
        signal: this.abort.signal,
      };
      const req: ClientRequest =
        url.protocol === "https:"
          ? httpsRequest({ ...options, ...(isIP(host) ? {} : { servername: host }) })
          : httpRequest(options);
      req.once("response", (res) => {
        // A listener from the start, so that a break before the body loop runs is kept as the
        // stream's error (and thrown there) rather than a silent end.
        res.on("error", () => undefined);
        resolve(res);
      });
      // on, not once: an error after the response is the body loop's business, never an uncaught one.
      req.on("error", reject);
      // The lookup checked every name; a literal address was checked with the URL. This is the last word.
      req.once("socket", (socket) => {
        const check = (): void => {
          const addr = socket.remoteAddress;
          const why = addr ? forbiddenAddress(addr) : undefined;
          if (why) req.destroy(new ForbiddenAddressError(host, addr!, why));
        };
        if (socket.connecting) socket.once("connect", check);
        else check();
      });
      if (body instanceof InputBody) {
        // Errors of the body (a length other than declared) end the request with them.
        body.writeTo(req, this.abort.signal).catch((e: unknown) => req.destroy(e as Error));
      } else req.end(body);
    });
  }

  /** Head line on stderr, then the body on stdout, read only while the output window is open. */
  private async stream(res: IncomingMessage, method: string): Promise<Finished> {
    this.move("streaming");
    this.status = res.statusCode ?? 0;
    const head: HttpResponseHead = {
      status: this.status,
      status_text: res.statusMessage ?? "",
      headers: res.headersDistinct as Record<string, string[]>,
      url: this.url.href,
    };
    await this.write(OutputStream.OUTPUT_STREAM_STDERR, Buffer.from(`${JSON.stringify(head)}\n`));
    const noBody = method === "HEAD" || this.status === 204 || this.status === 304;
    const decoders = this.spec.decode && !noBody ? decodersFor(res.headers["content-encoding"]) : [];
    let body: Readable = res;
    if (decoders.length > 0) {
      // Errors of any stage destroy the last one with that error, which ends the loop below.
      pipeline([res, ...decoders], () => undefined);
      body = decoders.at(-1)!;
    }
    const onAbort = (): void => {
      body.destroy(new Error(this.stopRequest?.reason ?? "stopped"));
    };
    this.abort.signal.addEventListener("abort", onAbort, { once: true });
    // Socket reads are 16-64 KiB: coalesced into chunks of up to maxChunk (a partial one goes out after a
    // short idle wait), a message costs far more than its bytes.
    const chunker = new OutputChunker({ maxChunkBytes: this.maxChunk }, (c) =>
      this.ctx.output.write(OutputStream.OUTPUT_STREAM_STDOUT, c),
    );
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        this.bytes += chunk.length;
        if (!chunker.push(chunk)) await this.writable();
      }
      if (!chunker.end()) await this.writable();
    } finally {
      chunker.dispose();
      this.abort.signal.removeEventListener("abort", onAbort);
      res.destroy();
    }
    if (this.stopRequest) throw new Error(this.stopRequest.reason);
    if (!res.complete) throw Object.assign(new Error("aborted"), { code: "ECONNRESET" });
    return Finished.fromPartial({
      state: TaskState.TASK_STATE_SUCCEEDED,
      exitCode: 0,
      durationMs: Date.now() - this.startedAt,
      result: this.summary(),
    });
  }

  /** Writes in chunks the stream carries; waits (abortably) while the window is closed. */
  private async write(stream: OutputStream, data: Buffer): Promise<void> {
    let writable = true;
    for (let off = 0; off < data.length; off += this.maxChunk) {
      writable = this.ctx.output.write(stream, data.subarray(off, off + this.maxChunk));
    }
    if (!writable) await this.writable();
  }

  /** Resolves once the output window is open again, or the request was aborted. */
  private writable(): Promise<void> {
    return outputRoom(this.ctx.output, this.abort.signal);
  }

  private summary(): Buffer {
    const s: HttpResultSummary = { status: this.status, bytes: this.bytes, url: this.url.href };
    return Buffer.from(JSON.stringify(s));
  }

  /** The status code and sentence for a failure. */
  private describe(e: unknown): [Code, string] {
    if (e instanceof SwitchboardError) return [e.code, e.message];
    if (e instanceof ForbiddenAddressError)
      return [Code.PERMISSION_DENIED, `${shownUrl(this.url)}: ${e.message}`];
    const err = e as NodeJS.ErrnoException;
    const code = err.code ?? "";
    const where = `${this.url.protocol}//${this.url.host}`;
    const during =
      this.phase === "streaming" ? ` after ${this.bytes} body bytes of ${shownUrl(this.url)}` : "";
    if (code === "ENOTFOUND" || code === "EAI_AGAIN") {
      return [
        Code.UNAVAILABLE,
        `cannot resolve ${this.url.hostname} on agent ${this.opts.agentId} (${code})`,
      ];
    }
    if (code === "ECONNREFUSED") return [Code.UNAVAILABLE, `${where} refused the connection (ECONNREFUSED)`];
    if (code === "ECONNRESET" || code === "EPIPE" || err.message === "aborted") {
      return [Code.UNAVAILABLE, `the connection to ${where} broke${during} (${code || err.message})`];
    }
    // zlib's codes are Z_*; brotli's ERR__* (its own error names behind the prefix).
    if (code.startsWith("Z_") || code.startsWith("ERR__") || code.startsWith("ERR_BROTLI")) {
      return [Code.DATA_LOSS, `cannot decode the response body${during}: ${err.message}`];
    }
    if (code.startsWith("HPE_")) {
      return [Code.UNAVAILABLE, `${where} sent an invalid HTTP response: ${err.message}`];
    }
    if (code.startsWith("ERR_TLS") || /CERT|SSL|TLS/.test(code)) {
      return [Code.UNAVAILABLE, `TLS with ${where} failed: ${err.message}`];
    }
    return [Code.UNAVAILABLE, `${shownUrl(this.url)}: ${err.message || String(e)}${during}`];
  }

  private move(next: HttpPhase): void {
    if (PHASE_TRANSITIONS[this.phase].includes(next)) this.phase = next;
  }
}

/** Decoders for a Content-Encoding list, in the order to apply them (the last encoding applied first). */
export function decodersFor(contentEncoding: string | undefined): Transform[] {
  if (!contentEncoding) return [];
  // Lenient at the end, as browsers and curl are: a body the server cut short is an HTTP-level error anyway.
  const opts: ZlibOptions = { finishFlush: zlib.Z_SYNC_FLUSH, chunkSize: 64 * 1024 };
  const out: Transform[] = [];
  const codings = contentEncoding
    .split(",")
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== "" && c !== "identity");
  for (const c of codings.reverse()) {
    if (c === "gzip" || c === "x-gzip") out.push(createGunzip(opts));
    else if (c === "deflate") out.push(createInflate(opts));
    else if (c === "br") {
      out.push(createBrotliDecompress({ finishFlush: zlib.BROTLI_OPERATION_FLUSH, chunkSize: 64 * 1024 }));
    } else return []; // an encoding we do not know: pass the body on as it came
  }
  return out;
}

function without(headers: OutgoingHttpHeaders, drop: (lowerName: string) => boolean): OutgoingHttpHeaders {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !drop(name.toLowerCase())));
}
