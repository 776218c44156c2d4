// -F values as curl reads them, and multipart bodies that a standard parser (undici's) reads back.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { multipartBody, parseFormField } from "./multipart.js";

const dir = mkdtempSync(join(tmpdir(), "sb-multipart-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("parseFormField", () => {
  it("reads text fields and file parts with their options", () => {
    expect(parseFormField("a=b=c")).toEqual({ kind: "text", name: "a", value: "b=c" });
    expect(parseFormField("f=@/tmp/x.csv")).toEqual({
      kind: "file",
      name: "f",
      path: "/tmp/x.csv",
      filename: "x.csv",
      type: "application/octet-stream",
    });
    expect(parseFormField("f=@x.bin;type=image/png;filename=y.png")).toMatchObject({
      path: "x.bin",
      type: "image/png",
      filename: "y.png",
    });
  });

  it("refuses what it cannot read, naming the flag", () => {
    expect(() => parseFormField("novalue")).toThrow(/-F: expected name=value or name=@file/);
    expect(() => parseFormField("f=@")).toThrow(/name the file/);
    expect(() => parseFormField("f=@x;size=3")).toThrow(/unknown part option/);
  });
});

describe("multipartBody", () => {
  it("streams a body a standard parser reads back, as long as it says, names with quotes included", async () => {
    const path = join(dir, "data.bin");
    const bytes = Buffer.from([0, 1, 2, 255, 13, 10, 45, 45]);
    writeFileSync(path, bytes);
    const empty = join(dir, "empty.bin");
    writeFileSync(empty, "");
    const m = await multipartBody([
      { kind: "text", name: 'say "hi"', value: "héllo\r\nworld" },
      { kind: "file", name: "blob", path, filename: "data.bin", type: "application/x-thing" },
      { kind: "file", name: "none", path: empty, filename: "empty.bin", type: "text/plain" },
    ]);
    expect(m.contentType).toMatch(/^multipart\/form-data; boundary=----switchboard-[0-9a-f]{24}$/);
    const pieces: Buffer[] = [];
    for await (const p of m.read()) pieces.push(p);
    const body = Buffer.concat(pieces);
    expect(body.length).toBe(m.length);
    const form = await new Response(body, { headers: { "content-type": m.contentType } }).formData();
    expect(body.toString("latin1")).toContain('name="say %22hi%22"'); // escaped as browsers do
    expect(form.get('say "hi"')).toBe("héllo\r\nworld");
    const file = form.get("blob") as File;
    expect(file.name).toBe("data.bin");
    expect(file.type).toBe("application/x-thing");
    expect(Buffer.from(await file.arrayBuffer())).toEqual(bytes);
    expect((form.get("none") as File).size).toBe(0);
  });

  it("fails before reading when a file is missing or not a file", async () => {
    await expect(
      multipartBody([{ kind: "file", name: "f", path: join(dir, "nope"), filename: "n", type: "x/y" }]),
    ).rejects.toThrow(/-F f: cannot read .*nope: ENOENT/);
    await expect(
      multipartBody([{ kind: "file", name: "d", path: dir, filename: "d", type: "x/y" }]),
    ).rejects.toThrow(/-F d: .* is not a file/);
  });
});
