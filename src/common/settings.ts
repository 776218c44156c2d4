// A program's settings declared once: each key's TOML path, environment variable, flag, schema,
// default and one line of help. From that one table come the loading (file < environment < flags),
// the validation messages (which name the key and where its value came from), the program's
// `--help` flags and the configuration reference in docs/.
import { readFileSync } from "node:fs";
import { parse as parseToml } from "smol-toml";
import { z } from "zod";
import { parseDuration } from "./duration.js";
import { Code, SwitchboardError } from "./errors.js";

/**
 * How a string from the environment or a flag is read before the schema sees it. "list" and "labels"
 * hand the schema the string (or a repeated flag's strings) to split itself.
 */
export type SettingInput = "string" | "number" | "bool" | "list" | "labels" | "secs";

export interface SettingSpec<T = unknown> {
  /** Validates a value from the file, or one read from the environment or a flag. */
  schema: z.ZodType<T>;
  /** Used when no layer sets the key; a function is called at load time (the host name, the cores). */
  default?: T | (() => T);
  /** Must be set (in the file, since it has no default): its absence is an error naming it. */
  required?: boolean;
  /** How the default reads in help and docs where the value alone would not say it ("the host name"). */
  defaultText?: string;
  help: string;
  env?: string;
  /** The long flag and its argument as `--help` shows it: "--listen <host:port>", or "--shell" for a switch. */
  flag?: string;
  /** A short alias of the flag: "-c". */
  short?: string;
  /** Repeatable flag: each use adds to a list (`--hub a --hub b`). */
  repeatable?: boolean;
  input: SettingInput;
  /** Other names of the same key in the file (older or seed configurations), e.g. ["agent.master_host"]. */
  aliases?: readonly string[];
  /**
   * Keys that set the same thing another way (`token` and `token_file`): when a higher layer sets one,
   * what lower layers set for the others is dropped, so a flag replaces the file's choice whole.
   */
  sameAs?: readonly string[];
  /** Left out of the generated reference's example file (secrets, keys shown elsewhere). */
  hideExample?: boolean;
}

/** A table of tables whose names the user chooses (`[datasources.NAME]`): one spec per key of each. */
export interface SettingTableSpec {
  table: Readonly<Record<string, SettingSpec>>;
  help: string;
  /** A name for the docs: "NAME". */
  placeholder: string;
  /** Names of the tables as the user may choose them. */
  name: z.ZodType<string>;
  /** An example table for the docs. */
  example: Readonly<Record<string, unknown>>;
}

export type Settings = Readonly<Record<string, SettingSpec | SettingTableSpec>>;

export interface SectionDoc {
  name: string;
  help: string;
}

/** What one program reads: its sections (in the docs' order) and its settings keyed by "section.key". */
export interface SettingsTable<S extends Settings> {
  program: string;
  /** The command's own flags that are not settings (`config`, `logLevel`): the loader passes over them. */
  commandFlags: readonly string[];
  sections: readonly SectionDoc[];
  settings: S;
}

type ValueOf<X> = X extends SettingTableSpec
  ? Record<string, { [K in keyof X["table"]]: ValueOf<X["table"][K]> }>
  : X extends { schema: z.ZodType<infer T> }
    ? X extends { default: unknown } | { required: true }
      ? T
      : T | undefined
    : never;

/** The loaded values: each key's validated value (undefined when unset and without a default). */
export type SettingValues<S extends Settings> = { readonly [K in keyof S]: ValueOf<S[K]> };

export type Origin =
  | { kind: "file"; file: string }
  | { kind: "env"; name: string }
  | { kind: "flag"; name: string }
  | { kind: "default" };

export interface LoadedSettings<S extends Settings> {
  values: SettingValues<S>;
  /** Where each key that was set came from; "where(key)" is " (in FILE)", " (from --flag)" or "". */
  origin: (key: string) => Origin;
  where: (key: string) => string;
  file?: string;
}

/** Bad settings (INVALID_ARGUMENT): one sentence per problem, each naming the key and where it came from. */
export class SettingsError extends SwitchboardError {
  /** One sentence per problem; `message` is these joined by newlines. */
  readonly problems: string[];
  constructor(problems: string[]) {
    super(Code.INVALID_ARGUMENT, problems.join("\n"));
    this.name = "SettingsError";
    this.problems = problems;
  }
}

export function defineSettings<S extends Settings>(table: SettingsTable<S>): SettingsTable<S> {
  for (const key of Object.keys(table.settings)) {
    const section = key.includes(".") ? key.slice(0, key.indexOf(".")) : key;
    if (!table.sections.some((s) => s.name === section))
      throw new Error(`${key}: undeclared section ${section}`);
  }
  return table;
}

export function isTableSpec(s: SettingSpec | SettingTableSpec): s is SettingTableSpec {
  return "table" in s;
}

/** The attribute commander gives a long flag: "--tls-ca <file>" → "tlsCa". */
export function flagAttribute(flag: string): string {
  const long = flag.split(/[ ,]/)[0]!.replace(/^--/, "");
  return long.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** The flag's own name, "--tls-ca". */
export function flagName(flag: string): string {
  return flag.split(" ")[0]!;
}

// ---- reading values ----

const TRUE_WORDS = new Set(["1", "true", "yes", "on"]);
const FALSE_WORDS = new Set(["0", "false", "no", "off"]);

/** Strings become numbers, booleans or lists when they clearly are; anything else is left for the schema to name. */
function coerce(value: unknown, input: SettingInput): unknown {
  if (typeof value !== "string") {
    if (Array.isArray(value) && input !== "list" && input !== "labels") return value[value.length - 1];
    return value; // commander typed it already (a boolean switch, a repeated flag's list)
  }
  const s = value.trim();
  switch (input) {
    case "number":
      return /^-?\d+(\.\d+)?$/.test(s) ? Number(s) : value;
    case "bool":
      if (TRUE_WORDS.has(s.toLowerCase())) return true;
      if (FALSE_WORDS.has(s.toLowerCase())) return false;
      return value;
    case "secs":
      // A bare number is seconds, like the file's *_secs keys; "500ms", "2m" are durations.
      if (/^\d+(\.\d+)?$/.test(s)) return Number(s);
      try {
        return parseDuration(s) / 1000;
      } catch {
        return value;
      }
    default:
      return value;
  }
}

/** A value as an error message shows it: JSON, cut at 80 characters. */
export function show(v: unknown): string {
  if (v === undefined) return "nothing";
  if (typeof v === "bigint") return `${v}`;
  let s: string | undefined;
  try {
    s = JSON.stringify(v);
  } catch {
    s = undefined;
  }
  s ??= Object.prototype.toString.call(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

export function describeOrigin(o: Origin): string {
  switch (o.kind) {
    case "file":
      return ` (in ${o.file})`;
    case "env":
    case "flag":
      return ` (from ${o.name})`;
    case "default":
      return "";
  }
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function dotted(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

export function readTomlFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new SettingsError([`${file}: cannot read the config file: ${code ?? (e as Error).message}`]);
  }
  try {
    return parseToml(text);
  } catch (e) {
    const err = e as Error & { line?: number; column?: number };
    const where = err.line ? ` at line ${err.line}, column ${err.column ?? 0}` : "";
    const first = (err.message ?? String(e)).split("\n")[0]!.replace(/^Invalid TOML document:\s*/, "");
    throw new SettingsError([`${file}: invalid TOML${where}: ${first}`]);
  }
}

function issueText(issues: readonly z.core.$ZodIssue[], key: string): string[] {
  return issues.map((i) => {
    const sub = dotted(i.path);
    const name = sub === "" ? key : `${key}${sub.startsWith("[") ? "" : "."}${sub}`;
    if (i.code === "unrecognized_keys") return `${name}.${i.keys.join(", ")}: unknown key`;
    return `${name}: ${i.message}`;
  });
}

export interface LoadInput {
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Flags as commander hands them over (camelCase attributes). */
  flags?: Readonly<Record<string, unknown>>;
}

/**
 * Reads the file, then the environment, then the flags (later ones win), fills defaults and validates
 * each key. Throws SettingsError naming every bad key and where its value came from.
 */
export function loadSettings<S extends Settings>(
  table: SettingsTable<S>,
  input: LoadInput,
): LoadedSettings<S> {
  const env = input.env ?? process.env;
  const flags = input.flags ?? {};
  const doc = input.file !== undefined ? readTomlFile(input.file) : {};
  const fileOrigin: Origin =
    input.file !== undefined ? { kind: "file", file: input.file } : { kind: "default" };
  const flagAttributes = new Set(table.commandFlags);
  for (const spec of Object.values(table.settings)) {
    if (!isTableSpec(spec) && spec.flag !== undefined) flagAttributes.add(flagAttribute(spec.flag));
  }
  for (const name of Object.keys(flags)) {
    // A caller's mistake, not a user's: a flag nobody reads would be ignored without a word.
    if (!flagAttributes.has(name))
      throw new Error(`${table.program} settings: no setting has the flag "${name}"`);
  }
  const problems: string[] = [];
  const origins = new Map<string, Origin>();
  const values: Record<string, unknown> = {};

  // Every key of the file must be known: a typo must not silently fall back to a default.
  const known = new Set<string>();
  for (const [key, spec] of Object.entries(table.settings)) {
    known.add(key);
    if (!isTableSpec(spec)) for (const a of spec.aliases ?? []) known.add(a);
  }
  const sectionNames = table.sections.map((s) => s.name);
  for (const [section, body] of Object.entries(doc)) {
    if (!sectionNames.includes(section)) {
      problems.push(
        `${section}: unknown section; known sections are ${sectionNames.map((s) => `[${s}]`).join(", ")}${describeOrigin(fileOrigin)}`,
      );
      continue;
    }
    if (!isTable(body)) {
      problems.push(`${section}: expected a table${describeOrigin(fileOrigin)}`);
      continue;
    }
    if (known.has(section)) continue; // a table of tables: its own schema checks its keys
    for (const key of Object.keys(body)) {
      if (!known.has(`${section}.${key}`))
        problems.push(`${section}.${key}: unknown key${describeOrigin(fileOrigin)}`);
    }
  }

  const fromFile = (key: string): { value: unknown; name: string } | undefined => {
    const [section, ...rest] = key.split(".");
    const body = doc[section!];
    if (!isTable(body)) return undefined;
    if (rest.length === 0) return { value: body, name: key };
    const value = body[rest.join(".")];
    return value === undefined ? undefined : { value, name: key };
  };

  for (const [key, spec] of Object.entries(table.settings)) {
    if (isTableSpec(spec)) {
      const raw = fromFile(key)?.value ?? {};
      values[key] = loadTables(key, spec, raw, fileOrigin, problems);
      origins.set(key, fileOrigin);
      continue;
    }
    let raw: unknown;
    let origin: Origin = { kind: "default" };
    let named = key; // the name the value was given under: an alias in the file is named as written
    const flagValue = spec.flag !== undefined ? flags[flagAttribute(spec.flag)] : undefined;
    const envValue = spec.env !== undefined ? env[spec.env] : undefined;
    if (flagValue !== undefined) {
      raw = coerce(flagValue, spec.input);
      origin = { kind: "flag", name: flagName(spec.flag!) };
    } else if (envValue !== undefined && envValue !== "") {
      // An empty variable counts as unset, so `SWITCHBOARD_TOKEN= cmd` cannot smuggle in an empty value.
      raw = coerce(envValue, spec.input);
      origin = { kind: "env", name: spec.env! };
    } else {
      const found = [key, ...(spec.aliases ?? [])].map(fromFile).filter((f) => f !== undefined);
      const short = (k: string): string => k.slice(k.indexOf(".") + 1);
      if (found.length > 1) {
        problems.push(
          `${found[found.length - 1]!.name}: set one of ${found.map((f) => short(f.name)).join(" and ")} (names of the same setting), not several${describeOrigin(fileOrigin)}`,
        );
      }
      if (found.length > 0) {
        raw = found[0]!.value;
        origin = fileOrigin;
        named = found[0]!.name;
      }
    }
    if (raw === undefined) {
      if (spec.required) problems.push(`${key}: required`);
      if (spec.default === undefined) continue;
      raw = typeof spec.default === "function" ? (spec.default as () => unknown)() : spec.default;
    }
    const parsed = spec.schema.safeParse(raw);
    if (!parsed.success) {
      for (const p of issueText(parsed.error.issues, named)) problems.push(`${p}${describeOrigin(origin)}`);
      continue;
    }
    values[key] = parsed.data;
    origins.set(key, origin);
  }
  const rank = (o: Origin | undefined): number =>
    o === undefined ? -1 : { default: 0, file: 1, env: 2, flag: 3 }[o.kind];
  for (const [key, spec] of Object.entries(table.settings)) {
    if (isTableSpec(spec)) continue;
    for (const other of spec.sameAs ?? []) {
      if (rank(origins.get(key)) > Math.max(rank(origins.get(other)), 0)) {
        delete values[other];
        origins.delete(other);
      }
    }
  }
  if (problems.length > 0) throw new SettingsError(problems);
  const originOf = (key: string): Origin => origins.get(key) ?? { kind: "default" };
  return {
    values: values as SettingValues<S>,
    origin: originOf,
    where: (key) => describeOrigin(originOf(key)),
    ...(input.file !== undefined ? { file: input.file } : {}),
  };
}

function loadTables(
  key: string,
  spec: SettingTableSpec,
  raw: unknown,
  origin: Origin,
  problems: string[],
): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  if (!isTable(raw)) {
    problems.push(
      `${key}: expected a table of tables like [${key}.${spec.placeholder}]${describeOrigin(origin)}`,
    );
    return out;
  }
  for (const [name, body] of Object.entries(raw)) {
    const at = `${key}.${name}`;
    if (!spec.name.safeParse(name).success) {
      problems.push(`${at}: not a valid name${describeOrigin(origin)}`);
      continue;
    }
    if (!isTable(body)) {
      problems.push(`${at}: expected a table${describeOrigin(origin)}`);
      continue;
    }
    const item: Record<string, unknown> = {};
    for (const k of Object.keys(body)) {
      if (!(k in spec.table)) problems.push(`${at}.${k}: unknown key${describeOrigin(origin)}`);
    }
    for (const [k, s] of Object.entries(spec.table)) {
      let v = body[k];
      if (v === undefined && s.default !== undefined) {
        v = typeof s.default === "function" ? (s.default as () => unknown)() : s.default;
      }
      if (v === undefined) {
        if (s.required) problems.push(`${at}.${k}: required${describeOrigin(origin)}`);
        continue;
      }
      const parsed = s.schema.safeParse(v);
      if (!parsed.success) {
        for (const p of issueText(parsed.error.issues, `${at}.${k}`))
          problems.push(`${p}${describeOrigin(origin)}`);
      } else item[k] = parsed.data;
    }
    out[name] = item;
  }
  return out;
}
