// Three projects, run together by `npm test` and alone by `npm run test:<name>`:
// unit (no servers, no child processes: seconds), integration (real databases, processes, sockets)
// and e2e (the built CLI, hub and agents as real processes).
import { configDefaults, defineConfig } from "vitest/config";

/**
 * Specs that need PostgreSQL, MariaDB, child processes (a shell, a pseudo-terminal, a worker, a
 * process that dies mid-write) or a real server on a socket (gRPC, HTTP). A spec that moves keeps its
 * project only if it moves here too: test/vitest-projects.test.ts fails on a path that names nothing.
 */
const INTEGRATION_SPECS = [
  "src/agent/executors/shell/shell.spec.ts",
  "src/agent/executors/shell/interactive.spec.ts",
  "src/agent/executors/shell/process-scan.spec.ts",
  "src/agent/executors/http/http.spec.ts",
  "src/agent/executors/sql/postgres/postgres.spec.ts",
  "src/agent/executors/sql/mysql/mysql.spec.ts",
  "src/agent/executors/sql/sqlite/sqlite.spec.ts",
  "src/agent/link/link.spec.ts",
  "src/hub/store/sqlite/store.durability.spec.ts",
  "src/hub/store/postgres/postgres-store.spec.ts",
  "src/cli/copy-into.spec.ts",
  "src/client/client.spec.ts",
  "src/storage-node/storage-node.spec.ts",
];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // End-to-end suites start real hub and agent processes; two cores, so run files two at a time.
    // maxWorkers bounds the projects together (one pool serves them all).
    pool: "forks",
    maxWorkers: 2,
    minWorkers: 1,
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    reporters: ["default"],
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          include: ["src/**/*.spec.ts"],
          exclude: [...configDefaults.exclude, ...INTEGRATION_SPECS],
        },
      },
      { extends: true, test: { name: "integration", include: INTEGRATION_SPECS } },
      { extends: true, test: { name: "e2e", include: ["test/**/*.test.ts"] } },
    ],
  },
});
