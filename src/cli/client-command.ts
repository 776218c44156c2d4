// What every command that talks to a hub shares: the connection flags (also accepted before the
// command name), a client that is always closed, and the task target flags.
import { Option, type Command } from "commander";
import type { SwitchboardClient, TargetInput } from "../client/index.js";
import { usageError } from "./cli-error.js";
import { connect, type ConnectionFlags } from "./connection.js";

export function addConnectionOptions(cmd: Command): Command {
  return cmd
    .option(
      "--hub <host:port>",
      "hub address (default: $SWITCHBOARD_HUB, else <data>/hub.json, else 127.0.0.1:7000)",
    )
    .addOption(new Option("--master <host:port>", "alias of --hub").hideHelp())
    .option("--token <token>", "API token (default: $SWITCHBOARD_TOKEN, else <data>/admin.token)")
    .addOption(new Option("--tls", "connect with TLS (implied by --tls-ca or --tls-cert)").hideHelp())
    .addOption(new Option("--tls-ca <file>", "CA of the hub's certificate").hideHelp())
    .addOption(new Option("--tls-cert <file>", "client certificate (mutual TLS)").hideHelp())
    .addOption(new Option("--tls-key <file>", "client certificate's key").hideHelp())
    .addOption(new Option("--tls-server-name <name>", "name in the hub's certificate").hideHelp());
}

export function clientCommand(parent: Command, nameAndArgs: string, description: string): Command {
  return addConnectionOptions(parent.command(nameAndArgs).description(description));
}

export async function withClient<T>(cmd: Command, fn: (client: SwitchboardClient) => Promise<T>): Promise<T> {
  const client = connect(cmd.optsWithGlobals<ConnectionFlags>());
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

export function addTargetOptions(cmd: Command): Command {
  return cmd
    .option("--agent <id>", "run on this agent")
    .option("--pool <name>", "run on the least-loaded healthy agent of this pool")
    .option("--labels <k=v,...>", "run on an agent carrying all these labels");
}

/**
 * Ends a command that sends a task: adds the target flags (after the command's own, as help lists them)
 * and the action, which gets the target they name, checked before anything else, then what commander
 * passes (the arguments, the flags, the command).
 */
export function targetAction<Args extends unknown[], F extends TargetFlags>(
  cmd: Command,
  action: (target: TargetInput, ...args: [...Args, F, Command]) => Promise<void>,
): Command {
  return addTargetOptions(cmd).action(async (...args: [...Args, F, Command]) => {
    await action(targetFrom(args[args.length - 2] as F), ...args);
  });
}

export interface TargetFlags {
  agent?: string;
  pool?: string;
  labels?: string;
}

export function parseLabels(raw: string, flag = "--labels"): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const part of raw
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean)) {
    const eq = part.indexOf("=");
    if (eq <= 0) throw usageError(`${flag}: expected key=value pairs separated by commas, got "${part}"`);
    labels[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  if (Object.keys(labels).length === 0) throw usageError(`${flag}: give at least one key=value`);
  return labels;
}

export function targetFrom(flags: TargetFlags): TargetInput {
  const given = [flags.agent, flags.pool, flags.labels].filter((v) => v !== undefined).length;
  if (given !== 1) {
    throw usageError(
      given === 0 ? "say where to run the task" : "give only one of --agent, --pool and --labels",
      "use --pool NAME, --agent ID or --labels k=v (switchboard agents lists them)",
    );
  }
  if (flags.agent !== undefined) return { agentId: flags.agent };
  if (flags.pool !== undefined) return { pool: flags.pool };
  return { labels: parseLabels(flags.labels!) };
}

export function describeTarget(t: TargetInput): string {
  if (t.agentId) return `agent ${t.agentId}`;
  if (t.pool) return `pool ${t.pool}`;
  return `labels ${Object.entries(t.labels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(",")}`;
}
