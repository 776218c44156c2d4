// Helpers the store's tests share: a temporary directory per test and task records to insert.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { newTaskId } from "../../../common/ids.js";
import type { AgentRecord, NewTask, TargetRecord, TokenRecord } from "../interfaces.js";

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

/** An agent record, "agent-1" of pool default unless told otherwise. */
export function newAgent(overrides: Partial<AgentRecord> = {}): AgentRecord {
  return {
    id: "agent-1",
    pool: "default",
    labels: { zone: "a" },
    hostname: "host-1",
    platform: "linux/amd64",
    version: "0.1.0",
    taskKinds: ["echo", "shell"],
    maxConcurrency: 4,
    firstSeenAt: 1_000,
    lastSeenAt: 2_000,
    lastSessionId: "ses_1",
    connected: true,
    tokenId: "tok_1",
    ...overrides,
  };
}

/** A token record, operator "ci" of pool edge unless told otherwise. */
export function newToken(overrides: Partial<TokenRecord> = {}): TokenRecord {
  return {
    id: "tok_1",
    name: "ci",
    role: "operator",
    pools: ["edge"],
    agentId: null,
    allowTakeover: false,
    hash: "a".repeat(64),
    createdAt: 1_000,
    revokedAt: null,
    lastUsedAt: null,
    ...overrides,
  };
}
