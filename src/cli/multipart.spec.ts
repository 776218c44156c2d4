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
  it("builds a body a standard parser reads back, names with quotes included", async () => {
    const path = join(dir, "data.bin");
    const bytes = Buffer.from([0, 1, 2, 255, 13, 10, 45, 45]);
    writeFileSync(path, bytes);
    const m = await multipartBody(
      [
        { kind: "text", name: 'say "hi"', value: "héllo\r\nworld" },
        { kind: "file", name: "blob", path, filename: "data.bin", type: "application/x-thing" },
      ],
      1024,
    );
    expect(m.contentType).toMatch(/^multipart\/form-data; boundary=----switchboard-[0-9a-f]{24}$/);
    const form = await new Response(m.body, { headers: { "content-type": m.contentType } }).formData();
    expect(m.body.toString("latin1")).toContain('name="say %22hi%22"'); // escaped as browsers do
    expect(form.get('say "hi"')).toBe("héllo\r\nworld");
    const file = form.get("blob") as File;
    expect(file.name).toBe("data.bin");
    expect(file.type).toBe("application/x-thing");
    expect(Buffer.from(await file.arrayBuffer())).toEqual(bytes);
  });

  it("fails before reading when files are missing or too large", async () => {
    const path = join(dir, "big.bin");
    writeFileSync(path, Buffer.alloc(2048));
    await expect(
      multipartBody([{ kind: "file", name: "f", path, filename: "big.bin", type: "x/y" }], 1024),
    ).rejects.toThrow(/add up to 2048 bytes; an http task's body may be at most 1024/);
    await expect(
      multipartBody([{ kind: "file", name: "f", path: join(dir, "nope"), filename: "n", type: "x/y" }], 1024),
    ).rejects.toThrow(/-F f: cannot read .*nope: ENOENT/);
  });
});
