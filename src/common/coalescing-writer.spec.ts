import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CoalescingWriter } from "./coalescing-writer.js";

type Msg = { id: number; bytes: number } | { batch: Msg[] };

function setup(ok = () => true) {
  const written: Msg[] = [];
  const w = new CoalescingWriter<Msg>({
    write: (m) => {
      written.push(m);
      return ok();
    },
    batch: (messages) => ({ batch: messages }),
    payloadBytes: (m) => ("bytes" in m ? m.bytes : 0),
    maxMessages: 4,
    maxPayloadBytes: 100,
  });
  const flat = (): number[] =>
    written.flatMap((m) => ("batch" in m ? m.batch : [m])).map((m) => ("id" in m ? m.id : -1));
  return { w, written, flat };
}

const turn = () => new Promise((r) => setImmediate(r));

describe("CoalescingWriter", () => {
  it("writes what one turn produced as one batch, and a lone message as itself", async () => {
    const { w, written } = setup();
    w.write({ id: 1, bytes: 0 });
    w.write({ id: 2, bytes: 0 });
    expect(written).toHaveLength(0);
    await turn();
    expect(written).toEqual([
      {
        batch: [
          { id: 1, bytes: 0 },
          { id: 2, bytes: 0 },
        ],
      },
    ]);
    w.write({ id: 3, bytes: 0 });
    await turn();
    expect(written[1]).toEqual({ id: 3, bytes: 0 });
  });

  it("keeps order, never exceeds its bounds, and loses nothing (property)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.nat({ max: 300 }), { maxLength: 60 }), async (sizes) => {
        const { w, written, flat } = setup();
        sizes.forEach((bytes, id) => w.write({ id, bytes }));
        await turn();
        expect(flat()).toEqual(sizes.map((_, i) => i));
        for (const m of written) {
          if (!("batch" in m)) continue;
          expect(m.batch.length).toBeLessThanOrEqual(4);
          expect(m.batch.every((x) => "bytes" in x && x.bytes <= 100)).toBe(true);
        }
      }),
    );
  });

  it("reports the stream's backpressure and flushes on demand", () => {
    let ok = true;
    const { w, written } = setup(() => ok);
    ok = false;
    w.write({ id: 1, bytes: 500 });
    expect(w.write({ id: 2, bytes: 0 })).toBe(false);
    w.flush();
    expect(written).toHaveLength(2);
    w.write({ id: 3, bytes: 0 });
    w.discard();
    expect(w.pendingCount).toBe(0);
  });
});
