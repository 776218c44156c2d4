// Child process for the streaming peer: a bare grpc-js server with one generic server-streaming
// method. The request is 16 bytes: total bytes (u64 BE) and message size (u32 BE, then 4 unused).
// It sends that many bytes of zeros in messages of that size, honouring the stream's
// backpressure. Prints "READY <port>" once bound. SIGTERM shuts it down.
//
//   node dist/bench/grpc-stream-server.js [--port 0]
import { parseArgs } from "node:util";
import { servePeer } from "./peer-server.js";
import * as grpc from "@grpc/grpc-js";

const PULL_METHOD = "/bench.Stream/Pull";

const { values } = parseArgs({ options: { port: { type: "string", default: "0" } } });

const identity = (b: Buffer): Buffer => b;
const service: grpc.ServiceDefinition = {
  Pull: {
    path: PULL_METHOD,
    requestStream: false,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

function pull(call: grpc.ServerWritableStream<Buffer, Buffer>): void {
  const total = Number(call.request.readBigUInt64BE(0));
  const size = call.request.readUInt32BE(8);
  // One buffer of zeros sent again and again: like `head -c N /dev/zero`, content costs nothing.
  const chunk = Buffer.alloc(size);
  let left = total;
  let cancelled = false;
  call.on("cancelled", () => {
    cancelled = true;
  });
  const pump = (): void => {
    while (left > 0 && !cancelled) {
      const n = Math.min(size, left);
      left -= n;
      if (!call.write(n === size ? chunk : chunk.subarray(0, n))) {
        call.once("drain", pump);
        return;
      }
    }
    if (!cancelled) call.end();
  };
  pump();
}

const server = new grpc.Server();
server.addService(service, { Pull: pull });
servePeer(server, values.port);
