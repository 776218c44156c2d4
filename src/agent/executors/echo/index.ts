// Echo tasks (the payload comes back as the result), as the rest of the agent sees them.

/** Runs echo tasks; see echo.ts. */
export { EchoExecutor } from "./echo.js";
