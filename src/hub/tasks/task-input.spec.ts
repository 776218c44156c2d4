// The hub's input queue for one task: forwarded only within the agent's window, each message numbered
// with its offset and kept until the agent acknowledges it, and sent again, in order, after a broken link.
import { describe, expect, it } from "vitest";
import type { TaskInput } from "../../gen/switchboard/v1/task.js";
import { TaskInputQueue } from "./task-input.js";

const msg = (s: string, eof = false): TaskInput => ({
  taskId: "t1",
  data: Buffer.from(s),
  eof,
  resize: undefined,
  sha256: "",
  offset: 0,
});

function queue(): { q: TaskInputQueue; sent: TaskInput[]; link: { up: boolean } } {
  const sent: TaskInput[] = [];
  const link = { up: true };
  const q = new TaskInputQueue((m) => {
    if (!link.up) return false;
    sent.push(m);
    return true;
  });
  return { q, sent, link };
}

const shown = (ms: TaskInput[]): string[] =>
  ms.map((m) => `${m.offset}:${Buffer.from(m.data).toString()}${m.eof ? ":eof" : ""}`);

describe("TaskInputQueue", () => {
  it("numbers what it forwards within the window, splitting a message the window cuts", () => {
    const { q, sent } = queue();
    q.push(msg("abcd"));
    q.push(msg("ef"));
    expect(sent).toEqual([]);
    q.grant(3);
    q.grant(5);
    q.push(msg("", true));
    expect(shown(sent)).toEqual(["0:abc", "3:d", "4:ef", "6::eof"]);
    expect(q.forwarded).toBe(6);
  });

  it("sends again, in order, what the agent has not acknowledged, and forgets what it has", () => {
    const { q, sent } = queue();
    q.grant(100);
    for (const s of ["ab", "cd", "ef"]) q.push(msg(s));
    q.grant(0, 2); // the agent took "ab"
    sent.length = 0;
    q.resend();
    expect(shown(sent)).toEqual(["2:cd", "4:ef"]);
    q.grant(0, 6);
    q.push(msg("", true));
    sent.length = 0;
    q.resend();
    expect(shown(sent)).toEqual(["6::eof"]); // an end of input is kept: no data acknowledges it
  });

  it("takes the window as a total when the agent gives one: a grant lost with a link is made good", () => {
    const { q, sent } = queue();
    q.grant(2, 0, 2);
    q.push(msg("abcd"));
    expect(shown(sent)).toEqual(["0:ab"]);
    // A grant of 2 more was lost; the next says 6 in all: 4 more may go, not 2.
    q.grant(0, 2, 6);
    q.push(msg("efgh"));
    expect(shown(sent)).toEqual(["0:ab", "2:cd", "4:ef"]);
  });

  it("holds input while the link is down and sends it, after what was lost, once it is back", () => {
    const { q, sent, link } = queue();
    q.grant(100);
    q.push(msg("ab"));
    link.up = false;
    q.push(msg("cd"));
    expect(shown(sent)).toEqual(["0:ab"]);
    link.up = true;
    sent.length = 0;
    q.resend();
    q.pump();
    expect(shown(sent)).toEqual(["0:ab", "2:cd"]);
  });
});
