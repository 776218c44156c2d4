// Token checks against a real SQLite store: every refusal and its sentence.
import { Metadata } from "@grpc/grpc-js";
import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../common/logger.js";
import { TokenAuthority } from "./auth.js";
import { openSqliteStore, type SqliteStore } from "./store/index.js";

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
  it("writes the first admin token 0600 and accepts it", () => {
    const { auth, dir } = setup();
    const file = auth.bootstrapAdmin(dir);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const secret = readFileSync(file, "utf8").trim();
    expect(auth.requireClient(md(secret), "admin").role).toBe("admin");
    expect(auth.bootstrapAdmin(dir)).toBe(file);
    expect(readFileSync(file, "utf8").trim()).toBe(secret); // not replaced on the next start
  });

  it("refuses missing, unknown and revoked tokens with UNAUTHENTICATED", () => {
    const { auth } = setup();
    expect(() => auth.authenticate(md())).toThrow(/missing token/);
    expect(() => auth.authenticate(md("sbt_nope"))).toThrow(/unknown token/);
    const { secret, record } = auth.create({ name: "ci", role: "operator" });
    expect(auth.authenticate(md(secret)).name).toBe("ci");
    let revoked = "";
    auth.onRevoke((id) => (revoked = id));
    auth.revoke("ci");
    expect(revoked).toBe(record.id);
    expect(() => auth.authenticate(md(secret))).toThrow(/token ci was revoked/);
  });

  it("keeps roles apart", () => {
    const { auth } = setup();
    const viewer = auth.create({ role: "viewer" }).secret;
    const agent = auth.create({ role: "agent", pools: ["p"] }).secret;
    expect(auth.requireClient(md(viewer), "viewer").role).toBe("viewer");
    expect(() => auth.requireClient(md(viewer), "operator")).toThrow(
      /role viewer cannot run or cancel tasks/,
    );
    expect(() => auth.requireClient(md(agent), "viewer")).toThrow(/is an agent token/);
    expect(() => auth.requireAgent(md(viewer))).toThrow(/agents need an agent token/);
    expect(auth.requireAgent(md(agent)).pools).toEqual(["p"]);
  });

  it("validates what it creates", () => {
    const { auth } = setup();
    expect(() => auth.create({ role: "root" })).toThrow(/unknown role/);
    expect(() => auth.create({ role: "operator", agentId: "a" })).toThrow(/only agent tokens/);
    expect(() => auth.create({ role: "viewer", name: "bad name!" })).toThrow(/not allowed/);
    expect(() => auth.revoke("nobody")).toThrow(/no token/);
  });
});
