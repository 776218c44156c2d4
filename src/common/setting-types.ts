// The value types settings are made of, each with a message that says what was expected and what
// came instead ("expected a positive integer, got 0"), shared by the hub's and the agent's tables.
import { z } from "zod";
import { parseDuration } from "./duration.js";
import { show } from "./settings.js";

export function check<T>(ok: (v: unknown) => boolean, expected: string): z.ZodType<T> {
  return z.custom<T>((v) => ok(v), { error: (iss) => `expected ${expected}, got ${show(iss.input)}` });
}

/** An integer in [min, max]; the message says whether the type or the range is wrong. */
export function integer(kind: string, min: number, max: number, notPositive = false): z.ZodType<number> {
  return z.unknown().transform((v, ctx) => {
    // "a positive integer, got 0" reads better than a range for a value that is not positive at all.
    if (typeof v !== "number" || !Number.isInteger(v) || (notPositive && v < 1)) {
      ctx.addIssue({ code: "custom", message: `expected ${kind}, got ${show(v)}` });
      return z.NEVER;
    }
    if (v < min || v > max) {
      ctx.addIssue({ code: "custom", message: `expected ${kind} from ${min} to ${max}, got ${v}` });
      return z.NEVER;
    }
    return v;
  });
}

export const positiveInt = (max: number): z.ZodType<number> => integer("a positive integer", 1, max, true);

/** A positive number of seconds, at most a day. */
export const seconds = check<number>(
  (v) => typeof v === "number" && Number.isFinite(v) && v > 0 && v <= 86_400,
  "a positive number of seconds (at most 86400)",
);

/** Zero or more seconds, at most a day. */
export const secondsOrZero = check<number>(
  (v) => typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= 86_400,
  "a number of seconds from 0 to 86400",
);

export const bool = check<boolean>((v) => typeof v === "boolean", "true or false");

export const text = check<string>((v) => typeof v === "string" && v.trim() !== "", "a non-empty string");

export const NAME = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;

export const identifier = (what: string): z.ZodType<string> =>
  check<string>(
    (v) => typeof v === "string" && NAME.test(v),
    `${what} of letters, digits and . _ : @ - (at most 128, starting with a letter or digit)`,
  );

/** One of the given words. */
export function oneOf<T extends string>(words: readonly T[]): z.ZodType<T> {
  return check<T>(
    (v) => typeof v === "string" && (words as readonly string[]).includes(v),
    words
      .map((w) => `"${w}"`)
      .join(", ")
      .replace(/, ([^,]*)$/, " or $1"),
  );
}

/** A duration: seconds as a number, or "500ms", "30s", "2m"; at most a day. */
export const durationSecs = z.unknown().transform((v, ctx) => {
  if (typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= 86_400) return v;
  if (typeof v === "string") {
    try {
      const ms = parseDuration(v.trim());
      if (ms >= 0 && ms <= 86_400_000) return ms / 1000;
    } catch {
      // reported below
    }
  }
  ctx.addIssue({
    code: "custom",
    message: `expected seconds (a number) or a duration like "30s" or "500ms" (at most a day), got ${show(v)}`,
  });
  return z.NEVER;
});

/** host:port for a listener: a name or IPv4 address, or [IPv6]; port 0 picks a free one. */
export const listenAddress = check<string>(
  (v) =>
    typeof v === "string" &&
    /^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/.test(v) &&
    Number(v.slice(v.lastIndexOf(":") + 1)) <= 65_535,
  "host:port such as 0.0.0.0:7000",
);

/** A list of strings each checked by `ok`, a bad item named by its index. */
export function checkedList(expected: string, ok: (s: string) => string | undefined): z.ZodType<string[]> {
  return z.unknown().transform((v, ctx) => {
    if (!Array.isArray(v)) {
      ctx.addIssue({ code: "custom", message: `expected a list of ${expected}, got ${show(v)}` });
      return z.NEVER;
    }
    const out: string[] = [];
    (v as unknown[]).forEach((item, i) => {
      const problem = typeof item === "string" ? ok(item) : `expected ${expected}, got ${show(item)}`;
      if (problem !== undefined) ctx.addIssue({ code: "custom", message: problem, path: [i] });
      else out.push(item as string);
    });
    return out;
  });
}
