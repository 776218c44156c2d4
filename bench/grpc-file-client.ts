// Child process for the file-transfer peer's client side, so that it is timed like the CLI (spawn to
// exit): uploads a file to, or downloads one from, bench/grpc-file-server.ts over one bare grpc-js stream.
//
//   node dist/bench/grpc-file-client.js upload HOST:PORT LOCAL_FILE REMOTE_PATH
//   node dist/bench/grpc-file-client.js download HOST:PORT REMOTE_PATH LOCAL_FILE
import { once } from "node:events";
import { createReadStream, createWriteStream } from "node:fs";
import * as grpc from "@grpc/grpc-js";

// The methods of bench/grpc-file-server.ts (not imported: that module starts the server).
const FILE_DOWNLOAD_METHOD = "/bench.Files/Download";
const FILE_UPLOAD_METHOD = "/bench.Files/Upload";
const CHUNK = 256 * 1024;
const identity = (b: Buffer): Buffer => b;

const [mode, address, from, to] = process.argv.slice(2);
if ((mode !== "upload" && mode !== "download") || !address || !from || !to) {
  process.stderr.write("usage: grpc-file-client.js upload|download HOST:PORT FROM TO\n");
  process.exit(2);
}
const client = new grpc.Client(address, grpc.credentials.createInsecure());

async function upload(local: string, remote: string): Promise<void> {
  let answered!: Promise<Buffer>;
  const call = await new Promise<grpc.ClientWritableStream<Buffer>>((resolve) => {
    answered = new Promise<Buffer>((res, rej) => {
      resolve(
        client.makeClientStreamRequest(FILE_UPLOAD_METHOD, identity, identity, (err, value) =>
          err ? rej(err) : res(value!),
        ),
      );
    });
  });
  call.write(Buffer.from(remote));
  for await (const chunk of createReadStream(local, { highWaterMark: CHUNK })) {
    if (!call.write(chunk as Buffer)) await once(call, "drain");
  }
  call.end();
  await answered;
}

async function download(remote: string, local: string): Promise<void> {
  const out = createWriteStream(local);
  const call = client.makeServerStreamRequest(FILE_DOWNLOAD_METHOD, identity, identity, Buffer.from(remote));
  for await (const chunk of call) {
    if (!out.write(chunk as Buffer)) await once(out, "drain");
  }
  await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
}

try {
  if (mode === "upload") await upload(from, to);
  else await download(from, to);
} catch (e) {
  process.stderr.write(`grpc-file-client ${mode} failed: ${(e as Error).message}\n`);
  process.exitCode = 1;
} finally {
  client.close();
}
