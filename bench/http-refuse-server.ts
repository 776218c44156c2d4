// Child process for the http-unauth-flood benchmark's peer: a bare node:http server that answers every
// request 401 from its headers, before reading its body, the way a plain Node service would (Node
// then reads the unread body to drop it and closes the connection). Prints "READY <port>" once bound.
// SIGTERM shuts it down.
//
//   node dist/bench/http-refuse-server.js
import { createServer } from "node:http";

const BODY = "UNAUTHENTICATED: unknown token\n";

const server = createServer((_req, res) => {
  res.writeHead(401, {
    "content-type": "text/plain; charset=utf-8",
    "content-length": Buffer.byteLength(BODY),
    connection: "close",
  });
  res.end(BODY);
});
server.listen(0, "127.0.0.1", () => {
  const addr = server.address();
  process.stdout.write(`READY ${typeof addr === "object" && addr ? addr.port : 0}\n`);
});
process.once("SIGTERM", () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
