#!/usr/bin/env node
// The `switchboard` command's entry. Started by a Node older than 22, it hands over to the
// checkout's own Node when setup put one there, else says what to install. Then it turns on Node's
// module compile cache before the program loads, so that every start after the first skips
// compiling the CLI's modules.
import module from "node:module";
import { fileURLToPath } from "node:url";
import { checkoutNode, handOver, isSupportedNode, OLDEST_NODE_MAJOR } from "./runtime.js";

if (!isSupportedNode()) {
  const checkout = fileURLToPath(new URL("../../../", import.meta.url)); // from dist/src/cli/
  const node = checkoutNode(checkout);
  if (node !== undefined) {
    await handOver(node, [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)]);
  }
  process.stderr.write(
    `switchboard needs Node.js ${OLDEST_NODE_MAJOR} or newer, and this is Node ${process.version}: ` +
      "install Node 22 or 24 LTS (in a checkout of Switchboard, `npm run setup` provides one).\n",
  );
  process.exit(1);
}

// Node 22.8 and newer; NODE_DISABLE_COMPILE_CACHE=1 turns it off.
module.enableCompileCache?.();
const { runProgram } = await import("./program.js");
await runProgram(process.argv);
