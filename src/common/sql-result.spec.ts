import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SqlResultDecoder, type JsonValue, type SqlResultHeader } from "./sql-result.js";

const header: SqlResultHeader = {
  columns: [
    { name: "id", type: "bigint", nullable: false },
    { name: "v", type: "jsonb", nullable: true },
  ],
  table: null,
};

function encode(rows: JsonValue[][]): Buffer {
  return Buffer.from([JSON.stringify(header), ...rows.map((r) => JSON.stringify(r))].join("\n") + "\n");
}

const value: fc.Arbitrary<JsonValue> = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.integer(),
  // JSON has no -0: a -0 travels as 0, as it would from any JSON encoder.
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((v) => (Object.is(v, -0) ? 0 : v)),
  fc.string({ unit: "binary" }),
  fc.constantFrom("line\nbreak", "tab\t", 'quote"', "back\\slash", "Zoë 🚀 東京", "],[", "\n"),
  fc.dictionary(fc.string(), fc.oneof(fc.integer(), fc.string())),
  fc.array(fc.oneof(fc.integer(), fc.string(), fc.constant(null))),
);

describe("SqlResultDecoder", () => {
  it("yields every row once and in order however the bytes are cut into chunks", () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(value, { minLength: 1, maxLength: 4 }), { maxLength: 40 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        (rows, cutsRaw) => {
          const bytes = encode(rows);
          const cuts = [...new Set(cutsRaw.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
          const d = new SqlResultDecoder();
          const got: JsonValue[][] = [];
          let prev = 0;
          for (const c of [...cuts, bytes.length]) {
            got.push(...d.push(bytes.subarray(prev, c)));
            prev = c;
          }
          expect(d.header).toEqual(header);
          expect(got).toEqual(rows);
          expect(d.rowCount).toBe(rows.length);
          expect(d.incomplete).toBe(false);
          const rowBytes = bytes.length - Buffer.byteLength(JSON.stringify(header)) - 1;
          expect(d.rowBytes).toBe(rowBytes);
        },
      ),
    );
  });

  it("passes a CSV result's bytes through untouched, wherever the chunks are cut", () => {
    const head = Buffer.from(JSON.stringify({ ...header, format: "csv" }) + "\n");
    const body = Buffer.from('1,"a,b"\n2,"line\nbreak"\n3,Zoë 🚀\n');
    const all = Buffer.concat([head, body]);
    for (let cut = 0; cut <= all.length; cut += 7) {
      const d = new SqlResultDecoder();
      expect(d.push(all.subarray(0, cut))).toEqual([]);
      const first = d.takeEncoded() ?? Buffer.alloc(0);
      expect(d.push(all.subarray(cut))).toEqual([]);
      const rest = d.takeEncoded() ?? Buffer.alloc(0);
      expect(d.header?.format).toBe("csv");
      expect(Buffer.concat([first, rest]).toString()).toBe(body.toString());
      expect(d.rowBytes).toBe(body.length);
      expect(d.incomplete).toBe(false);
    }
    const cutShort = new SqlResultDecoder();
    cutShort.push(all.subarray(0, all.length - 3));
    expect(cutShort.incomplete).toBe(true);
  });

  it("notices a result cut inside a row", () => {
    const d = new SqlResultDecoder();
    const bytes = encode([
      [1, "a"],
      [2, "b"],
    ]);
    d.push(bytes.subarray(0, bytes.length - 4));
    expect(d.incomplete).toBe(true);
  });

  it("parses a chunk holding both the header and many rows", () => {
    const rows = Array.from({ length: 1000 }, (_, i) => [i, `row ${i}`]);
    const d = new SqlResultDecoder();
    expect(d.push(encode(rows))).toEqual(rows);
    expect(d.header?.columns.map((c) => c.name)).toEqual(["id", "v"]);
  });
});
