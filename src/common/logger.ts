// Structured logs: JSON lines when piped (for collectors), readable lines on a terminal.
import { pino, type Logger, type LevelWithSilent } from "pino";
import pretty from "pino-pretty";

export type { Logger };

export interface LoggerOptions {
  level?: LevelWithSilent;
  /** Force JSON (true) or pretty (false); default: pretty only when stderr is a terminal. */
  json?: boolean;
}

export function createLogger(name: string, opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? (process.env.SWITCHBOARD_LOG_LEVEL as LevelWithSilent | undefined) ?? "info";
  const json = opts.json ?? (process.env.SWITCHBOARD_LOG_FORMAT === "json" || !process.stderr.isTTY);
  if (json) {
    return pino({ name, level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: false }));
  }
  return pino(
    { name, level },
    pretty({
      destination: 2,
      sync: true,
      colorize: true,
      translateTime: "HH:MM:ss.l",
      ignore: "pid,hostname",
    }),
  );
}

/** A logger that discards everything, for tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
