// `switchboard cp`: copies a file or a directory (-r) between this machine and an agent, in either
// direction: `cp LOCAL agent:ID:/path` (or pool:NAME:/path) and `cp agent:ID:/path LOCAL`. The bytes stream
// in bounded memory both ways; the SHA-256 is checked at both ends; nothing appears under the destination's
// name until it is whole; an interrupted copy carries on from where it stopped with --resume.
import type { Command } from "commander";
import { EXIT, usageError } from "../cli-error.js";
import { clientCommand, withClient } from "../client-command.js";
import { parseLocation, type Location } from "../cp-transfer.js";
import { download } from "../cp-download.js";
import { upload } from "../cp-upload.js";
import { durationFlag } from "../flags.js";
import { ProgressLine } from "../progress-line.js";
import { cancelOnInterrupt } from "../signals.js";

interface CpFlags {
  recursive?: boolean;
  force?: boolean;
  resume?: boolean;
  progress?: boolean;
  timeout?: string;
  wait?: boolean;
  output?: string;
}

export function registerCp(program: Command): void {
  const cmd = clientCommand(program, "cp", "copy files and directories to and from agents")
    .argument("<source>", "a local path, or agent:ID:/path")
    .argument("<destination>", "a local path, or agent:ID:/path or pool:NAME:/path")
    .option("-r, --recursive", "copy a directory (as a tar stream)")
    .option("-f, --force", "replace the destination if it exists")
    .option("--resume", "carry on from where an interrupted copy of the same source stopped")
    .option("--timeout <duration>", "give up after this long, queueing included (e.g. 10m)")
    .option("--wait", "queue even when no agent of the target is connected (until --timeout)")
    .option("--output <format>", "text (quiet) or json: the result (sha256, bytes, mode, path)", "text")
    .option("--no-progress", "no progress line on stderr")
    .addHelpText(
      "after",
      `
The path on the agent must lie under one of its [files] roots. A destination ending in / (or an
existing local directory) receives the source under its own name.

Examples:
  switchboard cp backup.tar.gz agent:db-1:/srv/data/backups/
  switchboard cp -r ./site pool:web:/srv/www/site --force
  switchboard cp agent:db-1:/srv/data/dump.sql ./dump.sql
  switchboard cp -r agent:db-1:/srv/data/logs ./logs
  switchboard cp --resume big.iso agent:edge-7:/srv/data/big.iso   # after an interrupted copy

Both ends compute the SHA-256 and compare it; the destination appears only once it is complete
(a temporary name beside it until then). An interrupted copy keeps what arrived: run the same
command with --resume to carry on. Directories too: the receiving end keeps the tar stream until the
tree is placed, and the sender packs the unchanged tree again, skipping what arrived.

Exit code: 0 copied; 1 failed (the reason is on stderr); 124 timed out; 130 interrupted (Ctrl-C);
2 on bad usage.`,
    );
  cmd.action(async (source: string, destination: string, flags: CpFlags, command: Command) => {
    const from = parseLocation(source);
    const to = parseLocation(destination);
    if (from.kind === to.kind) {
      throw usageError(
        from.kind === "local"
          ? "one side must be on an agent (agent:ID:/path)"
          : "one side must be a local path: copy between agents through this machine",
      );
    }
    if (from.kind === "remote" && from.target.pool !== undefined) {
      throw usageError("download from one agent: agent:ID:/path (a pool names several)");
    }
    if (flags.output !== "text" && flags.output !== "json") {
      throw usageError(`--output must be text or json, not ${JSON.stringify(flags.output)}`);
    }
    const timeoutMs = flags.timeout !== undefined ? durationFlag("--timeout", flags.timeout) : 0;
    const progress = new ProgressLine(process.stderr, { enabled: flags.progress !== false, rows: false });
    const interrupt = cancelOnInterrupt({
      onInterrupt: () => {
        process.stderr.write("\nswitchboard: stopping the copy (again to quit at once)\n");
      },
      again: () => process.exit(EXIT.interrupted),
    });
    const common = {
      recursive: flags.recursive ?? false,
      force: flags.force ?? false,
      resume: flags.resume ?? false,
      timeoutMs,
      wait: flags.wait ?? false,
      progress,
      signal: interrupt.signal,
    };
    try {
      const result = await withClient(command, (client) =>
        to.kind === "remote"
          ? upload(client, { ...common, local: (from as { path: string }).path, remote: to })
          : download(client, {
              ...common,
              remote: from as Extract<Location, { kind: "remote" }>,
              local: to.path,
            }),
      );
      if (flags.output === "json") process.stdout.write(`${JSON.stringify(result)}\n`);
    } finally {
      progress.done();
      interrupt.dispose();
    }
  });
}
