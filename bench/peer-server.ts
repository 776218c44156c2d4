// What the gRPC peer servers share: bind on the given loopback port, say READY with the port on
// stdout (the harness waits for it), and stop on SIGTERM or SIGINT.
import * as grpc from "@grpc/grpc-js";

export function servePeer(server: grpc.Server, port: string | number): void {
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
    if (err !== null) {
      process.stderr.write(`bind failed: ${err.message}\n`);
      process.exit(1);
    }
    process.stdout.write(`READY ${bound}\n`);
  });
  const stop = (): void => {
    server.tryShutdown(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
