// Terminal tasks: the program runs in a pseudo-terminal (node-pty) as the leader of its own session.
// Keystrokes and window sizes arrive as input; the screen's bytes leave as stdout (a terminal merges
// stdout and stderr). The end of input hangs up, as closing a terminal window does: SIGHUP.
import { closeSync, constants as fsConstants, openSync } from "node:fs";
import { constants } from "node:os";
import { spawn as spawnPty, type IDisposable, type IPty } from "node-pty";
import { OutputStream } from "../../../gen/switchboard/v1/task.js";
import type { InputChunk } from "../executor.js";
import { INPUT_WINDOW_BYTES, InteractiveRun } from "./interactive-run.js";
import { processExists, sessionMembers } from "./process-group.js";

/** A terminal's size when the client named none. */
const DEFAULT_COLS = 80;
const DEFAULT_ROWS = 24;
/** The terminal type sessions get unless the task sets TERM itself. */
export const SESSION_TERM = "xterm-256color";
/** The largest terminal side (the kernel's winsize fields are 16 bits). */
export const MAX_TERMINAL_SIDE = 65_535;
/** While output is paused: how often to look whether the program is gone (see pauseScreen). */
const PAUSED_EXIT_POLL_MS = 50;
/** While node-pty still holds more than a window of input for the terminal: how often to look again. */
const INPUT_BACKLOG_POLL_MS = 10;

const SIGNAL_NAMES = new Map<number, string>(
  Object.entries(constants.signals).map(([name, n]) => [n, name] as [number, string]),
);

export class PtyRun extends InteractiveRun {
  protected readonly endSignal = "SIGHUP";
  protected readonly what = "terminal";
  private term: IPty | undefined;
  private readonly listeners: IDisposable[] = [];
  private paused = false;
  /** The program is gone (or its exit was reported): read everything that is left, never pause again. */
  private ended = false;
  /** Our own descriptor of the terminal's program side (see holdTerminalOpen). */
  private slaveFd: number | undefined;
  /** Input bytes written to the terminal and not yet re-granted, waiting for node-pty's queue to shrink. */
  private uncredited = 0;
  private creditCheckArmed = false;

  protected spawn(): number {
    const env = this.launch.env;
    const term = spawnPty(this.launch.file, this.launch.args, {
      // node-pty sets TERM to this name.
      name: env.TERM ?? SESSION_TERM,
      cols: this.spec.cols || DEFAULT_COLS,
      rows: this.spec.rows || DEFAULT_ROWS,
      cwd: this.launch.cwd || process.cwd(),
      env,
      // Bytes as they are: the screen may split a UTF-8 sequence across reads, and the client decodes.
      encoding: null,
    });
    this.term = term;
    this.holdTerminalOpen(term);
    this.listeners.push(
      term.onData((data) => this.onScreen(data as unknown as Buffer)),
      term.onExit(({ exitCode, signal }) => this.onTerminalExit(exitCode, signal ?? 0)),
    );
    if (this.spec.stdin.length > 0) term.write(Buffer.from(this.spec.stdin));
    return term.pid;
  }

  protected deliver(chunk: InputChunk): void {
    const term = this.term!;
    if (chunk.resize) this.resize(term, chunk.resize.cols, chunk.resize.rows);
    if (chunk.data.length > 0) {
      term.write(chunk.data);
      this.uncredited += chunk.data.length;
      this.creditInput();
    }
    if (chunk.eof) {
      // The client went away or said it is done: hang up, as a closed terminal would.
      this.ctx.logger.debug({ taskId: this.ctx.taskId, pid: this.pid }, "terminal hung up by its client");
      this.terminate();
    }
  }

  protected signalOwn(signal: NodeJS.Signals): void {
    // An interactive shell puts each job in a process group of its own: the session holds them all.
    for (const pid of new Set([this.pid, ...sessionMembers(this.pid)])) {
      if (pid <= 1) continue;
      try {
        process.kill(pid, signal);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ESRCH")
          this.ctx.logger.warn(
            { err: e, taskId: this.ctx.taskId, pid, signal },
            "cannot signal a session process",
          );
      }
    }
  }

  protected release(): void {
    this.letTerminalGo();
    for (const l of this.listeners.splice(0)) l.dispose();
    try {
      this.term?.kill("SIGKILL");
    } catch {
      // already gone
    }
  }

  /**
   * Opens the program's side of the terminal here too. Once the last program holding it exits, Linux may
   * answer a read of our side with EIO while bytes are still buffered, and node-pty then drops them: with
   * one more holder, reads go on until everything is read, and node-pty closes 200 ms after the exit.
   */
  private holdTerminalOpen(term: IPty): void {
    const path = (term as unknown as { ptsName?: unknown }).ptsName;
    if (typeof path !== "string" || path === "") return;
    try {
      this.slaveFd = openSync(path, fsConstants.O_RDWR | fsConstants.O_NOCTTY);
    } catch (e) {
      this.ctx.logger.debug({ err: e, taskId: this.ctx.taskId, path }, "cannot hold the terminal open");
    }
  }

  private letTerminalGo(): void {
    if (this.slaveFd === undefined) return;
    try {
      closeSync(this.slaveFd);
    } catch {
      // closed already
    }
    this.slaveFd = undefined;
  }

  private resize(term: IPty, cols: number, rows: number): void {
    if (!(cols >= 1 && rows >= 1 && cols <= MAX_TERMINAL_SIDE && rows <= MAX_TERMINAL_SIDE)) {
      this.ctx.logger.debug({ taskId: this.ctx.taskId, cols, rows }, "terminal resize out of range ignored");
      return;
    }
    try {
      term.resize(cols, rows);
    } catch (e) {
      this.ctx.logger.debug({ err: e, taskId: this.ctx.taskId }, "terminal resize failed");
    }
  }

  /**
   * The hub may send as much input again as the terminal took. node-pty queues writes the kernel did not
   * take yet; past a window of them, wait for the program to read (its queue is not public API: when
   * it cannot be seen, input is re-granted as soon as it is written).
   */
  private creditInput(): void {
    if (this.state !== "running") return;
    if (this.term && pendingWriteBytes(this.term) > INPUT_WINDOW_BYTES) {
      if (!this.creditCheckArmed) {
        this.creditCheckArmed = true;
        this.machine.after(INPUT_BACKLOG_POLL_MS, () => {
          this.creditCheckArmed = false;
          this.creditInput();
        });
      }
      return;
    }
    const n = this.uncredited;
    this.uncredited = 0;
    this.window.took(n);
  }

  private onScreen(data: Buffer): void {
    const max = Math.min(this.opts.maxChunkBytes, this.ctx.maxChunkBytes ?? Infinity);
    let room = true;
    for (let off = 0; off < data.length; off += max) {
      room = this.ctx.output.write(OutputStream.OUTPUT_STREAM_STDOUT, data.subarray(off, off + max)) && room;
    }
    if (!room) this.pauseScreen();
  }

  /**
   * The output window is used up: stop reading, so the terminal's buffer fills and the program blocks.
   * node-pty drops what is unread 200 ms after the program exits, so while paused we look whether it is
   * gone and then read the rest (at most the kernel's terminal buffer) into the output gate, which holds it.
   */
  private pauseScreen(): void {
    if (this.paused || this.ended || !this.term) return;
    this.paused = true;
    this.term.pause();
    this.ctx.output.onceWritable(() => {
      this.paused = false;
      this.term?.resume();
    });
    const check = (): void => {
      if (!this.paused || this.state === "done") return;
      if (!processExists(this.pid)) {
        this.ended = true;
        this.term?.resume();
        return;
      }
      setTimeout(check, PAUSED_EXIT_POLL_MS).unref();
    };
    setTimeout(check, PAUSED_EXIT_POLL_MS).unref();
  }

  private onTerminalExit(exitCode: number, signal: number): void {
    // node-pty reports the exit once the terminal is closed, but a paused read stream may still hold
    // its last bytes: let them flow into the output gate (which holds them) before finishing.
    this.ended = true;
    this.term?.resume();
    setImmediate(() => {
      const name = signal > 0 ? (SIGNAL_NAMES.get(signal) ?? `signal ${signal}`) : null;
      this.letTerminalGo();
      if (this.exited(name === null ? exitCode : null, name)) {
        for (const l of this.listeners.splice(0)) l.dispose();
        this.finish();
      }
    });
  }
}

/** Bytes node-pty queued for the terminal that the kernel has not taken yet; 0 when that cannot be seen. */
function pendingWriteBytes(term: IPty): number {
  const queue = (term as unknown as { _writeStream?: { _writeQueue?: unknown } })._writeStream?._writeQueue;
  if (!Array.isArray(queue)) return 0;
  let n = 0;
  for (const task of queue as { buffer?: Buffer; offset?: number }[]) {
    n += (task.buffer?.length ?? 0) - (task.offset ?? 0);
  }
  return n;
}
