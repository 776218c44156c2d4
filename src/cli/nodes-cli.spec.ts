// The node commands' flag handling, which fails before any hub is called: bad counts, ports, env
// pairs and byte sizes, and `logs` with neither or both of a task id and --node.
import { Command, CommanderError } from "commander";
import { describe, expect, it } from "vitest";
import { CliError, EXIT } from "./cli-error.js";
import { bytesFlag, registerNodes, spawnInputs } from "./commands/nodes.js";
import { registerTasks } from "./commands/tasks.js";

/**
 * The node and task commands as main.ts registers them. (main.ts itself runs the CLI when imported,
 * so it is not imported here.) Output is dropped; failures throw instead of exiting.
 */
function program(): Command {
  const p = new Command("switchboard")
    .exitOverride()
    .enablePositionalOptions()
    .configureOutput({ writeOut: () => undefined, writeErr: () => undefined });
  registerNodes(p);
  registerTasks(p);
  return p;
}

/** Parses `args` and returns what it failed with; an unreachable hub, should one be dialled, fails fast. */
async function failure(args: string[]): Promise<unknown> {
  try {
    await program().parseAsync([args[0]!, "--hub", "127.0.0.1:1", ...args.slice(1)], { from: "user" });
  } catch (e) {
    return e;
  }
  throw new Error(`switchboard ${args.join(" ")} did not fail`);
}

async function usageError(args: string[]): Promise<string> {
  const e = await failure(args);
  expect(e).toBeInstanceOf(CliError);
  expect((e as CliError).exitCode).toBe(EXIT.usage);
  return (e as CliError).message;
}

describe("switchboard spawn", () => {
  it("rejects a count below one, a bad KEY=VALUE, and ports past 65535", async () => {
    expect(await usageError(["spawn", "--count", "0"])).toMatch(/--count/);
    expect(await usageError(["spawn", "--env", "NOEQUALS"])).toMatch(/--env: expected KEY=VALUE/);
    expect(await usageError(["spawn", "--env", "=x"])).toMatch(/--env/);
    expect(await usageError(["spawn", "--port", "70000"])).toMatch(/--port/);
    expect(await usageError(["spawn", "--port", "65535", "--count", "2"])).toMatch(/past port 65535/);
    expect(await usageError(["spawn", "--atomic"])).toMatch(/--atomic/);
    expect(await usageError(["spawn", "--labels", "zone"])).toMatch(/--labels/);
    expect(await usageError(["spawn", "--output", "yaml"])).toMatch(/--output/);
  });

  it("numbers ports, storage paths and node ids when it spawns several", () => {
    const inputs = spawnInputs({
      count: "3",
      port: "7000",
      storagePath: "/data/kv",
      nodeId: "kv",
      env: ["A=1", "B=x=y"],
      arg: ["--verbose"],
    });
    expect(inputs.map((i) => [i.port, i.storagePath, i.nodeId])).toEqual([
      [7000, "/data/kv-1", "kv-1"],
      [7001, "/data/kv-2", "kv-2"],
      [7002, "/data/kv-3", "kv-3"],
    ]);
    expect(inputs[0]!.env).toEqual({ A: "1", B: "x=y" });
    expect(inputs[0]!.args).toEqual(["--verbose"]);
  });

  it("leaves one node's flags as given, and port 0 to the agent", () => {
    expect(spawnInputs({ storagePath: "/data/kv", nodeId: "kv" })).toMatchObject([
      { port: 0, storagePath: "/data/kv", nodeId: "kv" },
    ]);
    expect(spawnInputs({ count: "2" }).map((i) => [i.port, i.storagePath])).toEqual([
      [0, ""],
      [0, ""],
    ]);
  });
});

describe("switchboard stop and migrate", () => {
  it("need --node (and migrate --to), and a duration for --grace", async () => {
    const stop = await failure(["stop"]);
    expect(stop).toBeInstanceOf(CommanderError);
    expect((stop as CommanderError).code).toBe("commander.missingMandatoryOptionValue");
    const migrate = await failure(["migrate", "--node", "n-1"]);
    expect((migrate as CommanderError).message).toMatch(/--to/);
    expect(await usageError(["stop", "--node", "n-1", "--grace", "soon"])).toMatch(/--grace/);
  });
});

describe("switchboard logs", () => {
  it("wants exactly one of a task id and --node", async () => {
    expect(await usageError(["logs"])).toMatch(/say whose output/);
    expect(await usageError(["logs", "task-1", "--node", "n-1"])).toMatch(/not both/);
  });

  it("takes --stderr and --tail only with --node, and --tail as a byte size", async () => {
    expect(await usageError(["logs", "task-1", "--tail", "100"])).toMatch(/only with --node/);
    expect(await usageError(["logs", "--node", "n-1", "--tail", "lots"])).toMatch(/--tail/);
    expect(bytesFlag("--tail", "4096")).toBe(4096);
    expect(bytesFlag("--tail", "64k")).toBe(64 * 1024);
    expect(bytesFlag("--tail", "1MiB")).toBe(1024 * 1024);
    expect(bytesFlag("--tail", "0")).toBe(0);
  });
});
