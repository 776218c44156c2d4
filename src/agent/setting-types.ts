// The value types of the agent's settings table (./settings.ts) that only the agent has: hub addresses,
// labels, command-policy globs and patterns, URL prefixes, file roots. Each says what was expected and
// what came instead; the general ones (integers, durations, names) are in ../common/setting-types.ts.
import { resolve } from "node:path";
import { z } from "zod";
import { show } from "../common/settings.js";
import { check, checkedList } from "../common/setting-types.js";
import { parseAllowPrefix } from "./executors/http/index.js";
import { parseHubAddress } from "./link/hub-address.js";

/** Hub addresses: a TOML array or string; from a variable or a flag, comma-separated (items of a repeated flag too). */
export const hubList = z.unknown().transform((v, ctx) => {
  if (!Array.isArray(v) && typeof v !== "string") {
    ctx.addIssue({ code: "custom", message: `expected a list of host:port addresses, got ${show(v)}` });
    return z.NEVER;
  }
  const items: unknown[] = typeof v === "string" ? [v] : (v as unknown[]);
  const out: string[] = [];
  items.forEach((item, i) => {
    const path = Array.isArray(v) ? [i] : [];
    if (typeof item !== "string") {
      ctx.addIssue({ code: "custom", message: `expected host:port, got ${show(item)}`, path });
      return;
    }
    for (const part of item.split(",")) {
      if (part.trim() === "" && item.includes(",")) continue; // "a,,b" or a trailing comma
      try {
        out.push(parseHubAddress(part));
      } catch (e) {
        ctx.addIssue({ code: "custom", message: (e as Error).message, path });
      }
    }
  });
  if (out.length === 0 && items.length === 0) {
    ctx.addIssue({ code: "custom", message: "expected at least one host:port, got an empty list" });
  }
  return out;
});

const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/;

/** Labels: a TOML table of strings, or "k=v,k=v" from the environment or a flag (repeatable flag: a list). */
export const labelMap = z.unknown().transform((v, ctx) => {
  const out: Record<string, string> = {};
  const bad = (message: string, path: (string | number)[] = []): void =>
    ctx.addIssue({ code: "custom", message, path });
  if (typeof v === "string" || Array.isArray(v)) {
    const items = (typeof v === "string" ? [v] : (v as unknown[])).flatMap((x) =>
      typeof x === "string" ? x.split(",") : [x],
    );
    for (const item of items) {
      if (typeof item !== "string") {
        bad(`expected k=v pairs separated by commas, got ${show(item)}`);
        continue;
      }
      if (item.trim() === "") continue;
      const eq = item.indexOf("=");
      const key = eq > 0 ? item.slice(0, eq).trim() : "";
      if (eq <= 0 || !LABEL_KEY.test(key)) {
        bad(`expected k=v pairs separated by commas, got ${show(item)}`);
        continue;
      }
      out[key] = item.slice(eq + 1).trim();
    }
    return out;
  }
  if (typeof v !== "object" || v === null) {
    bad(`expected a table of strings like { region = "eu" }, got ${show(v)}`);
    return z.NEVER;
  }
  for (const [key, value] of Object.entries(v)) {
    if (!LABEL_KEY.test(key)) bad(`invalid label name; use letters, digits and . _ / -`, [key]);
    else if (typeof value !== "string") bad(`expected a string, got ${show(value)}`, [key]);
    else out[key] = value;
  }
  return out;
});

/** `[shell] allow` and `deny`: absolute path globs (one that starts with two stars: a name anywhere). */
export const pathGlobs = checkedList('absolute path globs like "/usr/bin/*"', (g) =>
  g.startsWith("/") || g.startsWith("**/")
    ? undefined
    : `expected an absolute path glob like "/usr/bin/*" (or "**/name" for a name anywhere), got ${show(g)}`,
);
/** Globs on environment variable names. */
export const nameGlobs = checkedList('variable name globs like "LANG" or "APP_*"', (g) =>
  /^[A-Za-z0-9_*?]+$/.test(g)
    ? undefined
    : `expected a variable name glob (letters, digits, _, * and ?), got ${show(g)}`,
);
/** Regular expressions, each compiled to check it. */
export const patterns = checkedList("regular expressions", (r) => {
  try {
    new RegExp(r);
    return undefined;
  } catch (e) {
    return `not a valid regular expression: ${(e as Error).message}`;
  }
});
/** POSIX user names. */
export const userNames = checkedList("user names", (u) =>
  /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/.test(u) ? undefined : `expected a user name, got ${show(u)}`,
);
/** A number of cores, fractions allowed. */
export const cpuCount = check<number>(
  (v) => typeof v === "number" && Number.isFinite(v) && v >= 0.01 && v <= 4096,
  "a number of cores from 0.01 to 4096",
);

/** `[http] allow`: URL prefixes, normalized; a bad item is named by its index. */
export const urlPrefixes = z.unknown().transform((v, ctx) => {
  if (!Array.isArray(v)) {
    ctx.addIssue({
      code: "custom",
      message: `expected a list of URL prefixes like ["http://svc.internal:8080/api/"], got ${show(v)}`,
    });
    return z.NEVER;
  }
  const out: string[] = [];
  (v as unknown[]).forEach((item, i) => {
    const p = typeof item === "string" ? parseAllowPrefix(item) : `expected a URL prefix, got ${show(item)}`;
    if (typeof p === "string") ctx.addIssue({ code: "custom", message: p, path: [i] });
    else out.push(p.href);
  });
  return out;
});

/** `[files] roots`: absolute directories, normalized; a bad item is named by its index. */
export const fileRoots = z.unknown().transform((v, ctx) => {
  if (!Array.isArray(v)) {
    ctx.addIssue({
      code: "custom",
      message: `expected a list of absolute directories like ["/srv/data"], got ${show(v)}`,
    });
    return z.NEVER;
  }
  const out: string[] = [];
  (v as unknown[]).forEach((item, i) => {
    if (typeof item !== "string" || !item.startsWith("/") || item.includes("\0")) {
      ctx.addIssue({ code: "custom", message: `expected an absolute path, got ${show(item)}`, path: [i] });
    } else out.push(resolve(item));
  });
  return out;
});
