// multipart/form-data bodies for `switchboard http -F`, as curl builds them: `name=value` is a text field,
// `name=@path` a file part (its base name as filename; `;type=mime` and `;filename=x` after the path).
import { randomBytes } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { basename } from "node:path";
import { usageError } from "./cli-error.js";

export type FormField =
  | { kind: "text"; name: string; value: string }
  | { kind: "file"; name: string; path: string; filename: string; type: string };

/** One -F value: name=value, or name=@path[;type=mime][;filename=name]. */
export function parseFormField(raw: string): FormField {
  const eq = raw.indexOf("=");
  if (eq <= 0) throw usageError(`-F: expected name=value or name=@file, got ${JSON.stringify(raw)}`);
  const name = raw.slice(0, eq);
  const value = raw.slice(eq + 1);
  if (!value.startsWith("@")) return { kind: "text", name, value };
  const [path = "", ...params] = value.slice(1).split(";");
  if (path === "") throw usageError(`-F ${name}=@: name the file to send after the @`);
  let type = "application/octet-stream";
  let filename = basename(path);
  for (const p of params) {
    const peq = p.indexOf("=");
    const key = p.slice(0, peq).trim().toLowerCase();
    const v = p.slice(peq + 1).trim();
    if (peq > 0 && key === "type" && v !== "") type = v;
    else if (peq > 0 && key === "filename" && v !== "") filename = v;
    else
      throw usageError(
        `-F ${name}: unknown part option ${JSON.stringify(p)}; use ;type=MIME or ;filename=NAME`,
      );
  }
  if (/[\r\n]/.test(type)) throw usageError(`-F ${name}: the type may not hold a line break`);
  return { kind: "file", name, path, filename, type };
}

/** A quoted-string for Content-Disposition, escaped as browsers do (HTML's multipart/form-data rules). */
function quoted(s: string): string {
  return `"${s.replace(/"/g, "%22").replace(/\r/g, "%0D").replace(/\n/g, "%0A")}"`;
}

/** The whole body and its Content-Type; fails before reading when the files exceed maxBytes. */
export async function multipartBody(
  fields: readonly FormField[],
  maxBytes: number,
  boundary = `----switchboard-${randomBytes(12).toString("hex")}`,
): Promise<{ body: Buffer; contentType: string }> {
  let size = 0;
  for (const f of fields) {
    if (f.kind === "text") size += Buffer.byteLength(f.value);
    else {
      const st = await stat(f.path).catch((e: NodeJS.ErrnoException) => {
        throw usageError(`-F ${f.name}: cannot read ${f.path}: ${e.code ?? e.message}`);
      });
      if (!st.isFile()) throw usageError(`-F ${f.name}: ${f.path} is not a file`);
      size += st.size;
    }
  }
  if (size > maxBytes) {
    throw usageError(
      `-F: the form's files add up to ${size} bytes; an http task's body may be at most ${maxBytes}`,
      "copy large files to the service another way",
    );
  }
  const parts: Buffer[] = [];
  for (const f of fields) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name=${quoted(f.name)}`;
    let data: Buffer;
    if (f.kind === "text") {
      head += "\r\n\r\n";
      data = Buffer.from(f.value);
    } else {
      head += `; filename=${quoted(f.filename)}\r\nContent-Type: ${f.type}\r\n\r\n`;
      data = await readFile(f.path);
    }
    parts.push(Buffer.from(head), data, Buffer.from("\r\n"));
  }
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` };
}
