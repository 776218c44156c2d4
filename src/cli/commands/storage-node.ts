// `switchboard storage-node`: runs one storage node in the foreground (what the agent's supervisor spawns).
import type { Command } from "commander";
import { createLogger } from "../../common/logger.js";
import { CliError, usageError } from "../cli-error.js";
import { stopOnSignals } from "../signals.js";

interface StorageNodeFlags {
  port?: string;
  host?: string;
  data?: string;
  nodeId?: string;
  testFaults?: boolean;
  maxValueMb?: string;
}

export function registerStorageNode(program: Command): void {
  program
    .command("storage-node")
    .description("run a storage node: a key-value HTTP server that keeps its values in --data")
    .requiredOption("--port <port>", "HTTP port (0: any free port; the bound one is printed)")
    .requiredOption("--data <dir>", "where the values live (created when absent)")
    .option("--host <addr>", "address to listen on", "127.0.0.1")
    .option("--node-id <id>", "the node's id, shown by /healthz (default: node-<pid>)")
    .option("--max-value-mb <n>", "largest value accepted", "16")
    .option(
      "--test-faults",
      "answer POST /_test/crash (exit 70) and /_test/grow?mb=N (hold N MiB): tests only",
    )
    .addHelpText(
      "after",
      `
HTTP API:
  GET /healthz            {"status":"ok","nodeId",...}
  GET /metrics            Prometheus text
  GET /kv                 {"keys":[...]}
  PUT /kv/KEY             store the body (written to a temporary file, synced, renamed)
  GET /kv/KEY             the value, or 404
  DELETE /kv/KEY          204, or 404

Prints "storage-node ID listening on HOST:PORT" once it serves. SIGTERM: finish requests in flight, exit 0.`,
    )
    .action(async (flags: StorageNodeFlags) => {
      const port = Number(flags.port);
      if (!Number.isInteger(port) || port < 0 || port > 65_535) {
        throw usageError(`--port: expected 0 to 65535, got "${flags.port}"`);
      }
      const maxMb = Number(flags.maxValueMb ?? "16");
      if (!Number.isFinite(maxMb) || maxMb <= 0) {
        throw usageError(`--max-value-mb: expected a positive number, got "${flags.maxValueMb}"`);
      }
      const { startStorageNode } = await import("../../storage-node/storage-node.js");
      const nodeId = flags.nodeId ?? `node-${process.pid}`;
      const logger = createLogger("storage-node");
      let node;
      try {
        node = await startStorageNode({
          port,
          host: flags.host ?? "127.0.0.1",
          dataDir: flags.data!,
          nodeId,
          testFaults: flags.testFaults === true,
          maxValueBytes: Math.round(maxMb * 1024 * 1024),
        });
      } catch (e) {
        throw new CliError(`storage-node: ${e instanceof Error ? e.message : String(e)}`);
      }
      process.stdout.write(`storage-node ${nodeId} listening on ${node.address.host}:${node.address.port}\n`);
      const n = node;
      await stopOnSignals(logger, (o) => n.close(o.graceMs));
    });
}
