// The client streams that stay open (watches, input, sessions): held so that a revoked token's
// streams end at once, and every stream ends with a clear sentence when the hub stops.
import type { Principal } from "./auth.js";

export interface ClientStream {
  principal: Principal;
  end(code: number, details: string): void;
}

export class ClientStreams {
  private readonly open = new Set<ClientStream>();

  /** Holds the stream until the returned function is called (when it ends). */
  track(principal: Principal, end: ClientStream["end"]): () => void {
    const entry: ClientStream = { principal, end };
    this.open.add(entry);
    return () => this.open.delete(entry);
  }

  /** Ends the streams opened with the token. */
  endForToken(tokenId: string, code: number, details: (name: string) => string): void {
    for (const c of [...this.open])
      if (c.principal.tokenId === tokenId) c.end(code, details(c.principal.name));
  }

  get size(): number {
    return this.open.size;
  }

  endAll(code: number, details: string): void {
    for (const c of [...this.open]) c.end(code, details);
  }
}
