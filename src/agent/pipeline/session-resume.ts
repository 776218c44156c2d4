// A broken session whose tasks go on: while the link is down (up to the hub's resume grace) the pipeline
// holds the session, its events wait in the outbox, and the next Hello asks to resume it. The hub's
// answer either takes the tasks over into the new session (unacknowledged events re-sent, input windows
// granted again) or, like the grace running out, stops them and drops their events.
import type { Logger } from "../../common/logger.js";
import type { Resume } from "../../gen/switchboard/v1/agent.js";
import type { Inbox } from "./inbox.js";
import type { Outbox } from "../link/outbox.js";
import type { SessionStart } from "./pipeline-session.js";
import type { TaskRun } from "./task-run.js";

/** What of the pipeline a held session reaches. */
export interface ResumeHost {
  readonly outbox: Outbox;
  readonly inbox: Inbox<TaskRun>;
  /** Every task not finished yet, whatever its session. */
  readonly runs: ReadonlyMap<string, TaskRun>;
  readonly logger: Logger;
  /** Sends an InputWindow for the run: `bytes` more. */
  pushInputWindow(r: TaskRun, bytes: number): void;
  /** Tasks were stopped: whoever waits for the pipeline to be idle may look again. */
  notifyIdle(): void;
}

/** A broken session whose tasks go on, waiting for the link to come back within the grace. */
interface Held {
  epoch: number;
  sessionId: string;
  since: number;
  reason: string;
  timer: NodeJS.Timeout;
  /** outbox.spilledTotal when the link broke. */
  spilledBefore: number;
}

export class SessionResume {
  private held: Held | undefined;

  constructor(private readonly host: ResumeHost) {}

  /** The epoch of the session held, if any. */
  get epoch(): number | undefined {
    return this.held?.epoch;
  }

  /** Whether a broken session's tasks are held (the next dial should go to the same hub). */
  get holding(): boolean {
    return this.held !== undefined;
  }

  /** What the next Hello asks to resume, if a broken session is held. */
  request(): Resume | undefined {
    const h = this.held;
    if (!h) return undefined;
    const ids = this.host.outbox.taskIdsWithEvents();
    for (const r of this.host.runs.values()) if (r.epoch === h.epoch) ids.add(r.taskId);
    return { sessionId: h.sessionId, taskIds: [...ids] };
  }

  /** Holds the broken session for `graceMs`: its events wait in the suspended outbox, then are dropped. */
  hold(epoch: number, sessionId: string, graceMs: number, reason: string): void {
    this.host.outbox.suspend();
    const held: Held = {
      epoch,
      sessionId,
      since: Date.now(),
      reason,
      spilledBefore: this.host.outbox.spilledTotal,
      timer: setTimeout(
        () =>
          this.abandon(
            held,
            `the link stayed down past the ${graceMs / 1000}s resume grace (${reason})`,
            `link to the hub lost for more than ${graceMs / 1000}s`,
          ),
        graceMs,
      ),
    };
    held.timer.unref();
    this.held = held;
  }

  /** Applies the hub's answer to Hello.resume, or drops what a non-resuming session cannot use. */
  takeOver(start: SessionStart): void {
    const h = this.held;
    const { outbox, logger } = this.host;
    if (!h) {
      outbox.forget();
      return;
    }
    this.held = undefined;
    clearTimeout(h.timer);
    const answer = start.resume;
    if (!answer?.resumed) {
      this.abandon(
        h,
        answer?.reason || "the hub did not resume the session",
        "the hub no longer holds the task (its link was down too long)",
      );
      return;
    }
    outbox.resume(answer.eventsReceived);
    let moved = 0;
    for (const r of this.host.runs.values()) {
      if (r.epoch !== h.epoch) continue;
      r.epoch = start.epoch;
      moved += 1;
      // The window as a total: grants made while the link was down, and any lost with it, count again.
      if (r.inputGranted > 0) {
        this.host.pushInputWindow(r, r.ungrantedInput);
        r.ungrantedInput = 0;
      }
    }
    const stop = new Set(answer.stopTaskIds);
    for (const id of stop) {
      this.host.runs.get(id)?.stop({ cause: "lost", reason: "the hub no longer holds this task" });
    }
    const dropped = stop.size > 0 ? outbox.dropTasks(stop) : 0;
    logger.info(
      {
        epoch: start.epoch,
        resumedEpoch: h.epoch,
        downMs: Date.now() - h.since,
        tasks: moved,
        resent: outbox.depth,
        stopped: stop.size,
        droppedEvents: dropped,
        spilledBytes: outbox.spilledTotal - h.spilledBefore,
      },
      "session resumed: tasks continue, unacknowledged events re-sent",
    );
  }

  /** The held session cannot come back: stop its tasks and drop its events. */
  private abandon(h: Held, why: string, stopReason: string): void {
    if (this.held === h) this.held = undefined;
    clearTimeout(h.timer);
    const discarded = this.host.inbox.removeWhere((r) => r.epoch === h.epoch);
    for (const r of discarded) r.stop({ cause: "lost", reason: stopReason });
    let stopped = 0;
    for (const r of [...this.host.runs.values()]) {
      if (r.epoch !== h.epoch || r.state === "finished") continue;
      stopped += 1;
      r.stop({ cause: "lost", reason: stopReason });
    }
    const dropped = this.host.outbox.clear();
    this.host.logger.warn(
      { epoch: h.epoch, reason: why, stoppedTasks: stopped + discarded.length, droppedEvents: dropped },
      "broken session not resumed: its tasks were stopped",
    );
    this.host.notifyIdle();
  }
}
