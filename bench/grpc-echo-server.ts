// Child process for the unary peer: a bare grpc-js server with one generic unary method that
// returns the request bytes as they came (raw Buffer serializers, no protobuf). Prints
// "READY <port>" once bound. SIGTERM shuts it down.
//
//   node dist/bench/grpc-echo-server.js [--port 0]
import { parseArgs } from "node:util";
import { servePeer } from "./peer-server.js";
import * as grpc from "@grpc/grpc-js";

const ECHO_METHOD = "/bench.Echo/Echo";

const { values } = parseArgs({ options: { port: { type: "string", default: "0" } } });

const identity = (b: Buffer): Buffer => b;
const service: grpc.ServiceDefinition = {
  Echo: {
    path: ECHO_METHOD,
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

const server = new grpc.Server();
server.addService(service, {
  Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
    callback(null, call.request);
  },
});
servePeer(server, values.port);
