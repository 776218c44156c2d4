// What a MySQL/MariaDB user may do beyond reading, from SHOW GRANTS and the grants of every role it could
// SET ROLE to (mysql-grants.ts reads the lines). A read-only datasource refuses such a user: the server fixes
// a session's global privileges when it logs in, so each new connection is checked once.
import type { PoolConnection } from "mysql2";
import type { PrivilegedUser } from "../datasource.js";
import { firstColumn, type Flavor } from "./mysql-connection.js";
import { summarizeGrants } from "./mysql-grants.js";

/** Privileges named in a refusal; the rest are counted. */
const PRIVILEGES_SHOWN = 3;

/**
 * What the connection's user may do beyond reading, or undefined when nothing: from SHOW GRANTS (which includes
 * PUBLIC's grants on MariaDB) and the grants of every role it could SET ROLE to: on MariaDB those show once the
 * role is set (nested roles included), on MySQL through SHOW GRANTS ... USING.
 */
export async function privilegeOf(conn: PoolConnection, flavor: Flavor): Promise<PrivilegedUser | undefined> {
  const [user] = await firstColumn(conn, "SELECT CURRENT_USER()");
  const grants = async (sql: string): Promise<string[]> =>
    (await firstColumn(conn, sql)).filter((l): l is string => l !== null);
  let lines: string[];
  if (flavor === "mysql") {
    lines = await grants("SHOW GRANTS");
    const { roles } = summarizeGrants(lines);
    if (roles.length > 0) {
      lines = lines.concat(await grants(`SHOW GRANTS FOR CURRENT_USER() USING ${roles.join(", ")}`));
    }
  } else {
    // MariaDB's SHOW GRANTS adds the grants of the role set in the session: none while the account's own
    // are read (its role grants then name only roles granted to it, which SET ROLE accepts).
    const [active] = await firstColumn(conn, "SELECT CURRENT_ROLE()");
    try {
      if (active) await firstColumn(conn, "SET ROLE NONE");
      lines = await grants("SHOW GRANTS");
      for (const role of summarizeGrants(lines).roles) {
        await firstColumn(conn, `SET ROLE ${role}`);
        lines = lines.concat(await grants("SHOW GRANTS"));
      }
    } finally {
      await firstColumn(conn, active ? `SET ROLE \`${active.replace(/`/g, "``")}\`` : "SET ROLE NONE");
    }
  }
  const beyond = summarizeGrants(lines).beyondReading;
  if (beyond.length === 0) return undefined;
  const more = beyond.length - PRIVILEGES_SHOWN;
  const shown = beyond.slice(0, PRIVILEGES_SHOWN).join(", ") + (more > 0 ? ` and ${more} more` : "");
  return { user: user ?? "(unknown)", privilege: `holds ${shown}` };
}
