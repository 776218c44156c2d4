// Token checks against a real SQLite store: every refusal and its sentence.
import { Metadata } from "@grpc/grpc-js";
import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Code, SwitchboardError } from "../common/errors.js";
import { silentLogger } from "../common/logger.js";
import { agentIdClaim, TokenAuthority, type Principal } from "./auth.js";
import { openSqliteStore, type SqliteStore, type TokenRecord } from "./store/index.js";

const stores: SqliteStore[] = [];
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
});

function setup(): { auth: TokenAuthority; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), "sb-auth-"));
  const store = openSqliteStore(join(dir, "db"));
  stores.push(store);
  return { auth: new TokenAuthority(store, silentLogger()), dir };
}

const md = (token?: string): Metadata => {
  const m = new Metadata();
  if (token) m.set("authorization", `Bearer ${token}`);
  return m;
};

describe("TokenAuthority", () => {
  it("writes the first admin token 0600 and accepts it", async () => {
    const { auth, dir } = setup();
    const file = await auth.bootstrapAdmin(dir);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const secret = readFileSync(file, "utf8").trim();
    expect((await auth.requireClient(md(secret), "admin")).role).toBe("admin");
    expect(await auth.bootstrapAdmin(dir)).toBe(file);
    expect(readFileSync(file, "utf8").trim()).toBe(secret); // not replaced on the next start
  });

  it("refuses missing, unknown and revoked tokens with UNAUTHENTICATED", async () => {
    const { auth } = setup();
    await expect(auth.authenticate(md())).rejects.toThrow(/missing token/);
    await expect(auth.authenticate(md("sbt_nope"))).rejects.toThrow(/unknown token/);
    const { secret, record } = await auth.create({ name: "ci", role: "operator" });
    expect((await auth.authenticate(md(secret))).name).toBe("ci");
    let revoked = "";
    auth.onRevoke((id) => (revoked = id));
    await auth.revoke("ci");
    expect(revoked).toBe(record.id);
    await expect(auth.authenticate(md(secret))).rejects.toThrow(/token ci was revoked/);
  });

  it("keeps roles apart", async () => {
    const { auth } = setup();
    const viewer = (await auth.create({ role: "viewer" })).secret;
    const agent = (await auth.create({ role: "agent", pools: ["p"] })).secret;
    expect((await auth.requireClient(md(viewer), "viewer")).role).toBe("viewer");
    await expect(auth.requireClient(md(viewer), "operator")).rejects.toThrow(
      /role viewer cannot run or cancel tasks/,
    );
    await expect(auth.requireClient(md(agent), "viewer")).rejects.toThrow(/is an agent token/);
    await expect(auth.requireAgent(md(viewer))).rejects.toThrow(/agents need an agent token/);
    expect((await auth.requireAgent(md(agent))).pools).toEqual(["p"]);
  });

  it("validates what it creates", async () => {
    const { auth } = setup();
    await expect(auth.create({ role: "root" })).rejects.toThrow(/unknown role/);
    await expect(auth.create({ role: "operator", agentId: "a" })).rejects.toThrow(/only agent tokens/);
    await expect(auth.create({ role: "viewer", name: "bad name!" })).rejects.toThrow(/not allowed/);
    await expect(auth.revoke("nobody")).rejects.toThrow(/no token/);
  });
});

describe("agentIdClaim", () => {
  const principal = (tokenId: string, over: Partial<Principal> = {}): Principal => ({
    tokenId,
    name: tokenId,
    role: "agent",
    pools: [],
    agentId: null,
    allowTakeover: false,
    ...over,
  });
  const tokens = new Map<string, TokenRecord>([
    ["tok_live", tokenRecord("tok_live", null)],
    ["tok_revoked", tokenRecord("tok_revoked", 1_000)],
  ]);
  const byId = (id: string): Promise<TokenRecord | undefined> => Promise.resolve(tokens.get(id));
  const claim = (p: Principal, pool: string, rec?: { pool: string; tokenId: string | null }) =>
    agentIdClaim(p, "b1", pool, rec, byId);

  it("gives a new id to whoever registers it first, and keeps it for that token", async () => {
    expect(await claim(principal("tok_live"), "B")).toBe("new");
    expect(await claim(principal("tok_live"), "B", { pool: "B", tokenId: "tok_live" })).toBe("owner");
  });

  it("refuses another pool's token, whatever the token allows", async () => {
    const rec = { pool: "B", tokenId: "tok_live" };
    for (const p of [
      principal("tok_a"),
      principal("tok_a", { allowTakeover: true }),
      principal("tok_a", { agentId: "b1" }),
    ]) {
      const e = await rejected(claim(p, "A", rec));
      expect(e.code).toBe(Code.PERMISSION_DENIED);
      expect(e.message).toBe(
        "agent id b1 is registered to pool B with another token, not A; an admin can release it with `switchboard agents forget b1`",
      );
    }
    // Its own token does not move it to another pool either.
    expect((await rejected(claim(principal("tok_live"), "A", rec))).message).toMatch(
      /^agent id b1 is registered to pool B, not A;/,
    );
    // Nor does a record from before token ownership, nor a revoked token's record.
    expect((await rejected(claim(principal("tok_a"), "A", { pool: "B", tokenId: null }))).message).toMatch(
      /^agent id b1 is registered to pool B, not A;/,
    );
    expect((await rejected(claim(principal("tok_a"), "A", { pool: "B", tokenId: "tok_revoked" }))).code).toBe(
      Code.PERMISSION_DENIED,
    );
  });

  it("refuses another token of the same pool, pinned or not", async () => {
    const rec = { pool: "B", tokenId: "tok_live" };
    for (const p of [principal("tok_b2"), principal("tok_b2", { agentId: "b1" })]) {
      const e = await rejected(claim(p, "B", rec));
      expect(e.code).toBe(Code.PERMISSION_DENIED);
      expect(e.message).toBe(
        "agent id b1 is registered to pool B with another token; an admin can release it with `switchboard agents forget b1`",
      );
    }
    // The tokenless seed-000 principal (a token id the store does not know) keeps its ids too.
    expect((await rejected(claim(principal("tok_b2"), "B", { pool: "B", tokenId: "" }))).code).toBe(
      Code.PERMISSION_DENIED,
    );
    expect(await claim(principal(""), "B", { pool: "B", tokenId: "" })).toBe("owner");
  });

  it("lets the id change hands within its pool where an admin meant it to", async () => {
    expect(await claim(principal("tok_b2"), "B", { pool: "B", tokenId: null })).toBe("unowned");
    expect(await claim(principal("tok_b2"), "B", { pool: "B", tokenId: "tok_revoked" })).toBe(
      "owner-revoked",
    );
    expect(
      await claim(principal("tok_b2", { allowTakeover: true }), "B", { pool: "B", tokenId: "tok_live" }),
    ).toBe("takeover");
  });
});

function tokenRecord(id: string, revokedAt: number | null): TokenRecord {
  return {
    id,
    name: id,
    role: "agent",
    pools: ["B"],
    agentId: null,
    allowTakeover: false,
    hash: id,
    createdAt: 0,
    revokedAt,
    lastUsedAt: null,
  };
}

async function rejected(promise: Promise<unknown>): Promise<SwitchboardError> {
  try {
    await promise;
  } catch (e) {
    if (e instanceof SwitchboardError) return e;
    throw e;
  }
  throw new Error("expected a SwitchboardError");
}
