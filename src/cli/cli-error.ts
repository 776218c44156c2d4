// How the CLI fails: a usage problem (exit 2) or a failed operation (exit 1), each with a next step.
import { status } from "@grpc/grpc-js";
import { SwitchboardError } from "../client/index.js";
import { SettingsError } from "../common/settings.js";
import { StartupError } from "../common/startup-error.js";
import { TlsFileError } from "../common/tls.js";

export const EXIT = {
  ok: 0,
  failed: 1,
  usage: 2,
  timeout: 124,
  interrupted: 130,
} as const;

/**
 * A failure the CLI words itself: its exit code and a next step. A usage problem is INVALID_ARGUMENT
 * (exit 2); other failures carry the code of what failed when there is one.
 */
export class CliError extends SwitchboardError {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.failed,
    readonly hint?: string,
    code: status = exitCode === EXIT.usage ? status.INVALID_ARGUMENT : status.UNKNOWN,
  ) {
    super(code, message);
    this.name = "CliError";
  }
}

export function usageError(message: string, hint?: string): CliError {
  return new CliError(message, EXIT.usage, hint);
}

/** The next step for a failed call, by its status code. */
export function hintFor(err: SwitchboardError): string | undefined {
  switch (err.code) {
    case status.UNAUTHENTICATED:
      return "pass --token or set SWITCHBOARD_TOKEN; on the hub's machine an admin token is in <data dir>/admin.token";
    case status.PERMISSION_DENIED:
      return "ask an admin for a token with the role or pool this needs (switchboard token create --help)";
    case status.RESOURCE_EXHAUSTED:
      return "retry later, or add agents to the pool";
    case status.NOT_FOUND:
      return "list what exists with `switchboard tasks` or `switchboard agents --all`";
    case status.DEADLINE_EXCEEDED:
      return "raise --timeout, or check `switchboard agents` for busy or missing agents";
    default:
      return undefined;
  }
}

/**
 * Whether the command line asks for debug logs (`--log-level debug` or `trace`, or
 * SWITCHBOARD_LOG_LEVEL): then errors come with their stack traces, otherwise as one sentence.
 */
export function debugRequested(argv: readonly string[] = process.argv, env = process.env): boolean {
  let level = env.SWITCHBOARD_LOG_LEVEL;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--log-level") level = argv[i + 1];
    else if (a.startsWith("--log-level=")) level = a.slice("--log-level=".length);
  }
  return level !== undefined && ["debug", "trace"].includes(level.toLowerCase());
}

function isLocalFault(err: SwitchboardError): boolean {
  return err instanceof StartupError || err instanceof SettingsError || err instanceof TlsFileError;
}

/** Prints an error the way every command does, and returns the exit code to use. */
export function report(err: unknown): number {
  if (err instanceof CliError) {
    process.stderr.write(`error: ${err.message}\n`);
    if (err.hint) process.stderr.write(`hint: ${err.hint}\n`);
    return err.exitCode;
  }
  // A refusal from the hub carries its status code; a local start-up fault (a port in use, a bad
  // setting or TLS file) is already one sentence naming the setting, and falls through below.
  if (err instanceof SwitchboardError && !isLocalFault(err)) {
    process.stderr.write(`error: ${err.message} (${err.codeName})\n`);
    const hint = hintFor(err);
    if (hint) process.stderr.write(`hint: ${hint}\n`);
    return EXIT.failed;
  }
  // Anything else (a start-up failure, or a fault of our own) is one line; its stack is for debugging.
  process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
  if (debugRequested() && err instanceof Error) {
    process.stderr.write(`${err.stack ?? ""}\n`);
    if (err.cause instanceof Error)
      process.stderr.write(`caused by: ${err.cause.stack ?? err.cause.message}\n`);
  }
  return EXIT.failed;
}
