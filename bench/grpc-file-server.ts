// Child process for the file-transfer peer: a bare grpc-js server with two generic methods on raw
// buffers (no protobuf). Download (server streaming): the request is a path; the file is sent in 256 KiB
// messages, honouring the stream's backpressure. Upload (client streaming): the first message is the
// destination path, the rest the file's bytes, written as they come (the call paused while the disk is
// behind); the answer is the byte count. Prints "READY <port>" once bound. SIGTERM shuts it down.
//
//   node dist/bench/grpc-file-server.js [--port 0]
import { createReadStream, createWriteStream } from "node:fs";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { servePeer } from "./peer-server.js";

const FILE_DOWNLOAD_METHOD = "/bench.Files/Download";
const FILE_UPLOAD_METHOD = "/bench.Files/Upload";
const CHUNK = 256 * 1024;

const { values } = parseArgs({ options: { port: { type: "string", default: "0" } } });

const identity = (b: Buffer): Buffer => b;
const service: grpc.ServiceDefinition = {
  Download: {
    path: FILE_DOWNLOAD_METHOD,
    requestStream: false,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
  Upload: {
    path: FILE_UPLOAD_METHOD,
    requestStream: true,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

function download(call: grpc.ServerWritableStream<Buffer, Buffer>): void {
  const file = createReadStream(call.request.toString("utf8"), { highWaterMark: CHUNK });
  let cancelled = false;
  call.on("cancelled", () => {
    cancelled = true;
    file.destroy();
  });
  file.on("data", (chunk) => {
    if (!call.write(chunk as Buffer)) {
      file.pause();
      call.once("drain", () => file.resume());
    }
  });
  file.on("end", () => {
    if (!cancelled) call.end();
  });
  file.on("error", (e) => call.destroy(e));
}

function upload(call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>): void {
  let out: ReturnType<typeof createWriteStream> | undefined;
  let bytes = 0;
  call.on("data", (chunk: Buffer) => {
    if (!out) {
      out = createWriteStream(chunk.toString("utf8"));
      return;
    }
    bytes += chunk.length;
    if (!out.write(chunk)) {
      call.pause();
      out.once("drain", () => call.resume());
    }
  });
  call.on("end", () => {
    if (!out) return cb(null, Buffer.from("0"));
    out.end(() => cb(null, Buffer.from(String(bytes))));
  });
  call.on("error", () => out?.destroy());
}

const server = new grpc.Server();
server.addService(service, { Download: download, Upload: upload });
servePeer(server, values.port);
