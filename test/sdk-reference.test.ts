// The SDK's reference in docs/sdk is made by TypeDoc from the doc comments (`npm run docs:sdk`); this
// fails when TypeDoc warns (an undocumented export, a dead link) or the pages were not made again. It
// also holds every layer's public surface (the index.ts of the SDK, the hub and the agent) to a doc
// comment on each export, which TypeDoc does not see for the hub and the agent.
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { promisify } from "node:util";
import ts from "typescript";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT } from "./support/root.js";

const REFERENCE = join(ROOT, "docs/sdk");
const SURFACES = ["src/client/index.ts", "src/hub/index.ts", "src/agent/index.ts"];

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      if (statSync(path).isDirectory()) walk(path);
      else out.push(relative(dir, path));
    }
  };
  walk(dir);
  return out.sort();
}

/** True when a `/** … *\/` comment stands right before the node (its statement, for a variable). */
function hasDocComment(node: ts.Node): boolean {
  if (ts.getJSDocCommentsAndTags(node).length > 0) return true;
  const text = node.getSourceFile().getFullText();
  const ranges = ts.getLeadingCommentRanges(text, node.getFullStart()) ?? [];
  return ranges.some((r) => text.startsWith("/**", r.pos));
}

/**
 * The exports of a module that have no doc comment: not at the declaration they lead to, nor at an
 * export on the way (how an index.ts documents a name whose declaration is terse, or outside the
 * project, such as grpc-js's `status` exported as Code).
 */
function undocumentedExports(program: ts.Program, file: string): string[] {
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(join(ROOT, file));
  if (!source) throw new Error(`${file} is not in the program`);
  const moduleSymbol = checker.getSymbolAtLocation(source);
  if (!moduleSymbol) throw new Error(`${file} is not a module`);
  const missing: string[] = [];
  for (const exported of checker.getExportsOfModule(moduleSymbol)) {
    let documented = false;
    let symbol = exported;
    for (let hops = 0; hops < 10; hops++) {
      for (const decl of symbol.declarations ?? []) {
        // A comment on one name of `export { a, b }`, or on an export statement of a single name.
        const lone = ts.isExportSpecifier(decl) && decl.parent.elements.length === 1;
        if (hasDocComment(decl) || (lone && hasDocComment(decl.parent.parent))) documented = true;
      }
      if (documented || !(symbol.flags & ts.SymbolFlags.Alias)) break;
      symbol = checker.getImmediateAliasedSymbol(symbol) ?? symbol;
    }
    if (!documented) missing.push(exported.name);
  }
  return missing;
}

describe("SDK reference", () => {
  const out = mkdtempSync(join(tmpdir(), "sdk-reference-"));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  // About 15 s on an idle machine (TypeDoc leaves type errors to tsc: skipErrorChecking).
  it("TypeDoc makes it without a warning, and docs/sdk is what it makes", { timeout: 180_000 }, async () => {
    const typedoc = await promisify(execFile)(
      process.execPath,
      [join(ROOT, "node_modules/typedoc/bin/typedoc"), "--out", out, "--logLevel", "Warn"],
      { cwd: ROOT, encoding: "utf8", timeout: 170_000 },
    ).catch((e: { stdout?: string; stderr?: string; message: string }) => ({
      stdout: e.stdout ?? "",
      stderr: `${e.stderr ?? ""}\n${e.message}`,
    }));
    const log = `${typedoc.stdout}${typedoc.stderr}`;
    expect(log, "TypeDoc warned (an export without a doc comment?)").not.toMatch(/warning|error|failed/i);
    const made = filesUnder(out);
    expect(made).toContain("README.md");
    expect(filesUnder(REFERENCE), "docs/sdk is stale: run npm run docs:sdk").toEqual(made);
    for (const file of made) {
      expect(
        readFileSync(join(REFERENCE, file), "utf8"),
        `docs/sdk/${file} is stale: run npm run docs:sdk`,
      ).toBe(readFileSync(join(out, file), "utf8"));
    }
  });

  it("every export of each layer's index.ts has a doc comment", () => {
    const program = ts.createProgram(
      SURFACES.map((f) => join(ROOT, f)),
      { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, noEmit: true },
    );
    for (const file of SURFACES) {
      expect(undocumentedExports(program, file), `exports of ${file} without a doc comment`).toEqual([]);
    }
  });
});
