// The configuration reference in docs/, written from a program's settings table, so the docs cannot
// drift from what the program reads: a test compares the generated block with the file.
import { isTableSpec, type SettingSpec, type Settings, type SettingsTable } from "./settings.js";

export const BEGIN =
  "<!-- settings:begin (generated from the settings table by `npm run docs:config`; edit it there) -->";
export const END = "<!-- settings:end -->";

function defaultOf(spec: SettingSpec): string {
  if (spec.defaultText !== undefined) return spec.defaultText;
  if (spec.default === undefined) return "";
  if (typeof spec.default === "function") return "";
  return `\`${inline(spec.default)}\``;
}

/** A value as it is written in TOML, on one line. */
function inline(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(inline).join(", ")}]`;
  if (typeof v === "object" && v !== null) {
    const entries = Object.entries(v).map(([k, x]) => `${k} = ${inline(x)}`);
    return entries.length === 0 ? "{}" : `{ ${entries.join(", ")} }`;
  }
  return typeof v === "string" ? JSON.stringify(v) : String(v);
}

function cell(s: string): string {
  return s.replace(/\|/g, "\\|").replace(/\n/g, " ");
}

function row(key: string, spec: SettingSpec): string {
  const where = [spec.env ? `\`${spec.env}\`` : "", spec.flag ? `\`${spec.flag.split(" ")[0]}\`` : ""]
    .filter((x) => x !== "")
    .join(", ");
  const aliases = spec.aliases?.length
    ? ` Also read as ${spec.aliases.map((a) => `\`${a}\``).join(", ")}.`
    : "";
  const help = aliases && !/[.!?]$/.test(spec.help) ? `${spec.help}.` : spec.help;
  return `| \`${key}\` | ${cell(defaultOf(spec))} | ${where} | ${cell(help + aliases)} |`;
}

/** The Markdown between BEGIN and END: one table per section, in the table's order. */
export function renderReference<S extends Settings>(table: SettingsTable<S>): string {
  const out: string[] = [BEGIN, ""];
  for (const section of table.sections) {
    const keys = Object.entries(table.settings).filter(
      ([k]) => k === section.name || k.startsWith(`${section.name}.`),
    );
    if (keys.length === 0) continue;
    out.push(`### [${section.name}]`, "", section.help, "");
    for (const [key, spec] of keys) {
      if (isTableSpec(spec)) {
        out.push(spec.help, "", "```toml", `[${key}.${Object.keys(spec.example)[0] ?? spec.placeholder}]`);
        const example = Object.values(spec.example)[0] as Record<string, unknown> | undefined;
        for (const [k, v] of Object.entries(example ?? {})) out.push(`${k} = ${inline(v)}`);
        out.push("```", "");
        out.push("| key | default | what |", "| --- | --- | --- |");
        for (const [k, s] of Object.entries(spec.table)) {
          out.push(`| \`${key}.${spec.placeholder}.${k}\` | ${cell(defaultOf(s))} | ${cell(s.help)} |`);
        }
        out.push("");
        continue;
      }
    }
    const plain = keys.filter(([, s]) => !isTableSpec(s)) as [string, SettingSpec][];
    if (plain.length > 0) {
      out.push("| key | default | environment, flag | what |", "| --- | --- | --- | --- |");
      for (const [key, spec] of plain) out.push(row(key, spec));
      out.push("");
    }
  }
  out.push(END);
  return out.join("\n");
}

/** The document with its generated block replaced; throws when the document has no such block. */
export function withReference(doc: string, generated: string): string {
  const a = doc.indexOf(BEGIN.slice(0, 20));
  const b = doc.indexOf(END);
  if (a < 0 || b < 0 || b < a) throw new Error("the document has no settings block to replace");
  return doc.slice(0, a) + generated + doc.slice(b + END.length);
}
