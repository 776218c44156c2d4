// SHOW GRANTS lines as MariaDB 10.x/11.x and MySQL 8 print them, read for what goes beyond reading.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { summarizeGrants } from "./mysql-grants.js";

describe("summarizeGrants", () => {
  it("finds nothing beyond reading in a least-privilege account", () => {
    const s = summarizeGrants([
      "GRANT USAGE ON *.* TO `ro`@`%`",
      "GRANT SELECT, SHOW VIEW ON `shop`.* TO `ro`@`%`",
      "GRANT SELECT (`id`, `name`) ON `crm`.`people` TO `ro`@`%`",
      "GRANT SELECT ON `shop`.* TO PUBLIC",
    ]);
    expect(s).toEqual({ beyondReading: [], roles: [] });
  });

  it("names root's ALL PRIVILEGES and its grant option, and PROXY", () => {
    const s = summarizeGrants([
      "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION",
      "GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION",
    ]);
    expect(s.beyondReading).toEqual([
      "ALL PRIVILEGES ON *.*",
      "GRANT OPTION ON *.*",
      "PROXY ON ''@'%'",
      "GRANT OPTION ON ''@'%'",
    ]);
  });

  it("names server-reaching privileges before write privileges, whatever the order printed", () => {
    const s = summarizeGrants([
      "GRANT INSERT, UPDATE ON `shop`.* TO `u`@`%`",
      "GRANT RELOAD, PROCESS, FILE ON *.* TO `u`@`%`",
      "GRANT DELETE (`a`) ON `shop`.`t` TO `u`@`%`",
      "GRANT ALL ON `other`.* TO `u`@`%`",
    ]);
    expect(s.beyondReading).toEqual([
      "ALL PRIVILEGES ON `other`.*",
      "FILE ON *.*",
      "PROCESS ON *.*",
      "RELOAD ON *.*",
      "INSERT ON `shop`.*",
      "UPDATE ON `shop`.*",
      "DELETE ON `shop`.`t`",
    ]);
  });

  it("reads MySQL 8's dynamic privileges, listed without spaces", () => {
    const s = summarizeGrants([
      "GRANT SELECT ON *.* TO `u`@`%`",
      "GRANT BACKUP_ADMIN,SYSTEM_VARIABLES_ADMIN ON *.* TO `u`@`%`",
    ]);
    expect(s.beyondReading).toEqual(["SYSTEM_VARIABLES_ADMIN ON *.*", "BACKUP_ADMIN ON *.*"]);
  });

  it("collects roles, and names a role's admin option", () => {
    const s = summarizeGrants([
      "GRANT `reader` TO `u`@`%`",
      "GRANT `r1`@`%`,`r2`@`%` TO `u`@`%`",
      "GRANT `boss` TO `u`@`%` WITH ADMIN OPTION",
      "SET DEFAULT ROLE `reader` FOR `u`@`%`",
    ]);
    expect(s.roles).toEqual(["`reader`", "`r1`@`%`", "`r2`@`%`", "`boss`"]);
    expect(s.beyondReading).toEqual(["ADMIN OPTION ON role `boss`"]);
  });

  it("is not fooled by names that look like keywords", () => {
    const s = summarizeGrants([
      "GRANT SELECT ON `to`.`on` TO `u`@`%`",
      "GRANT SELECT ON `x`.`y` TO `WITH GRANT OPTION`@`%`",
      "GRANT USAGE ON *.* TO `u`@`%` WITH MAX_QUERIES_PER_HOUR 10",
      "GRANT INSERT ON `it``s`.* TO `u`@`%`",
    ]);
    expect(s.beyondReading).toEqual(["INSERT ON `it``s`.*"]);
  });

  it("never treats a privilege outside the read-only set as reading", () => {
    const readOnly = new Set(["USAGE", "SELECT", "SHOW VIEW", "SHOW DATABASES", "SHOW CREATE ROUTINE"]);
    const names = fc.constantFrom(
      "SELECT",
      "INSERT",
      "UPDATE",
      "DELETE",
      "CREATE",
      "DROP",
      "ALTER",
      "INDEX",
      "EXECUTE",
      "FILE",
      "SUPER",
      "PROCESS",
      "SHOW VIEW",
      "CREATE TEMPORARY TABLES",
      "LOCK TABLES",
      "EVENT",
      "TRIGGER",
      "USAGE",
      "BINLOG MONITOR",
      "SET USER",
    );
    fc.assert(
      fc.property(fc.uniqueArray(names, { minLength: 1, maxLength: 6 }), (privileges) => {
        const s = summarizeGrants([`GRANT ${privileges.join(", ")} ON \`db\`.* TO \`u\`@\`%\``]);
        const expected = privileges.filter((p) => !readOnly.has(p)).map((p) => `${p} ON \`db\`.*`);
        expect([...s.beyondReading].sort()).toEqual([...expected].sort());
      }),
    );
  });
});
