// WAL checkpoints on the worker thread: pages reach the database file with no commit on the event
// loop doing it, and closing the store leaves no WAL behind.
import { statSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { openSqliteStore, type SqliteStore } from "./store.js";
import { newTask, tempDir, type TempDir } from "../testing/fixtures.js";
import { waitFor } from "../../../common/wait-for.js";

const open: SqliteStore[] = [];
const dirs: TempDir[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
  for (const d of dirs.splice(0)) d.remove();
});

async function fill(): Promise<{ path: string; size: () => number }> {
  const dir = tempDir();
  dirs.push(dir);
  const path = join(dir.path, "switchboard.db");
  const store = openSqliteStore(path, { checkpointInWorker: true, flushIntervalMs: 0 });
  open.push(store);
  for (let i = 0; i < 20; i++) {
    await Promise.all(Array.from({ length: 100 }, () => store.insertTask(newTask())));
  }
  return { path, size: () => statSync(path).size };
}

describe("Checkpointer", () => {
  it("moves the WAL into the database file from its worker", async () => {
    const { size } = await fill();
    const before = size();
    await waitFor(() => size() > before, { timeout: 5_000, message: "the worker to checkpoint" });
    expect(size()).toBeGreaterThan(before);
  });

  it("leaves a clean file behind on close: the WAL is checkpointed whole", async () => {
    const { path } = await fill();
    await open.pop()!.close();
    expect(() => statSync(`${path}-wal`)).toThrow();
  });
});
