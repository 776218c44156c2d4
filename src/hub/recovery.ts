// After a restart, nothing accepted goes missing: a queued task is queued again (until its deadline,
// or a bounded wait for its agents to come back), and one that was on an agent ends lost, since it
// may have run there and must never run twice. In a cluster, a hub recovers its own tasks only (the
// store lists those): the other hubs' run on.
import { Code } from "../common/errors.js";
import type { Logger } from "../common/logger.js";
import type { HubConfig } from "./config.js";
import type { Store, TaskRecord } from "./store/index.js";
import type { TaskLifecycle } from "./tasks/task-lifecycle.js";
import { safeDecodeSpec } from "./tasks/task-reader.js";

export async function recoverTasks(
  config: HubConfig,
  store: Store,
  logger: Logger,
  lifecycle: TaskLifecycle,
): Promise<{ requeued: number; lost: number }> {
  // A hub alone held every agent's session; in a cluster the other hubs hold theirs still.
  if (!config.cluster) store.markAllAgentsDisconnected();
  const { requeued, lost } = settleUnfinished(
    config,
    store,
    lifecycle,
    await store.listUnfinishedTasks(),
    (agentId) =>
      `hub restarted while the task was on agent ${agentId ?? "(none)"}: it may have run there, so it is not run again`,
  );
  if (requeued + lost > 0) logger.info({ requeued, lost }, "recovered unfinished tasks");
  return { requeued, lost };
}

/**
 * Unfinished tasks this hub takes on (after its restart, or from a hub of its cluster that is gone):
 * a queued one is queued here again, one that was on an agent ends lost (`why` says so).
 */
export function settleUnfinished(
  config: HubConfig,
  store: Store,
  lifecycle: TaskLifecycle,
  records: readonly TaskRecord[],
  why: (agentId: string | null) => string,
): { requeued: number; lost: number } {
  let requeued = 0;
  let lost = 0;
  const now = Date.now();
  for (const r of records) {
    if (r.state === "queued" && (r.deadlineAt === null || r.deadlineAt > now)) {
      // A task without a deadline gets a bounded wait for its agents to come back.
      lifecycle.requeueRecovered(r, safeDecodeSpec(r.spec), r.deadlineAt ?? now + 2 * config.offlineAfterMs);
      requeued++;
      continue;
    }
    // Assigned or running: it may have run on its agent (an assignment is on record before its
    // Assign is sent), so it never runs again.
    const reason = r.state === "queued" ? "its deadline passed while the hub was down" : why(r.agentId);
    store.updateTask(r.id, {
      state: r.state === "queued" ? "timed_out" : "lost",
      finishedAt: now,
      errorCode: r.state === "queued" ? Code.DEADLINE_EXCEEDED : Code.ABORTED,
      errorMessage: reason,
      reason,
    });
    lost++;
  }
  return { requeued, lost };
}
