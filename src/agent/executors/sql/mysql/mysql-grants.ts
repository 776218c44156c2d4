// What a MySQL/MariaDB account may do beyond reading, from the GRANT statements SHOW GRANTS prints for it.
// A read_only datasource relies on a read-only session, which does not stop SELECT ... INTO OUTFILE (FILE),
// SET GLOBAL (SUPER, SYSTEM_VARIABLES_ADMIN), KILL of other sessions (PROCESS, CONNECTION ADMIN) or
// FLUSH/SHUTDOWN: so its account may hold only the privileges below, and anything else is named.

/** Privileges that only read (USAGE means none at all). Everything else is refused on a read_only datasource. */
const READ_ONLY_PRIVILEGES = new Set([
  "USAGE",
  "SELECT",
  "SHOW VIEW",
  "SHOW DATABASES",
  "SHOW CREATE ROUTINE",
]);

/** Named first when several are held: these reach the server itself (files, settings, other sessions). */
const SEVEREST = [
  "ALL PRIVILEGES",
  "SUPER",
  "FILE",
  "SYSTEM_VARIABLES_ADMIN",
  "PROCESS",
  "SHUTDOWN",
  "RELOAD",
];

export interface GrantsSummary {
  /** "FILE ON *.*", "INSERT ON `shop`.*", "GRANT OPTION ON `shop`.*"...: what goes beyond reading, severest first. */
  beyondReading: string[];
  /** Roles granted to the account or to PUBLIC, as SHOW GRANTS prints them (`r` or `r`@`%`). */
  roles: string[];
}

/**
 * Reads SHOW GRANTS lines: `GRANT privileges ON object TO grantee [WITH GRANT OPTION]` and
 * `GRANT role[, role] TO grantee [WITH ADMIN OPTION]`. Other lines (SET DEFAULT ROLE, MySQL's partial REVOKE)
 * are ignored: a REVOKE only narrows a grant, and taking the grant whole errs on the side of refusing.
 */
export function summarizeGrants(lines: readonly string[]): GrantsSummary {
  const beyond: string[] = [];
  const roles: string[] = [];
  for (const line of lines) {
    const words = splitTopLevel(line.trim(), " ");
    if (words[0]?.toUpperCase() !== "GRANT") continue;
    const to = words.findIndex((w) => w.toUpperCase() === "TO");
    if (to < 0) continue;
    const on = words.findIndex((w, i) => i < to && w.toUpperCase() === "ON");
    const options = withOptions(words.slice(to + 1));
    if (on < 0) {
      // A role grant: the roles' own privileges are read separately (SET ROLE / USING).
      const granted = splitTopLevel(words.slice(1, to).join(" "), ",").map((r) => r.trim());
      roles.push(...granted.filter((r) => r !== ""));
      if (options.includes("ADMIN OPTION")) {
        for (const r of granted) beyond.push(`ADMIN OPTION ON role ${r}`);
      }
      continue;
    }
    const object = words.slice(on + 1, to).join(" ");
    const privileges = splitTopLevel(words.slice(1, on).join(" "), ",")
      .map((p) => normalizePrivilege(p))
      .filter((p) => p !== "");
    for (const p of privileges) {
      if (!READ_ONLY_PRIVILEGES.has(p)) beyond.push(`${p} ON ${object}`);
    }
    if (options.includes("GRANT OPTION")) beyond.push(`GRANT OPTION ON ${object}`);
  }
  return { beyondReading: severestFirst([...new Set(beyond)]), roles: [...new Set(roles)] };
}

/** The words after the grantee's WITH, upper case and rejoined ("GRANT OPTION MAX_QUERIES_PER_HOUR 10"). */
function withOptions(afterTo: string[]): string {
  const at = afterTo.findIndex((w) => w.toUpperCase() === "WITH");
  return at < 0
    ? ""
    : afterTo
        .slice(at + 1)
        .join(" ")
        .toUpperCase();
}

/** "insert (`a`, `b`)" -> "INSERT"; "ALL" -> "ALL PRIVILEGES"; dynamic privileges keep their name. */
function normalizePrivilege(text: string): string {
  const name = text
    .replace(/\(.*\)/s, "")
    .trim()
    .replace(/\s+/g, " ")
    .toUpperCase();
  return name === "ALL" ? "ALL PRIVILEGES" : name;
}

function severestFirst(items: string[]): string[] {
  const rank = (item: string): number => {
    const i = SEVEREST.findIndex((p) => item.startsWith(`${p} ON `));
    return i < 0 ? SEVEREST.length : i;
  };
  return items
    .map((item, index) => ({ item, index }))
    .sort((a, b) => rank(a.item) - rank(b.item) || a.index - b.index)
    .map((x) => x.item);
}

/**
 * Splits on sep where it is outside quotes (`...`, '...', "...") and parentheses; runs of sep produce no
 * empty pieces when sep is a space.
 */
function splitTopLevel(text: string, sep: string): string[] {
  const out: string[] = [];
  let current = "";
  let quote: string | undefined;
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quote !== undefined) {
      current += ch;
      if (ch === quote) {
        // A doubled quote is the quote character itself.
        if (text[i + 1] === quote) current += text[++i];
        else quote = undefined;
      }
      continue;
    }
    if (ch === "`" || ch === "'" || ch === '"') quote = ch;
    else if (ch === "(") depth++;
    else if (ch === ")") depth = Math.max(0, depth - 1);
    if (ch === sep && depth === 0) {
      if (sep !== " " || current !== "") out.push(current);
      current = "";
      continue;
    }
    current += ch;
  }
  if (sep !== " " || current !== "") out.push(current);
  return out;
}
