// Where the CLI finds its hub and token: flags, then SWITCHBOARD_HUB / SWITCHBOARD_TOKEN (empty
// counts as unset), then the files a hub on this machine writes into its data dir (hub.json and
// admin.token in $SWITCHBOARD_DATA, default ./data), then 127.0.0.1:7000.
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { SwitchboardClient } from "../client/index.js";
import { clientChannel, TlsFileError, type ClientTlsFiles } from "../common/tls.js";
import { usageError } from "./cli-error.js";

export interface ConnectionFlags {
  hub?: string;
  master?: string;
  token?: string;
  tls?: boolean;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsServerName?: string;
}

export const DEFAULT_HUB = "127.0.0.1:7000";

export function dataDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.SWITCHBOARD_DATA || "./data");
}

function nonEmpty(v: string | undefined): string | undefined {
  return v && v.trim() ? v.trim() : undefined;
}

interface HubJson {
  address?: unknown;
  tls?: unknown;
}

/** The hub.json a hub on this machine wrote into the data dir, if any. */
function localHub(env: NodeJS.ProcessEnv): HubJson | undefined {
  const file = join(dataDir(env), "hub.json");
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, "utf8")) as HubJson;
  } catch {
    return undefined; // a torn or foreign file: as if absent
  }
}

function explicitHub(flags: ConnectionFlags, env: NodeJS.ProcessEnv): string | undefined {
  return nonEmpty(flags.hub) ?? nonEmpty(flags.master) ?? nonEmpty(env.SWITCHBOARD_HUB);
}

export function resolveHub(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): string {
  const explicit = explicitHub(flags, env);
  if (explicit)
    return explicit
      .replace(/^[a-z][a-z0-9+.-]*:\/\//i, "")
      .split(",")[0]!
      .trim();
  const info = localHub(env);
  if (typeof info?.address === "string" && info.address) return info.address;
  return DEFAULT_HUB;
}

/**
 * TLS for the client: flags, then SWITCHBOARD_TLS_CA / _CERT / _KEY. On when any is given, with
 * --tls or SWITCHBOARD_TLS=1, or when the local hub's hub.json says it serves TLS.
 */
export function resolveTls(
  flags: ConnectionFlags,
  env: NodeJS.ProcessEnv = process.env,
): ClientTlsFiles | undefined {
  const ca = nonEmpty(flags.tlsCa) ?? nonEmpty(env.SWITCHBOARD_TLS_CA);
  const cert = nonEmpty(flags.tlsCert) ?? nonEmpty(env.SWITCHBOARD_TLS_CERT);
  const key = nonEmpty(flags.tlsKey) ?? nonEmpty(env.SWITCHBOARD_TLS_KEY);
  const serverName = nonEmpty(flags.tlsServerName);
  const on =
    flags.tls === true ||
    env.SWITCHBOARD_TLS === "1" ||
    ca !== undefined ||
    cert !== undefined ||
    (explicitHub(flags, env) === undefined && localHub(env)?.tls === true);
  if (!on) return undefined;
  if ((cert === undefined) !== (key === undefined)) {
    throw usageError("a client certificate needs both --tls-cert and --tls-key");
  }
  return {
    ...(ca ? { ca: resolve(ca) } : {}),
    ...(cert ? { cert: resolve(cert) } : {}),
    ...(key ? { key: resolve(key) } : {}),
    ...(serverName ? { serverName } : {}),
  };
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
  let channel;
  try {
    channel = clientChannel(resolveTls(flags));
  } catch (e) {
    if (e instanceof TlsFileError) throw usageError(e.message.replace(/^tls\./, "--tls-"));
    throw e;
  }
  return new SwitchboardClient({
    hub: resolveHub(flags),
    token: resolveToken(flags),
    credentials: channel.credentials,
    channelOptions: channel.options,
  });
}
