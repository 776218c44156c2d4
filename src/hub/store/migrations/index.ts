// The schema migrations, in order. Append new ones; never edit one that has shipped.
import { INITIAL } from "./001-initial.js";
import { LEAN_TASK_INDEXES } from "./002-lean-task-indexes.js";

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  { version: 1, name: "initial", sql: INITIAL },
  { version: 2, name: "lean task indexes", sql: LEAN_TASK_INDEXES },
];
