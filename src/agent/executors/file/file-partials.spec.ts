import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Partials } from "./file-partials.js";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "sb-partials-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const HOUR = 3_600_000;

/** A file (or directory) last written `ageMs` ago. */
function aged(name: string, ageMs: number, asDir = false): string {
  const p = join(dir, name);
  if (asDir) {
    mkdirSync(join(p, "inside"), { recursive: true });
    writeFileSync(join(p, "inside", "f"), "x");
  } else {
    writeFileSync(p, "partial bytes");
  }
  const t = (Date.now() - ageMs) / 1000;
  utimesSync(p, t, t);
  return p;
}

describe("partial uploads", () => {
  it("removes what nobody resumed within the time to live; keeps the young, the busy and their list", async () => {
    const list = join(dir, "state", "partials.json");
    const busy = new Set<string>();
    const partials = new Partials({ file: list, ttlMs: 24 * HOUR, busy: (p) => busy.has(p) });
    const old = aged(".a.bin.sb-upload-1", 25 * HOUR);
    const oldTree = aged(".t.sb-upload-2.tar", 30 * HOUR);
    const oldDir = aged(".t.sb-upload-2", 30 * HOUR, true);
    const young = aged(".b.bin.sb-upload-3", 1 * HOUR);
    const inUse = aged(".c.bin.sb-upload-4", 48 * HOUR);
    const gone = join(dir, ".d.bin.sb-upload-5");
    busy.add(inUse);
    await partials.note(old, oldTree, oldDir, young, inUse, gone);
    expect(JSON.parse(readFileSync(list, "utf8"))).toHaveLength(6);

    const removed = await partials.sweep();
    expect(removed.sort()).toEqual([old, oldDir, oldTree].sort());
    for (const p of removed) expect(existsSync(p)).toBe(false);
    expect(existsSync(young)).toBe(true);
    expect(existsSync(inUse)).toBe(true);
    // The list holds what is left to watch; a later run reads it.
    const again = new Partials({ file: list, ttlMs: 24 * HOUR, busy: () => false });
    await again.load();
    expect(again.size).toBe(2);
    expect(again.has(young) && again.has(inUse)).toBe(true);
    await again.forget(young);
    const third = new Partials({ file: list, ttlMs: 24 * HOUR, busy: () => false });
    await third.load();
    expect(third.size).toBe(1);
  });

  it("with a time to live of 0 removes nothing, and reads a damaged list as empty", async () => {
    const list = join(dir, "damaged.json");
    writeFileSync(list, "{not json");
    const partials = new Partials({ file: list, ttlMs: 0, busy: () => false });
    await partials.load();
    expect(partials.size).toBe(0);
    const ancient = aged(".e.bin.sb-upload-6", 1000 * HOUR);
    await partials.note(ancient);
    expect(await partials.sweep()).toEqual([]);
    expect(existsSync(ancient)).toBe(true);
  });
});
