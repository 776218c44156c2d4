// The schema migrations, in order. Append new ones; never edit one that has shipped.
import type { Migration } from "../../migration.js";
import { INITIAL } from "./001-initial.js";
import { LEAN_TASK_INDEXES } from "./002-lean-task-indexes.js";
import { TOKEN_TAKEOVER } from "./003-token-takeover.js";
import { NODES } from "./004-nodes.js";
import { AGENT_OWNER } from "./005-agent-owner.js";

export type { Migration };

export const MIGRATIONS: readonly Migration[] = [
  { version: 1, name: "initial", sql: INITIAL },
  { version: 2, name: "lean task indexes", sql: LEAN_TASK_INDEXES },
  { version: 3, name: "token takeover", sql: TOKEN_TAKEOVER },
  { version: 4, name: "nodes", sql: NODES },
  { version: 5, name: "agent owner", sql: AGENT_OWNER },
];
