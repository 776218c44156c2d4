// A TCP proxy the tests control, to break links the way networks do: cut (connections closed),
// blackhole (bytes stop flowing both ways, no FIN, as in a partition) and heal.
import { createConnection, createServer, type Server, type Socket } from "node:net";

interface Pair {
  client: Socket;
  upstream: Socket;
  blackholed: boolean;
}

export class TcpProxy {
  private readonly pairs = new Set<Pair>();
  private blackholing = false;
  private refusing = false;

  private constructor(
    private readonly server: Server,
    readonly address: string,
    private readonly target: { host: string; port: number },
  ) {}

  static async start(target: string): Promise<TcpProxy> {
    const i = target.lastIndexOf(":");
    const t = { host: target.slice(0, i), port: Number(target.slice(i + 1)) };
    const accepted: Socket[] = [];
    const holder: { proxy?: TcpProxy } = {};
    const server = createServer((client) => {
      if (holder.proxy) holder.proxy.accept(client);
      else accepted.push(client);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const addr = server.address();
    if (!addr || typeof addr === "string") throw new Error("proxy has no port");
    const proxy = new TcpProxy(server, `127.0.0.1:${addr.port}`, t);
    holder.proxy = proxy;
    for (const c of accepted.splice(0)) proxy.accept(c);
    return proxy;
  }

  /** Connections open through the proxy now. */
  get connections(): number {
    return this.pairs.size;
  }

  /** Closes every connection (new ones are still accepted). */
  cut(): void {
    for (const p of this.pairs) this.drop(p);
  }

  /**
   * Closes the client side of every open connection and leaves the server side open and silent:
   * the client sees its link drop, the server sees nothing (until its keepalive gives up).
   */
  dropClientSide(): void {
    for (const p of this.pairs) {
      p.blackholed = true;
      p.client.removeAllListeners("close");
      p.client.destroy();
    }
  }

  /** The link goes down: open connections close and new ones are closed as they arrive, until up(). */
  down(): void {
    this.refusing = true;
    this.cut();
  }

  up(): void {
    this.refusing = false;
  }

  /** Stops forwarding, on open connections and on new ones, without closing anything. */
  blackhole(): void {
    this.blackholing = true;
    for (const p of this.pairs) p.blackholed = true;
  }

  /** Forwards again; connections that were blackholed are closed, as their peers gave up on them. */
  heal(): void {
    this.blackholing = false;
    for (const p of this.pairs) if (p.blackholed) this.drop(p);
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise((r) => this.server.close(r));
  }

  private accept(client: Socket): void {
    if (this.refusing) {
      client.destroy();
      return;
    }
    const upstream = createConnection(this.target);
    const pair: Pair = { client, upstream, blackholed: this.blackholing };
    this.pairs.add(pair);
    const forward = (from: Socket, to: Socket) =>
      from.on("data", (b: Buffer) => {
        if (!pair.blackholed) to.write(b);
      });
    forward(client, upstream);
    forward(upstream, client);
    const end = () => this.drop(pair);
    client.on("close", end).on("error", end);
    upstream.on("close", end).on("error", end);
  }

  private drop(p: Pair): void {
    if (!this.pairs.delete(p)) return;
    p.client.destroy();
    p.upstream.destroy();
  }
}
