// The integration project lists its specs by path; a spec moved or renamed without this list would fall
// into the unit project (which must start no server and no process) or vanish from it unnoticed.
import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const config = readFileSync(new URL("../vitest.config.ts", import.meta.url), "utf8");
const listed = [...config.matchAll(/^\s+"(src\/[^"]+\.spec\.ts)",$/gm)].map((m) => m[1]!);

describe("the vitest projects", () => {
  it("list integration specs that exist", () => {
    expect(listed.length).toBeGreaterThan(10);
    expect(listed.filter((p) => !existsSync(new URL(`../${p}`, import.meta.url)))).toEqual([]);
  });
});
