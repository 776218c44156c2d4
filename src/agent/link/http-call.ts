// The agent's end of the HTTP/1.1 long-poll transport: it stands in for the gRPC call the link would
// open (write, end, cancel, pause, resume; the 'data', 'drain' and 'status' events), so everything
// above the link is the same on both transports. One loop long-polls for hub messages, one uploads
// what the agent writes, in order, each upload repeated until acknowledged; a semaphore caps the
// requests in flight to the hub (seed 001: at most 2).
import { EventEmitter } from "node:events";
import { request as httpRequest, Agent as HttpAgent } from "node:http";
import { request as httpsRequest, Agent as HttpsAgent } from "node:https";
import { readFileSync } from "node:fs";
import { Code, SwitchboardError } from "../../common/errors.js";
import type { ClientTlsFiles } from "../../common/tls.js";
import { outputBytes } from "./outbox.js";
import {
  HttpDownload,
  HttpPoll,
  HttpSendAck,
  HttpUpload,
  type AgentMessage,
  type Hello,
} from "../../gen/switchboard/v1/agent.js";

const PROTOBUF = "application/x-protobuf";
/** What one upload carries at most (encoded messages); more waits for the next. */
const UPLOAD_BYTES = 4 * 1024 * 1024;
/** Written and not yet uploaded past this: write() says false until it is under again ('drain'). */
const HIGH_WATER_BYTES = 8 * 1024 * 1024;
const POLL_WAIT_MS = 25_000;
/** Requests that keep failing this long end the call UNAVAILABLE (the link redials and resumes). */
const GIVE_UP_MS = 10_000;

const CODE_OF_HTTP: Record<number, number> = {
  400: Code.INVALID_ARGUMENT,
  401: Code.UNAUTHENTICATED,
  403: Code.PERMISSION_DENIED,
  404: Code.NOT_FOUND,
  409: Code.FAILED_PRECONDITION,
  413: Code.RESOURCE_EXHAUSTED,
  503: Code.UNAVAILABLE,
};

/** Counting semaphore: at most `n` holders. */
export class Semaphore {
  private used = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(readonly n: number) {}

  async acquire(): Promise<() => void> {
    if (this.used >= this.n) await new Promise<void>((r) => this.waiting.push(r));
    else this.used++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.used--;
    };
  }

  get inUse(): number {
    return this.used;
  }
}

export interface HttpHubCallOptions {
  /** "host:port" of the hub's HTTP port. */
  address: string;
  token: string;
  tls?: ClientTlsFiles;
  /** Requests in flight at once (default 2: a long poll and an upload). */
  concurrency: number;
}

/** A request to the hub that failed; its own class because the caller repeats the transient ones. */
class HttpFailure extends SwitchboardError {
  constructor(
    code: Code,
    message: string,
    /** Worth repeating (a network error, the hub restarting), as opposed to a refusal. */
    readonly transient: boolean,
  ) {
    super(code, message);
  }
}

export class HttpHubCall extends EventEmitter {
  private channel = "";
  private ack = 0;
  private readonly pending: AgentMessage[] = [];
  private pendingBytes = 0;
  private uploadSeq = 0;
  private uploading = false;
  private ending = false;
  private endSent = false;
  private finished = false;
  private paused = false;
  private wantDrain = false;
  private resumePoll: (() => void) | undefined;
  private readonly aborts = new Set<AbortController>();
  private readonly sem: Semaphore;
  private readonly agent: HttpAgent | HttpsAgent;
  private readonly tlsOptions: { ca?: Buffer; cert?: Buffer; key?: Buffer; servername?: string } = {};
  private readonly https: boolean;

  constructor(private readonly o: HttpHubCallOptions) {
    super();
    this.sem = new Semaphore(Math.max(1, o.concurrency));
    this.https = o.tls !== undefined;
    if (o.tls) {
      if (o.tls.ca) this.tlsOptions.ca = readFileSync(o.tls.ca);
      if (o.tls.cert) this.tlsOptions.cert = readFileSync(o.tls.cert);
      if (o.tls.key) this.tlsOptions.key = readFileSync(o.tls.key);
      if (o.tls.serverName) this.tlsOptions.servername = o.tls.serverName;
    }
    const agentOpts = { keepAlive: true, maxSockets: this.sem.n };
    this.agent = this.https ? new HttpsAgent({ ...agentOpts, ...this.tlsOptions }) : new HttpAgent(agentOpts);
  }

  /** Opens the channel with Hello; messages and the end arrive as events. */
  start(hello: Hello): void {
    void (async () => {
      try {
        const body = HttpUpload.encode({
          channel: "",
          seq: 0,
          messages: [{ body: { $case: "hello", value: hello } }],
          end: false,
        }).finish();
        const res = await this.post("/agent/v1/connect", body, 30_000);
        const down = decodeOr(HttpDownload, res, "HttpDownload");
        this.channel = down.channel;
        this.deliver(down);
        if (!this.finished) {
          void this.pollLoop();
          this.kick();
        }
      } catch (e) {
        this.fail(e);
      }
    })();
  }

  write(msg: AgentMessage): boolean {
    if (this.finished || this.ending) return false;
    this.pending.push(msg);
    this.pendingBytes += sizeOf(msg);
    this.kick();
    if (this.pendingBytes >= HIGH_WATER_BYTES) {
      this.wantDrain = true;
      return false;
    }
    return true;
  }

  /** Half-close: what was written is uploaded, the last upload says end. */
  end(): void {
    if (this.finished || this.ending) return;
    this.ending = true;
    this.kick();
  }

  /** Ends the call here and now (best effort: tells the hub). */
  cancel(): void {
    if (this.finished) return;
    const channel = this.channel;
    this.finish(Code.CANCELLED, "cancelled by the agent");
    if (channel) {
      const body = HttpPoll.encode({ channel, ack: this.ack, waitMs: 0 }).finish();
      this.post("/agent/v1/close", body, 3_000, true).catch(() => undefined);
    }
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    const r = this.resumePoll;
    this.resumePoll = undefined;
    r?.();
  }

  /** Closes idle connections (the link calls it once the call has ended). */
  close(): void {
    this.agent.destroy();
  }

  // ---- internals ----

  private deliver(down: HttpDownload): void {
    let seq = down.firstSeq;
    for (const m of down.messages) {
      if (seq > this.ack) {
        this.ack = seq;
        if (!this.finished) this.emit("data", m);
      }
      seq++;
    }
    if (down.ended) this.finish(down.endCode, down.endDetails);
  }

  private async pollLoop(): Promise<void> {
    let failingSince: number | undefined;
    let delay = 100;
    while (!this.finished) {
      if (this.paused) await new Promise<void>((r) => (this.resumePoll = r));
      if (this.finished) return;
      // With one request allowed, a long poll would hold back every upload: poll briefly instead.
      const waitMs = this.sem.n > 1 ? POLL_WAIT_MS : 1_000;
      const body = HttpPoll.encode({ channel: this.channel, ack: this.ack, waitMs }).finish();
      try {
        const res = await this.post("/agent/v1/poll", body, waitMs + 15_000);
        failingSince = undefined;
        delay = 100;
        this.deliver(decodeOr(HttpDownload, res, "HttpDownload"));
      } catch (e) {
        if (this.finished) return;
        if (!(e instanceof HttpFailure) || !e.transient) return this.fail(e);
        failingSince ??= Date.now();
        if (Date.now() - failingSince > GIVE_UP_MS) return this.fail(e);
        await sleep(delay);
        delay = Math.min(2_000, delay * 2);
      }
    }
  }

  /** Starts an upload when there is something to send and none is in flight. */
  private kick(): void {
    if (this.uploading || this.finished || !this.channel) return;
    if (this.pending.length === 0 && (!this.ending || this.endSent)) return;
    this.uploading = true;
    void this.uploadLoop().finally(() => {
      this.uploading = false;
    });
  }

  private async uploadLoop(): Promise<void> {
    while (!this.finished && (this.pending.length > 0 || (this.ending && !this.endSent))) {
      let bytes = 0;
      let n = 0;
      while (n < this.pending.length && (n === 0 || bytes < UPLOAD_BYTES)) {
        bytes += sizeOf(this.pending[n]!);
        n++;
      }
      const messages = this.pending.slice(0, n);
      const end = this.ending && n === this.pending.length;
      const seq = ++this.uploadSeq;
      const body = HttpUpload.encode({ channel: this.channel, seq, messages, end }).finish();
      let failingSince: number | undefined;
      let delay = 100;
      for (;;) {
        try {
          const res = await this.post("/agent/v1/send", body, 30_000);
          decodeOr(HttpSendAck, res, "HttpSendAck");
          break;
        } catch (e) {
          if (this.finished) return;
          if (!(e instanceof HttpFailure) || !e.transient) return this.fail(e);
          failingSince ??= Date.now();
          if (Date.now() - failingSince > GIVE_UP_MS) return this.fail(e);
          await sleep(delay);
          delay = Math.min(2_000, delay * 2);
        }
      }
      this.pending.splice(0, n);
      this.pendingBytes = Math.max(0, this.pendingBytes - bytes);
      if (this.wantDrain && this.pendingBytes < HIGH_WATER_BYTES) {
        this.wantDrain = false;
        this.emit("drain");
      }
      if (end) {
        this.endSent = true;
        return;
      }
    }
  }

  private fail(e: unknown): void {
    if (e instanceof HttpFailure) this.finish(e.code, e.message);
    else this.finish(Code.INTERNAL, e instanceof Error ? e.message : String(e));
  }

  private finish(code: number, details: string): void {
    if (this.finished) return;
    this.finished = true;
    for (const a of this.aborts) a.abort();
    this.resumePoll?.();
    this.emit("status", { code, details, metadata: undefined });
  }

  /** One POST, under the semaphore; resolves with the body of a 2xx answer. */
  private async post(path: string, body: Uint8Array, timeoutMs: number, bypass = false): Promise<Buffer> {
    const release = bypass ? () => undefined : await this.sem.acquire();
    const abort = new AbortController();
    this.aborts.add(abort);
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      return await new Promise<Buffer>((resolve, reject) => {
        const [host, port] = splitHostPort(this.o.address);
        const req = (this.https ? httpsRequest : httpRequest)(
          {
            host,
            port,
            path,
            method: "POST",
            agent: this.agent,
            signal: abort.signal,
            headers: {
              authorization: `Bearer ${this.o.token}`,
              "content-type": PROTOBUF,
              "content-length": body.length,
            },
            ...(this.https ? this.tlsOptions : {}),
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("error", (err) => reject(new HttpFailure(Code.UNAVAILABLE, err.message, true)));
            res.on("end", () => {
              const data = Buffer.concat(chunks);
              const status = res.statusCode ?? 0;
              if (status >= 200 && status < 300) return resolve(data);
              const header = Number(res.headers["x-switchboard-code"]);
              const code: number =
                Number.isInteger(header) && header > 0 ? header : (CODE_OF_HTTP[status] ?? Code.UNKNOWN);
              const text = data
                .toString("utf8")
                .trim()
                .replace(/^[A-Z_]+: /, "");
              reject(
                new HttpFailure(
                  code,
                  text || `HTTP ${status} from ${path}`,
                  status >= 500 && code !== (Code.INTERNAL as number),
                ),
              );
            });
          },
        );
        req.on("error", (err: NodeJS.ErrnoException) => {
          const why =
            abort.signal.aborted && !this.finished ? `no answer within ${timeoutMs} ms` : err.message;
          reject(new HttpFailure(Code.UNAVAILABLE, `${this.o.address}: ${why}`, true));
        });
        req.end(body);
      });
    } finally {
      clearTimeout(timer);
      this.aborts.delete(abort);
      release();
    }
  }
}

function decodeOr<T>(fn: { decode(b: Uint8Array): T }, body: Buffer, what: string): T {
  try {
    return fn.decode(body);
  } catch (e) {
    throw new HttpFailure(Code.INTERNAL, `the hub's answer is not a ${what}: ${(e as Error).message}`, false);
  }
}

/** About what a message takes on the wire: its output bytes dominate, the rest is small. */
function sizeOf(m: AgentMessage): number {
  return outputBytes(m) + 128;
}

function splitHostPort(address: string): [string, number] {
  const i = address.lastIndexOf(":");
  return [address.slice(0, i).replace(/^\[|\]$/g, ""), Number(address.slice(i + 1))];
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
