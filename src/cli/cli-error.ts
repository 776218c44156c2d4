// How the CLI fails: a usage problem (exit 2) or a failed operation (exit 1), each with a next step.
import { status } from "@grpc/grpc-js";
import { SwitchboardClientError } from "../client/index.js";

export const EXIT = {
  ok: 0,
  failed: 1,
  usage: 2,
  timeout: 124,
  interrupted: 130,
} as const;

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.failed,
    readonly hint?: string,
  ) {
    super(message);
    this.name = "CliError";
  }
}

export function usageError(message: string, hint?: string): CliError {
  return new CliError(message, EXIT.usage, hint);
}

/** The next step for a failed call, by its status code. */
export function hintFor(err: SwitchboardClientError): string | undefined {
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

/** Prints an error the way every command does, and returns the exit code to use. */
export function report(err: unknown): number {
  if (err instanceof CliError) {
    process.stderr.write(`error: ${err.message}\n`);
    if (err.hint) process.stderr.write(`hint: ${err.hint}\n`);
    return err.exitCode;
  }
  if (err instanceof SwitchboardClientError) {
    process.stderr.write(`error: ${err.message} (${err.codeName})\n`);
    const hint = hintFor(err);
    if (hint) process.stderr.write(`hint: ${hint}\n`);
    return EXIT.failed;
  }
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`error: ${message}\n`);
  return EXIT.failed;
}
