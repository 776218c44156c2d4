// multipart/form-data bodies for `switchboard http -F`, as curl builds them: `name=value` is a text field,
// `name=@path` a file part (its base name as filename; `;type=mime` and `;filename=x` after the path).
import { randomBytes } from "node:crypto";
import { stat } from "node:fs/promises";
import { basename } from "node:path";
import { usageError } from "./cli-error.js";
import { fileChunks } from "./file-chunks.js";

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

/** A request body read as it is sent: its length known before (for Content-Length). */
export interface StreamedBody {
  contentType: string;
  length: number;
  read(): AsyncIterable<Buffer>;
}

/**
 * The form as a body streamed part by part, files read as they are sent (any size); its length is the
 * sum of the parts, so a file that changes size meanwhile fails the request rather than sending a lie.
 */
export async function multipartBody(
  fields: readonly FormField[],
  boundary = `----switchboard-${randomBytes(12).toString("hex")}`,
): Promise<StreamedBody> {
  const parts: { head: Buffer; text?: Buffer; path?: string; size: number }[] = [];
  for (const f of fields) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name=${quoted(f.name)}`;
    if (f.kind === "text") {
      const text = Buffer.from(f.value);
      parts.push({ head: Buffer.from(`${head}\r\n\r\n`), text, size: text.length });
    } else {
      const st = await stat(f.path).catch((e: NodeJS.ErrnoException) => {
        throw usageError(`-F ${f.name}: cannot read ${f.path}: ${e.code ?? e.message}`);
      });
      if (!st.isFile()) throw usageError(`-F ${f.name}: ${f.path} is not a file`);
      head += `; filename=${quoted(f.filename)}\r\nContent-Type: ${f.type}\r\n\r\n`;
      parts.push({ head: Buffer.from(head), path: f.path, size: st.size });
    }
  }
  const crlf = Buffer.from("\r\n");
  const close = Buffer.from(`--${boundary}--\r\n`);
  const length = parts.reduce((n, p) => n + p.head.length + p.size + crlf.length, 0) + close.length;
  return {
    contentType: `multipart/form-data; boundary=${boundary}`,
    length,
    read: async function* () {
      for (const p of parts) {
        yield p.head;
        if (p.text) yield p.text;
        else if (p.path !== undefined) yield* fileChunks(p.path, 0, p.size);
        yield crlf;
      }
      yield close;
    },
  };
}
