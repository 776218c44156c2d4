// Throwaway PostgreSQL databases and least-privilege roles for the end-to-end tests; they live with the SQL
// engines' specs, which use them too (src never imports test/).
export {
  createPostgresDatabase,
  createReadOnlyRole,
  type PostgresTestDatabase,
  type PostgresTestRole,
} from "../../src/agent/executors/sql/testing/postgres-server.js";
