// Where the CLI finds its hub and token: flags, then SWITCHBOARD_HUB / SWITCHBOARD_TOKEN (empty
// counts as unset), then the files a hub on this machine writes into its data dir (hub.json and
// admin.token in $SWITCHBOARD_DATA, default ./data), then 127.0.0.1:7000.
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { SwitchboardClient } from "../client/index.js";

export interface ConnectionFlags {
  hub?: string;
  master?: string;
  token?: string;
}

export const DEFAULT_HUB = "127.0.0.1:7000";

export function dataDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.SWITCHBOARD_DATA || "./data");
}

function nonEmpty(v: string | undefined): string | undefined {
  return v && v.trim() ? v.trim() : undefined;
}

export function resolveHub(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): string {
  const explicit = nonEmpty(flags.hub) ?? nonEmpty(flags.master) ?? nonEmpty(env.SWITCHBOARD_HUB);
  if (explicit)
    return explicit
      .replace(/^[a-z][a-z0-9+.-]*:\/\//i, "")
      .split(",")[0]!
      .trim();
  const file = join(dataDir(env), "hub.json");
  if (existsSync(file)) {
    try {
      const info = JSON.parse(readFileSync(file, "utf8")) as { address?: unknown };
      if (typeof info.address === "string" && info.address) return info.address;
    } catch {
      // A torn or foreign file: fall through to the default.
    }
  }
  return DEFAULT_HUB;
}

export function resolveToken(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): string {
  const explicit = nonEmpty(flags.token) ?? nonEmpty(env.SWITCHBOARD_TOKEN);
  if (explicit) return explicit;
  const file = join(dataDir(env), "admin.token");
  try {
    return readFileSync(file, "utf8").trim();
  } catch {
    return "";
  }
}

export function connect(flags: ConnectionFlags): SwitchboardClient {
  return new SwitchboardClient({ hub: resolveHub(flags), token: resolveToken(flags) });
}
