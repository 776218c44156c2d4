// The configuration reference in docs/configuration/: each program's settings table rendered between
// the settings markers of its page and formatted as prettier formats Markdown. `npm run docs:config`
// writes the pages; a test fails when a page differs from what this renders.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { format, resolveConfig } from "prettier";
import { AGENT_SETTINGS } from "../src/agent/settings.js";
import { renderReference, withReference } from "../src/common/settings-docs.js";
import type { Settings, SettingsTable } from "../src/common/settings.js";
import { HUB_SETTINGS } from "../src/hub/settings.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

export const REFERENCE_PAGES: readonly { path: string; table: SettingsTable<Settings> }[] = [
  { path: "docs/configuration/hub.md", table: HUB_SETTINGS },
  { path: "docs/configuration/agent.md", table: AGENT_SETTINGS },
];

/** The page at `path` (relative to the checkout) as it should read, its settings block made anew. */
export async function renderedPage(path: string, table: SettingsTable<Settings>): Promise<string> {
  const file = join(ROOT, path);
  const options = (await resolveConfig(file)) ?? {};
  return format(withReference(readFileSync(file, "utf8"), renderReference(table)), {
    ...options,
    filepath: file,
  });
}

/** Writes every page; `npm run docs:config`. */
export async function writeReferencePages(): Promise<void> {
  for (const { path, table } of REFERENCE_PAGES) {
    writeFileSync(join(ROOT, path), await renderedPage(path, table));
    console.log(`wrote ${path}`);
  }
}
