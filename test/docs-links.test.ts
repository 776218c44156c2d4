// Every relative link in the project's Markdown (README, CONTRIBUTING, docs/, bench/) must lead to a
// file that exists, and a link with a #fragment to a heading of that file (GitHub's anchor rules), so
// that moving a page or renaming a heading cannot leave a dead link behind.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "./support/root.js";

function markdownFiles(): string[] {
  const files = ["README.md", "CONTRIBUTING.md", "bench/README.md"].map((f) => join(ROOT, f));
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith(".md")) files.push(path);
    }
  };
  walk(join(ROOT, "docs"));
  return files;
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes, repeats numbered. */
export function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    const m = fenced ? null : /^#{1,6}\s+(.*)$/.exec(line);
    if (!m) continue;
    const base = m[1]!
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, "")
      .replace(/\s/g, "-");
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

interface Link {
  file: string;
  target: string;
}

function linksOf(file: string): Link[] {
  const text = readFileSync(file, "utf8").replace(/```[\s\S]*?```/g, "");
  const links: Link[] = [];
  for (const m of text.matchAll(/\[[^\]]*\]\(([^)\s]+)\)/g)) {
    const target = m[1]!;
    if (/^[a-z]+:/i.test(target)) continue; // http:, https:, mailto:
    links.push({ file, target });
  }
  return links;
}

describe("documentation links", () => {
  const files = markdownFiles();

  it("finds the documents", () => {
    expect(files.length).toBeGreaterThan(10);
    for (const f of files) expect(existsSync(f), f).toBe(true);
  });

  it("every relative link leads to an existing file and heading", () => {
    const broken: string[] = [];
    for (const file of files) {
      for (const { target } of linksOf(file)) {
        const [path, fragment] = target.split("#", 2) as [string, string | undefined];
        const dest = path === "" ? file : resolve(dirname(file), path);
        const where = `${relative(ROOT, file)} → ${target}`;
        if (!existsSync(dest)) {
          broken.push(`${where}: no such file`);
          continue;
        }
        if (fragment !== undefined && !statSync(dest).isDirectory()) {
          if (!anchorsOf(readFileSync(dest, "utf8")).has(fragment)) broken.push(`${where}: no such heading`);
        }
      }
    }
    expect(broken).toEqual([]);
  });

  it("computes GitHub's anchors", () => {
    const a = anchorsOf(
      "# Shell tasks\n## On the command line\n## On the command line\n```\n# not\n```\n## `[files]` roots",
    );
    expect([...a]).toEqual(["shell-tasks", "on-the-command-line", "on-the-command-line-1", "files-roots"]);
  });

  it("keeps the front page short", () => {
    const lines = readFileSync(join(ROOT, "README.md"), "utf8").split("\n").length;
    expect(lines).toBeLessThanOrEqual(300);
  });
});
