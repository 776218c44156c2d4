// The configuration reference in docs/ is made from the settings tables; this fails when a table
// changed and the pages were not written again (`npm run docs:config`).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { REFERENCE_PAGES, renderedPage } from "../scripts/config-reference.js";
import { ROOT } from "./support/root.js";

describe("configuration reference", () => {
  for (const { path, table } of REFERENCE_PAGES) {
    it(`${path} lists every ${table.program} setting as its table declares it`, async () => {
      const current = readFileSync(join(ROOT, path), "utf8");
      expect(current, `${path} is stale: run npm run docs:config`).toBe(await renderedPage(path, table));
      for (const key of Object.keys(table.settings)) expect(current).toContain(`\`${key}`);
    });
  }
});
