// The errors both stores raise alike: a store that is closed, a task refused while the store
// cannot write, and an error's message as a log line or a sentence shows it.
import { Code, SwitchboardError } from "../../common/errors.js";
import { writeFailureSentence, type StoreWriteFailure } from "./write-failure.js";

/** An error's message; an AggregateError (a connection tried on several addresses) shows all of them. */
export function errorMessage(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) {
    return err.errors.map((e) => (e instanceof Error ? e.message : String(e))).join("; ");
  }
  return err instanceof Error ? err.message : String(err);
}

export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(errorMessage(err));
}

export function closedError(): SwitchboardError {
  return new SwitchboardError(Code.UNAVAILABLE, "the store is closed");
}

/** A task insert refused because the store cannot write: the task was not accepted. */
export function notAccepted(failure: StoreWriteFailure, taskId: string): SwitchboardError {
  return new SwitchboardError(
    Code.UNAVAILABLE,
    `${writeFailureSentence(failure)}: task ${taskId} was not accepted; submit it again in a moment`,
  );
}
