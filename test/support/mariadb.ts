// Throwaway MariaDB databases and read-only users for the end-to-end tests; they live with the SQL engines'
// specs, which use them too (src never imports test/).
export {
  createMariadbDatabase,
  createReadOnlyUser,
  type MariadbDatabase,
  type MariadbTestUser,
} from "../../src/agent/executors/sql/testing/mariadb-server.js";
