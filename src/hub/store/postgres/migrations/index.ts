// The PostgreSQL schema migrations, in order. Append new ones; never edit one that has shipped.
import type { Migration } from "../../migration.js";
import { INITIAL } from "./001-initial.js";
import { WRITE_BATCH } from "./002-write-batch.js";
import { HOT_TASK_UPDATES } from "./003-hot-task-updates.js";
import { TASK_PAGE_ROOM } from "./004-task-page-room.js";
import { HUBS } from "./005-hubs.js";

export type { Migration };

export const MIGRATIONS: readonly Migration[] = [
  { version: 1, name: "initial", sql: INITIAL },
  { version: 2, name: "write_batch", sql: WRITE_BATCH },
  { version: 3, name: "hot_task_updates", sql: HOT_TASK_UPDATES },
  { version: 4, name: "task_page_room", sql: TASK_PAGE_ROOM },
  { version: 5, name: "hubs", sql: HUBS },
];
