// The node table on disk (nodes.json in the agent's state dir): what an agent restart reads to adopt the
// nodes that still run and restart the others. Writes go to a temporary file, then a rename, one at a time.
import { readFileSync } from "node:fs";
import { rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { NodeRecord } from "./node-record.js";

export class NodeTable {
  private readonly file: string;
  private saving: Promise<void> = Promise.resolve();

  constructor(stateDir: string) {
    this.file = join(stateDir, "nodes.json");
  }

  /** The table an earlier run saved; empty when there is none (or it cannot be read). */
  load(): NodeRecord[] {
    try {
      return JSON.parse(readFileSync(this.file, "utf8")) as NodeRecord[];
    } catch {
      return [];
    }
  }

  /** Writes the records as they are now; resolves once this write (and every earlier one) has landed. */
  save(records: Iterable<NodeRecord>): Promise<void> {
    const text = JSON.stringify([...records], null, 1);
    this.saving = this.saving.then(async () => {
      const tmp = `${this.file}.tmp`;
      await writeFile(tmp, text);
      await rename(tmp, this.file);
    });
    return this.saving;
  }

  /** Resolves once the writes asked for so far have landed. */
  flushed(): Promise<void> {
    return this.saving;
  }
}
