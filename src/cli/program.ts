// The `switchboard` command's program: servers (hub, agent, demo) and the client commands, all on
// the SDK. main.ts, the entry, loads it once the runtime is settled.
import { logVerbosity, setLogVerbosity } from "@grpc/grpc-js";
import { Command, CommanderError, Option } from "commander";
import { VERSION } from "../common/version.js";
import { debugRequested, EXIT, report } from "./cli-error.js";
import { registerAgent } from "./commands/agent.js";
import { registerAgents } from "./commands/agents.js";
import { registerAudit } from "./commands/audit.js";
import { registerCp } from "./commands/cp.js";
import { registerDemo } from "./commands/demo.js";
import { registerDocker } from "./commands/docker.js";
import { registerExec } from "./commands/exec.js";
import { registerHttp } from "./commands/http.js";
import { registerHub } from "./commands/hub.js";
import { registerNodes } from "./commands/nodes.js";
import { registerPing } from "./commands/ping.js";
import { registerQuery } from "./commands/query.js";
import { registerShell } from "./commands/shell.js";
import { registerStorageNode } from "./commands/storage-node.js";
import { registerTasks } from "./commands/tasks.js";
import { registerToken } from "./commands/token.js";
import { watchForClosedPipes } from "./pipe-closed.js";

/**
 * The program, with the flags of `hub` and `agent` only when the command line names one of them: their
 * settings tables carry the validation code, which a client command need not load.
 */
export async function buildProgram(argv: readonly string[] = process.argv): Promise<Command> {
  const named = (word: string): boolean => argv.slice(2).includes(word);
  const hubSettings = named("hub") ? (await import("../hub/settings.js")).HUB_SETTINGS : undefined;
  const agentSettings = named("agent") ? (await import("../agent/settings.js")).AGENT_SETTINGS : undefined;
  const program = new Command("switchboard")
    .description(
      "Run work on machines you cannot reach: agents dial out to a hub; clients send them tasks.\n" +
        "Start with `switchboard demo`, then `switchboard exec --pool demo -- uname -a`.",
    )
    .version(VERSION, "-V, --version")
    .option(
      "--hub <host:port>",
      "hub address (default: $SWITCHBOARD_HUB, else <data>/hub.json, else 127.0.0.1:7000)",
    )
    .addOption(new Option("--master <host:port>", "alias of --hub"))
    .option("--token <token>", "API token (default: $SWITCHBOARD_TOKEN, else <data>/admin.token)")
    .option("--tls", "connect with TLS, trusting the system's CAs (implied by the options below)")
    .option("--tls-ca <file>", "CA that signed the hub's certificate (or $SWITCHBOARD_TLS_CA)")
    .option("--tls-cert <file>", "client certificate, for a hub that requires one (or $SWITCHBOARD_TLS_CERT)")
    .option("--tls-key <file>", "the client certificate's key (or $SWITCHBOARD_TLS_KEY)")
    .option("--tls-server-name <name>", "name to check the hub's certificate against")
    .enablePositionalOptions()
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride()
    .addHelpText(
      "after",
      "\n<data> is $SWITCHBOARD_DATA, else ./data: where a hub on this machine keeps hub.json and admin.token.",
    );
  registerHub(program, hubSettings);
  registerAgent(program, agentSettings);
  registerDemo(program);
  registerAgents(program);
  registerExec(program);
  registerShell(program);
  registerQuery(program);
  registerDocker(program);
  registerHttp(program);
  registerCp(program);
  registerStorageNode(program);
  registerPing(program);
  registerTasks(program);
  registerNodes(program);
  registerToken(program);
  registerAudit(program);
  return program;
}

/** Runs the command line `argv` (as process.argv: node, script, arguments) and sets the exit code. */
export async function runProgram(argv: string[]): Promise<void> {
  // `switchboard tasks | head` closes the pipe early: that is the reader's choice, not an error.
  watchForClosedPipes();
  // grpc-js prints its own errors ("E No address added out of total 1 resolved") beside ours, which
  // already say what failed and which setting to change: keep its lines for debugging.
  if (!debugRequested(argv) && process.env.GRPC_VERBOSITY === undefined) setLogVerbosity(logVerbosity.NONE);
  const program = await buildProgram(argv);
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      const ok =
        e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.code === "commander.help";
      process.exitCode = ok ? EXIT.ok : EXIT.usage;
      return;
    }
    process.exitCode = report(e);
  }
  // Everything a command opened is closed by now; if a stray handle lingers, do not hang on it.
  setTimeout(() => process.exit(), 5_000).unref();
}
