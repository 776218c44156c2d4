// Small parsers for flag values, each failing with a usage error that names the flag.
import { parseDuration } from "../common/duration.js";
import { usageError } from "./cli-error.js";

export function durationFlag(flag: string, raw: string): number {
  try {
    return parseDuration(raw);
  } catch (e) {
    throw usageError(`${flag}: ${(e as Error).message}`);
  }
}

export function intFlag(flag: string, raw: string, min: number): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min)
    throw usageError(`${flag}: expected an integer >= ${min}, got "${raw}"`);
  return n;
}

const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** --log-level, else SWITCHBOARD_LOG_LEVEL, else info. */
export function logLevelFlag(raw: string | undefined): LogLevel {
  const v = (raw ?? process.env.SWITCHBOARD_LOG_LEVEL ?? "info").toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(v)) {
    throw usageError(`--log-level must be one of ${LOG_LEVELS.join(", ")}, not "${v}"`);
  }
  return v as LogLevel;
}

/** For repeatable options: `--env A=1 --env B=2`. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}
