// Http tasks (one request from the agent to a service under the [http] allow prefixes), as the rest of
// the agent sees them.

/** Runs http tasks; see http.ts. */
export { HttpExecutor, type HttpExecutorOptions } from "./http.js";
/** Parses one `[http] allow` prefix; a string is the sentence saying what is wrong with it. */
export { parseAllowPrefix } from "./http-policy.js";
