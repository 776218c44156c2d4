// Every prepared statement of the SQLite store, one set per table, prepared once when it opens.
import type { Database } from "better-sqlite3";
import { AgentQueries } from "./agents.js";
import { AuditQueries } from "./audit.js";
import { NodeQueries } from "./nodes.js";
import { OutputQueries } from "./output.js";
import { TaskQueries } from "./tasks.js";
import { TokenQueries } from "./tokens.js";

export interface SqliteQueries {
  tasks: TaskQueries;
  output: OutputQueries;
  agents: AgentQueries;
  nodes: NodeQueries;
  tokens: TokenQueries;
  audit: AuditQueries;
}

export function prepareQueries(db: Database): SqliteQueries {
  return {
    tasks: new TaskQueries(db),
    output: new OutputQueries(db),
    agents: new AgentQueries(db),
    nodes: new NodeQueries(db),
    tokens: new TokenQueries(db),
    audit: new AuditQueries(db),
  };
}
