// The line on stderr that shows a long result moving: rows, bytes and their rates, redrawn in place.
// Only a person at a terminal sees it: nothing on a pipe or file, nothing for a transfer under a second,
// and never more than four redraws a second, so it costs nothing on the hot path.

/** What the line needs of its stream: process.stderr, or a fake terminal in a test. */
export type ProgressStream = Pick<NodeJS.WriteStream, "isTTY"> & { write(text: string): boolean };

/** Nothing shows before the transfer has run this long. */
export const PROGRESS_DELAY_MS = 1_000;
/** At most one redraw per this interval. */
export const PROGRESS_INTERVAL_MS = 250;
const ERASE_TO_END = "\x1b[K";

type State = "waiting" | "shown" | "done";

export class ProgressLine {
  /** False when nothing will ever be drawn (disabled, or not a terminal). */
  readonly enabled: boolean;
  private readonly now: () => number;
  private state: State = "waiting";
  private startedAt: number | undefined;
  private drawnAt = 0;
  private rows = 0;
  private bytes = 0;
  private totalBytes: number | undefined;
  private readonly countRows: boolean;

  /** rows: false for a transfer of bytes only (an HTTP body), which shows no row counts. */
  constructor(
    private readonly stream: ProgressStream,
    opts: { enabled: boolean; now?: () => number; rows?: boolean },
  ) {
    this.enabled = opts.enabled && stream.isTTY === true;
    this.now = opts.now ?? Date.now;
    this.countRows = opts.rows ?? true;
  }

  /** The size the transfer will have, when known (a Content-Length): shown as "of" that. */
  setTotal(bytes: number): void {
    this.totalBytes = bytes;
  }

  /** The totals so far; the transfer's clock starts at the first call. */
  update(rows: number, bytes: number): void {
    if (!this.enabled || this.state === "done") return;
    this.rows = rows;
    this.bytes = bytes;
    const now = this.now();
    if (this.startedAt === undefined) {
      this.startedAt = now;
      return;
    }
    if (now - this.startedAt < PROGRESS_DELAY_MS) return;
    if (this.state === "shown" && now - this.drawnAt < PROGRESS_INTERVAL_MS) return;
    this.draw(now);
    this.state = "shown";
  }

  /** Ends the line: a final summary stays when the line was shown, else nothing was ever printed. Idempotent. */
  done(): void {
    if (this.state === "shown") {
      this.draw(this.now());
      this.stream.write("\n");
    }
    this.state = "done";
  }

  private draw(now: number): void {
    this.drawnAt = now;
    const seconds = Math.max(now - (this.startedAt ?? now), 1) / 1000;
    if (!this.countRows) {
      const of = this.totalBytes !== undefined ? ` of ${formatBytes(this.totalBytes)}` : "";
      this.stream.write(
        `\r${formatBytes(this.bytes)}${of}  ${formatBytes(this.bytes / seconds)}/s${ERASE_TO_END}`,
      );
      return;
    }
    this.stream.write(
      `\r${formatCount(this.rows)} rows  ${formatBytes(this.bytes)}  ${formatBytes(this.bytes / seconds)}/s  ` +
        `${formatCount(Math.round(this.rows / seconds))} rows/s${ERASE_TO_END}`,
    );
  }
}

const COUNT = new Intl.NumberFormat("en-US");

/** 1234567 -> "1,234,567", whatever the user's locale: the line's look is fixed. */
export function formatCount(n: number): string {
  return COUNT.format(n);
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"] as const;

/** 537198592 -> "512.3 MiB"; bytes below 1 KiB are whole. */
export function formatBytes(n: number): string {
  let v = n;
  let unit = 0;
  while (v >= 1024 && unit < UNITS.length - 1) {
    v /= 1024;
    unit++;
  }
  return unit === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${UNITS[unit]}`;
}
