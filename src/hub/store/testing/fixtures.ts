// Helpers the store's tests share: a temporary directory per test and task records to insert.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { newTaskId } from "../../../common/ids.js";
import type { NewTask, TargetRecord } from "../interfaces.js";

export interface TempDir {
  path: string;
  file(name: string): string;
  remove(): void;
}

export function tempDir(): TempDir {
  const path = mkdtempSync(join(tmpdir(), "switchboard-store-"));
  return {
    path,
    file: (name) => join(path, name),
    remove: () => rmSync(path, { recursive: true, force: true }),
  };
}

export function newTask(overrides: Partial<NewTask> = {}): NewTask {
  const target: TargetRecord = { pool: "default" };
  return {
    id: newTaskId(),
    kind: "echo",
    target,
    spec: new Uint8Array([1, 2, 3]),
    requester: "tester",
    createdAt: Date.now(),
    deadlineAt: null,
    ...overrides,
  };
}

/** The error `fn` throws; fails when it returns. */
export function thrownBy(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected an error, but none was thrown");
}

/** The reason a promise rejects with; fails when it resolves. */
export async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection, but the promise resolved");
}
