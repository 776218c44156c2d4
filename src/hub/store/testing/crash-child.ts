// The process the durability test kills with SIGKILL. It writes through the store as the hub
// does and reports on stdout, one line each, what the store has promised:
//   ready <pid>
//   flushed <taskId> <base64 of all output appended>   output appended, then flush() resolved
//   streaming <taskId> <base64 of all output appended> output left to the store's own timers
//   committed <taskId> ...                            inserts whose promises resolved
// Usage: crash-child <database path> <output cap in bytes>
import { openSqliteStore } from "../sqlite/store.js";
import type { OutputStreamName } from "../interfaces.js";
import { newTask } from "./fixtures.js";

const [path, cap] = process.argv.slice(2);
if (!path || !cap) throw new Error("usage: crash-child <database path> <output cap in bytes>");
const store = openSqliteStore(path, { outputCapBytes: Number(cap), tailPersistIntervalMs: 50 });

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function appendChunks(taskId: string, from: number, to: number, sink: Buffer[]): void {
  for (let i = from; i < to; i++) {
    const chunk = Buffer.alloc(512, i);
    const stream: OutputStreamName = i % 3 === 0 ? "stderr" : "stdout";
    store.appendOutput(taskId, stream, chunk);
    sink.push(chunk);
  }
}

say(`ready ${process.pid}`);

const flushed = newTask();
await store.insertTask(flushed);
const flushedBytes: Buffer[] = [];
appendChunks(flushed.id, 0, 40, flushedBytes);
await store.flush();
say(`flushed ${flushed.id} ${Buffer.concat(flushedBytes).toString("base64")}`);

const streaming = newTask();
await store.insertTask(streaming); // a commit: the tail so far is written
const streamingBytes: Buffer[] = [];
appendChunks(streaming.id, 0, 20, streamingBytes);
await store.insertTask(newTask()); // another commit
appendChunks(streaming.id, 20, 30, streamingBytes); // this tail is written by a later timer
say(`streaming ${streaming.id} ${Buffer.concat(streamingBytes).toString("base64")}`);

for (;;) {
  const tasks = Array.from({ length: 50 }, () => newTask());
  await Promise.all(tasks.map((t) => store.insertTask(t)));
  for (const t of tasks) store.updateTask(t.id, { state: "assigned", agentId: "agent-1" });
  say(`committed ${tasks.map((t) => t.id).join(" ")}`);
}
