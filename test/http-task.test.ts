// Http tasks end to end: a real hub and agent processes, an HTTP service this file starts (large body,
// gzip, form uploads, redirects, a slow body), driven through `switchboard http` as a user would; SSRF
// attempts (metadata addresses, URLs off the allowlist, redirects leaving it) are refused with a reason.
import { createHash } from "node:crypto";
import { once } from "node:events";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { http, SwitchboardClient, TaskState } from "../src/client/index.js";
import { OutputStream, type Finished } from "../src/gen/switchboard/v1/task.js";
import {
  runCli,
  spawnCli,
  startAgent,
  startHub,
  stopAll,
  tempDir,
  type HubProc,
} from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

const BIG = 20 * 1024 * 1024;
const TEXT = "switchboard http over gzip\n".repeat(5000);

/** 20 MB that are not all the same byte, built once. */
const big = Buffer.alloc(BIG);
for (let i = 0; i < BIG; i++) big[i] = (i * 7 + (i >> 12)) & 0xff;
const sha = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

let hub: HubProc;
let client: SwitchboardClient;
let service: Server;
let outside: Server;
let base: string;
let outsideBase: string;
let dir: string;
/** Responses of /slow whose connection closed before they ended. */
let slowAbandoned = 0;

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const body = Buffer.concat(chunks);
  const url = new URL(req.url ?? "/", base);
  const json = (v: unknown): void => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify(v));
  };
  switch (url.pathname) {
    case "/big":
      res.setHeader("content-length", BIG);
      for (let off = 0; off < BIG; off += 256 * 1024) {
        if (!res.write(big.subarray(off, off + 256 * 1024))) await once(res, "drain");
      }
      res.end();
      return;
    case "/gzip":
      res.setHeader("content-encoding", "gzip");
      res.end(gzipSync(Buffer.from(TEXT)));
      return;
    case "/echo":
      return json({
        method: req.method,
        contentType: req.headers["content-type"] ?? null,
        auth: req.headers.authorization ?? null,
        body: body.toString(),
      });
    case "/upload": {
      // The platform's own multipart parser checks what the CLI built.
      const form = await new Response(body, {
        headers: { "content-type": req.headers["content-type"] ?? "" },
      }).formData();
      const out: Record<string, unknown> = {};
      for (const [name, value] of form.entries()) {
        out[name] =
          typeof value === "string"
            ? value
            : {
                filename: value.name,
                type: value.type,
                size: value.size,
                sha: sha(Buffer.from(await value.arrayBuffer())),
              };
      }
      return json(out);
    }
    case "/sha":
      return json({
        method: req.method,
        length: body.length,
        sha: sha(body),
        contentLength: req.headers["content-length"] ?? null,
        transferEncoding: req.headers["transfer-encoding"] ?? null,
      });
    case "/redirect307":
      res.statusCode = 307;
      res.setHeader("location", "/sha");
      res.end();
      return;
    case "/missing":
      res.statusCode = 404;
      res.end("no such thing\n");
      return;
    case "/redirect":
      res.statusCode = 302;
      res.setHeader("location", url.searchParams.get("to") ?? "/echo");
      res.end();
      return;
    case "/slow":
      res.on("close", () => slowAbandoned++);
      res.write("first\n");
      return; // never ends
    default:
      res.statusCode = 500;
      res.end();
  }
}

async function listen(s: Server): Promise<string> {
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

/** `switchboard http --pool web ARGS...` through the built CLI. */
function httpCli(args: string[], pool = "web"): ReturnType<typeof runCli> {
  return runCli([...hub.cli, "http", "--pool", pool, ...args], { timeoutMs: 60_000 });
}

beforeAll(async () => {
  // A request the agent abandons mid-body (a broken length) ends the handler's read with an error.
  service = createServer((req, res) => void handle(req, res).catch(() => res.destroy()));
  base = await listen(service);
  outside = createServer((_req, res) => res.end("you should not see this\n"));
  outsideBase = await listen(outside);
  dir = tempDir("http");
  const config = join(dir, "agent.toml");
  writeFileSync(config, `[http]\nallow = ["${base}/"]\ntimeout_secs = 30\n`);
  hub = await startHub();
  await startAgent(hub, { agentId: "web-1", pool: "web", shell: false, args: ["--config", config] });
  await startAgent(hub, { agentId: "plain-1", pool: "plain", shell: false });
  client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
}, 120_000);

afterAll(async () => {
  client?.close();
  await stopAll();
  service?.closeAllConnections();
  service?.close();
  outside?.close();
});

describe("switchboard http", () => {
  it("GETs a 20 MB body to --out, whole, and leaves no partial file", async () => {
    const out = join(dir, "big.bin");
    const r = await httpCli(["-o", out, `${base}/big`]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("");
    const got = readFileSync(out);
    expect(got.length).toBe(BIG);
    expect(sha(got)).toBe(sha(big));
    expect(readdirSync(dir).filter((f) => f.includes(".partial-"))).toEqual([]);
  });

  it("decodes gzip with --compressed, and passes the compressed bytes through without it", async () => {
    const decoded = await httpCli(["--compressed", `${base}/gzip`]);
    expect(decoded.code).toBe(0);
    expect(decoded.stdout).toBe(TEXT);
    const raw = join(dir, "raw.gz");
    expect((await httpCli(["-o", raw, `${base}/gzip`])).code).toBe(0);
    expect(readFileSync(raw)).toEqual(gzipSync(Buffer.from(TEXT)));
  });

  it("POSTs -d data as a form, with headers, and prints the head with -i", async () => {
    const r = await httpCli([
      "-i",
      "-d",
      "a=1",
      "-d",
      "b=2",
      "-H",
      "Authorization: Bearer t0k",
      `${base}/echo`,
    ]);
    expect(r.code).toBe(0);
    const [head, body] = r.stdout.split("\r\n\r\n");
    expect(head).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(head).toContain("content-type: application/json");
    expect(JSON.parse(body!)).toEqual({
      method: "POST",
      contentType: "application/x-www-form-urlencoded",
      auth: "Bearer t0k",
      body: "a=1&b=2",
    });
    const payload = join(dir, "payload.txt");
    writeFileSync(payload, "line\n".repeat(100_000));
    const put = await httpCli(["-X", "PUT", "--data-file", payload, `${base}/echo`]);
    expect(put.code).toBe(0);
    expect(JSON.parse(put.stdout)).toEqual({
      method: "PUT",
      contentType: "application/octet-stream",
      auth: null,
      body: "line\n".repeat(100_000),
    });
  });

  it("streams a --data-file body larger than any message, with its Content-Length, byte for byte", async () => {
    const file = join(dir, "upload.bin");
    writeFileSync(file, Buffer.concat([big, big])); // 40 MiB: more than a message may carry
    const r = await httpCli(["--data-file", file, `${base}/sha`]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      method: "POST",
      length: 2 * BIG,
      sha: sha(Buffer.concat([big, big])),
      contentLength: String(2 * BIG),
      transferEncoding: null,
    });
    // -d stays inline, and says what to do when it is too large for that.
    const missing = await httpCli(["--data-file", join(dir, "nope.bin"), `${base}/sha`]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/--data-file: cannot read .*nope\.bin: ENOENT/);
  });

  it("a streamed body meets a 307 redirect: refused with the reason, since it cannot be sent twice", async () => {
    const file = join(dir, "small.bin");
    writeFileSync(file, "abc");
    const r = await httpCli(["-L", "--data-file", file, `${base}/redirect307`]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(
      /redirected \(307\) to .*\/sha, which needs the body again; .* send it to .*\/sha directly/,
    );
  });

  it("streams a multipart form with a 20 MB file part", async () => {
    const file = join(dir, "part.bin");
    writeFileSync(file, big);
    const r = await httpCli(["-F", "note=big one", "-F", `blob=@${file}`, `${base}/upload`]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      note: "big one",
      blob: { filename: "part.bin", type: "application/octet-stream", size: BIG, sha: sha(big) },
    });
  });

  it("uploads a multipart form with -F, files and fields as the service parses them", async () => {
    const file = join(dir, "report.csv");
    const content = Buffer.from('id,name\n1,Ada\n2,"Zoë, 東京"\n');
    writeFileSync(file, content);
    const r = await httpCli([
      "-F",
      "title=Q3 report",
      "-F",
      `report=@${file};type=text/csv`,
      `${base}/upload`,
    ]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      title: "Q3 report",
      report: { filename: "report.csv", type: "text/csv", size: content.length, sha: sha(content) },
    });
  });

  it("prints the body of a 404 and exits 0; --fail exits 22 without it", async () => {
    const plain = await httpCli([`${base}/missing`]);
    expect(plain.code).toBe(0);
    expect(plain.stdout).toBe("no such thing\n");
    const failing = await httpCli(["--fail", `${base}/missing`]);
    expect(failing.code).toBe(22);
    expect(failing.stdout).toBe("");
    expect(failing.stderr).toBe(`error: ${base}/missing answered 404 Not Found\n`);
  });

  it("follows redirects inside the allowlist with -L and refuses one that leaves it", async () => {
    const inside = await httpCli(["-L", `${base}/redirect?to=/echo`]);
    expect(inside.code).toBe(0);
    expect(JSON.parse(inside.stdout)).toMatchObject({ method: "GET" });

    const off = await httpCli(["-L", `${base}/redirect?to=${encodeURIComponent(`${outsideBase}/x`)}`]);
    expect(off.code).toBe(1);
    expect(off.stdout).toBe("");
    expect(off.stderr).toMatch(
      new RegExp(
        `task \\S+ failed: redirect from ${base}/redirect\\?… refused: ${outsideBase}/x is not under any of agent web-1's \\[http\\] allow prefixes`,
      ),
    );
  });

  it("refuses SSRF attempts with a clear reason: metadata addresses and URLs off the allowlist", async () => {
    const port = new URL(base).port;
    const cases: [string, RegExp][] = [
      [
        "http://169.254.169.254/latest/meta-data/",
        /169\.254\.169\.254 is a cloud metadata address; http tasks never reach it/,
      ],
      ["http://[::ffff:a9fe:a9fe]/", /is a cloud metadata address; http tasks never reach it/],
      [`http://localhost:${port}/echo`, /is not under any of agent web-1's \[http\] allow prefixes/],
      [`${base}@${new URL(outsideBase).host}/`, /may not hold a user name or password/],
      [`${outsideBase}/`, /not under any of agent web-1's/],
    ];
    for (const [url, reason] of cases) {
      const r = await httpCli([url]);
      expect(r.code, url).toBe(1);
      expect(r.stdout, url).toBe("");
      expect(r.stderr, url).toMatch(reason);
    }
  });

  it("times out a slow body (exit 124) and says why", async () => {
    const r = await httpCli(["--timeout", "1s", `${base}/slow`]);
    expect(r.code).toBe(124);
    expect(r.stdout).toBe("first\n");
    expect(r.stderr).toMatch(/timed out/);
  });

  it("Ctrl-C cancels the task, and the agent closes the connection to the service", async () => {
    const before = slowAbandoned;
    const p = spawnCli([...hub.cli, "http", "--pool", "web", `${base}/slow`]);
    await waitFor(() => p.stdout() === "first\n", { message: "the first line of the body" });
    p.kill("SIGINT");
    expect(await p.exited).toBe(130);
    expect(p.stderr()).toMatch(/cancelling the request/);
    await waitFor(() => slowAbandoned > before, { message: "the service to see the request go away" });
  });

  it("an agent without [http] allow does not take http tasks", async () => {
    const r = await httpCli([`${base}/echo`], "plain");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /no agent of pool plain accepts http tasks: list the URL prefixes it may reach in \[http\] allow/,
    );
  });

  it("from the SDK, a body sent as input: chunked when its length is not given, refused when it breaks it", async () => {
    const send = async (
      opts: { bodyLength?: number },
      pieces: Buffer[],
    ): Promise<{ state: TaskState; code: number; message: string; stdout: string }> => {
      let taskId = "";
      let stdout = "";
      let sending: Promise<unknown> | undefined;
      let finished: Finished | undefined;
      for await (const ev of client.run(
        {
          ...http({ url: `${base}/sha`, method: "PUT", bodyFromInput: true, ...opts }),
          target: { pool: "web" },
        },
        { onTaskId: (id) => (taskId = id) },
      )) {
        const e = ev.event;
        if (e?.$case === "started" && !sending) {
          sending = (async () => {
            const input = client.openInput(taskId);
            for (const p of pieces) await input.write(p);
            await input.end();
          })();
        } else if (e?.$case === "output" && e.value.stream === OutputStream.OUTPUT_STREAM_STDOUT)
          stdout += Buffer.from(e.value.data).toString();
        else if (e?.$case === "finished") finished = e.value;
      }
      await sending;
      if (!finished) throw new Error("no Finished");
      return {
        state: finished.state,
        code: finished.error?.code ?? 0,
        message: finished.error?.message ?? "",
        stdout,
      };
    };
    const pieces = [big.subarray(0, 300_000), big.subarray(300_000, 1_000_000)];
    const chunked = await send({}, pieces);
    expect(chunked.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    expect(JSON.parse(chunked.stdout)).toEqual({
      method: "PUT",
      length: 1_000_000,
      sha: sha(big.subarray(0, 1_000_000)),
      contentLength: null,
      transferEncoding: "chunked",
    });
    const short = await send({ bodyLength: 2_000_000 }, pieces);
    expect(short.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(short.code).toBe(3); // INVALID_ARGUMENT
    expect(short.message).toContain("after 1000000 of the 2000000 bytes it declared");
    const long = await send({ bodyLength: 500_000 }, pieces);
    expect(long.code).toBe(3);
    expect(long.message).toContain("more than the 500000 body bytes it declared");
    const both = await client.execute({
      ...http({ url: `${base}/sha`, body: "x", bodyFromInput: true }),
      target: { pool: "web" },
    });
    expect(both.info?.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(both.info?.error?.message).toContain("not both");
  });

  it("works from the SDK: head on stderr, body on stdout, summary as the result", async () => {
    const res = await client.execute({
      ...http({ url: `${base}/echo`, method: "DELETE" }),
      target: { pool: "web" },
    });
    expect(res.info?.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    const head = JSON.parse(Buffer.from(res.stderr).toString().split("\n")[0]!) as {
      status: number;
      url: string;
    };
    expect(head).toMatchObject({ status: 200, url: `${base}/echo` });
    expect(JSON.parse(Buffer.from(res.stdout).toString())).toMatchObject({ method: "DELETE" });
    expect(JSON.parse(Buffer.from(res.result).toString())).toEqual({
      status: 200,
      bytes: res.stdout.length,
      url: `${base}/echo`,
    });
    expect(existsSync(join(dir, "big.bin"))).toBe(true);
  });
});
