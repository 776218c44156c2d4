// Stopping a hub without losing work: no new tasks, idle agents sent on to another hub at once and
// busy ones as their last task ends, what still runs when the grace is over cancelled, and every
// session and client stream ended with a sentence that says what happens next.
import { Code } from "../common/errors.js";
import type { Logger } from "../common/logger.js";
import type { AgentRegistry } from "./agents/agent-registry.js";
import type { AgentSession } from "./agents/agent-session.js";
import type { ClientStreams } from "./client-streams.js";
import type { SessionLifecycle } from "./agents/session-lifecycle.js";
import type { TaskLifecycle } from "./tasks/task-lifecycle.js";
import type { TaskTable } from "./tasks/task-table.js";

/** How long agents get to confirm the cancel of what still ran when the grace was over. */
const CANCEL_WAIT_MS = 5_000;

export interface DrainParts {
  logger: Logger;
  agents: AgentRegistry;
  tasks: TaskTable;
  sessions: SessionLifecycle;
  lifecycle: TaskLifecycle;
  clientStreams: ClientStreams;
  /** Stops the hub's once-a-second tick, after the grace and before the sessions close. */
  stopTick: () => void;
}

export async function drain(h: DrainParts, graceMs: number): Promise<void> {
  h.logger.info(
    { in_flight: h.tasks.inFlight(), grace_ms: graceMs },
    "draining: no new work; waiting for running tasks",
  );
  const deadline = Date.now() + graceMs;
  // Idle agents go at once, busy ones as soon as their last task ends: an agent that knows
  // other hubs moves to the next one while this one finishes its work.
  const handedOver = new Set<AgentSession>();
  const handOverIdle = (): void => {
    for (const s of h.agents.all()) {
      if (s.tasks.size > 0 || handedOver.has(s)) continue;
      handedOver.add(s);
      s.send({ body: { $case: "drain", value: { reason: "hub shutting down" } } });
      h.sessions.close(s, "hub shut down");
      s.end();
    }
  };
  handOverIdle();
  while (h.tasks.inFlight() > 0 && Date.now() < deadline) {
    await sleep(50);
    handOverIdle();
  }
  // Assignments not sent yet are not among them: closing the sessions below queues them again.
  const left = h.tasks.onAgents();
  if (left.length > 0) {
    h.logger.warn({ tasks: left.length }, "grace over: cancelling what still runs");
    for (const t of left) {
      t.cancelReason = "hub shut down";
      h.agents
        .get(t.agentId)
        ?.send({ body: { $case: "cancel", value: { taskId: t.id, reason: "hub shut down", graceMs: 0 } } });
    }
    const stopBy = Date.now() + CANCEL_WAIT_MS;
    while (left.some((t) => !t.terminal) && Date.now() < stopBy) await sleep(50);
    for (const t of left)
      if (!t.terminal) h.lifecycle.finishLocal(t, "cancelled", Code.CANCELLED, "hub shut down");
  }
  h.stopTick();
  for (const s of h.agents.all()) {
    s.send({ body: { $case: "drain", value: { reason: "hub shutting down" } } });
    h.sessions.close(s, "hub shut down");
    s.end();
  }
  h.clientStreams.endAll(
    Code.UNAVAILABLE,
    "hub shut down: queued tasks stay queued and run when it is back; watch them again then",
  );
  h.tasks.clearDeadlines();
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
