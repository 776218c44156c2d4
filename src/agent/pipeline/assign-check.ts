// Why an Assign the hub sent within its credits cannot run: no task id, a task id seen before, no spec,
// a kind of task this agent does not run, or its executor's own refusal.
import { Code } from "../../common/errors.js";
import type { Assign } from "../../gen/switchboard/v1/agent.js";
import type { Executor } from "../executors/executor.js";

export interface AssignRefusal {
  code: Code;
  message: string;
}

export interface AssignCheckContext {
  agentId: string;
  /** Whether the task id is held now or was assigned earlier in this session. */
  known(taskId: string): boolean;
  /** The executors, by kind. */
  executors: ReadonlyMap<string, Executor>;
}

/** Why the Assign cannot run, or undefined. */
export function checkAssign(a: Assign, ctx: AssignCheckContext): AssignRefusal | undefined {
  if (a.taskId === "") return { code: Code.INVALID_ARGUMENT, message: "Assign without a task_id" };
  if (ctx.known(a.taskId)) {
    return {
      code: Code.ALREADY_EXISTS,
      message: `task ${a.taskId} was already assigned to agent ${ctx.agentId}`,
    };
  }
  if (!a.spec) return { code: Code.INVALID_ARGUMENT, message: `Assign for task ${a.taskId} has no spec` };
  const kind = a.spec.kind?.$case;
  const executor = kind ? ctx.executors.get(kind) : undefined;
  if (!executor) {
    return {
      code: Code.UNIMPLEMENTED,
      message: `agent ${ctx.agentId} does not run this kind of task (it runs: ${[...ctx.executors.keys()].join(", ")})`,
    };
  }
  const refused = executor.admit(a.spec);
  return refused ? { code: refused.code, message: refused.message } : undefined;
}
