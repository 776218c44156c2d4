// A TCP proxy for the store's fault tests: it forwards to a database server until down(), which
// closes every connection and refuses new ones, as a server that restarted or went away would;
// up() lets connections through again. holdReplies() lets requests through but keeps the server's
// answers back, as a network that fails between a commit and its answer would.
import { createConnection, createServer, type Server, type Socket } from "node:net";

export class StoreTcpProxy {
  private readonly sockets = new Set<Socket>();
  /** Each connection's pair: the server's side and the client's. */
  private readonly replies = new Map<Socket, Socket>();
  private refusing = false;

  private constructor(
    private readonly server: Server,
    /** The port the proxy listens on, on 127.0.0.1. */
    readonly port: number,
  ) {}

  static async start(target: { host: string; port: number }): Promise<StoreTcpProxy> {
    const holder: { proxy?: StoreTcpProxy } = {};
    const server = createServer((client) => holder.proxy!.accept(client, target));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    if (!address || typeof address === "string") throw new Error("the proxy has no port");
    holder.proxy = new StoreTcpProxy(server, address.port);
    return holder.proxy;
  }

  /** Closes every connection, and new ones as they arrive, until up(). */
  down(): void {
    this.refusing = true;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  up(): void {
    this.refusing = false;
  }

  /** From now on, what the server sends on the open connections is not passed on. */
  holdReplies(): void {
    for (const [upstream, client] of this.replies) upstream.unpipe(client);
  }

  async close(): Promise<void> {
    this.down();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket, target: { host: string; port: number }): void {
    if (this.refusing) {
      client.destroy();
      return;
    }
    const upstream = createConnection(target);
    this.replies.set(upstream, client);
    upstream.on("close", () => this.replies.delete(upstream));
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      this.sockets.add(a);
      a.on("error", () => b.destroy());
      a.on("close", () => {
        this.sockets.delete(a);
        b.destroy();
      });
      a.pipe(b);
    }
  }
}
