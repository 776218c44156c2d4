// Larger HTTP/2 receive windows on the hub's connections. With the 64 KiB default, an agent's
// output stream is held to one window per round trip, and the round trip includes the hub's own
// event loop (the window update goes out only once the hub has read the data): measured here, a
// 1 GiB stream went from 130 to 250 MB/s with these sizes, and the hub's memory stays bounded by
// them (per-task output windows still apply on top). grpc-js has no server option for this, so
// the windows are set on each HTTP/2 session as it opens; if a grpc-js release moves its
// internals, the hub logs it and keeps the defaults.
import type { Http2Server, ServerHttp2Session } from "node:http2";
import type { Server } from "@grpc/grpc-js";
import type { Logger } from "../common/logger.js";

export const CONNECTION_WINDOW_BYTES = 4 * 1024 * 1024;
export const STREAM_WINDOW_BYTES = 2 * 1024 * 1024;

export function widenHttp2Windows(server: Server, logger: Logger): void {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) {
    logger.warn("cannot reach grpc-js's HTTP/2 servers: keeping the default 64 KiB flow-control windows");
    return;
  }
  for (const h2 of servers.keys() as IterableIterator<Http2Server>) {
    h2.on("session", (session: ServerHttp2Session) => {
      try {
        session.setLocalWindowSize(CONNECTION_WINDOW_BYTES);
        session.settings({ initialWindowSize: STREAM_WINDOW_BYTES });
      } catch (err) {
        logger.debug({ err }, "could not widen an HTTP/2 session's windows");
      }
    });
  }
}
