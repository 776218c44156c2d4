// What makes a PostgreSQL login role more than a reader, which a READ ONLY transaction cannot hold: being a
// superuser, or a member (directly or through other roles) of the predefined roles that reach server files,
// programs or other sessions. A read-only datasource refuses such a role (see docs/security.md#databases).
import type pg from "pg";
import type { PrivilegedUser } from "../datasource.js";
import { auxQuery } from "./postgres-connection.js";

/**
 * Predefined roles whose members get around a READ ONLY transaction: COPY ... TO/FROM PROGRAM, COPY to and
 * from server files (and the file functions), pg_terminate_backend/pg_cancel_backend of other users' sessions.
 */
const PRIVILEGED_ROLES = [
  "pg_execute_server_program",
  "pg_write_server_files",
  "pg_read_server_files",
  "pg_signal_backend",
];

/**
 * The superuser roles and the roles above that the login role is a member of, directly or through other
 * roles (it could SET ROLE to any of them): the login role itself first when it is a superuser.
 */
const PRIVILEGES_SQL = `SELECT session_user AS login, r.rolname AS role, r.rolsuper AS super
    FROM pg_roles r
   WHERE (r.rolsuper OR r.rolname = ANY($1::text[])) AND pg_has_role(session_user, r.oid, 'MEMBER')
   ORDER BY r.rolname = session_user DESC, r.rolsuper DESC, r.rolname`;

/** What makes the connection's login role more than a reader, or undefined when nothing does. */
export async function privilegeOf(c: pg.ClientBase): Promise<PrivilegedUser | undefined> {
  const r = await auxQuery<{ login: string; role: string; super: boolean }>(c, PRIVILEGES_SQL, [
    PRIVILEGED_ROLES,
  ]);
  const first = r.rows[0];
  if (!first) return undefined;
  if (first.super) {
    const privilege =
      first.role === first.login ? "is a superuser" : `is a member of superuser role ${first.role}`;
    return { user: first.login, privilege };
  }
  return { user: first.login, privilege: `is a member of ${r.rows.map((x) => x.role).join(", ")}` };
}
