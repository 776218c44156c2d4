// `token create | list | revoke`: API and agent tokens. The secret is printed once; the hub keeps a hash.
import type { Command } from "commander";
import { usageError } from "../cli-error.js";
import { addConnectionOptions, withClient } from "../client-command.js";
import { collect } from "../flags.js";
import { outputFormat, printList, printObject, TOKEN_COLUMNS, tokenRow } from "../output.js";

const ROLES = ["admin", "operator", "viewer", "agent"] as const;
type Role = (typeof ROLES)[number];

export function registerToken(program: Command): void {
  const token = program
    .command("token")
    .description("create, list and revoke tokens (admin role needed)")
    .addHelpText(
      "after",
      `
Roles: admin (everything), operator (run and cancel tasks, read), viewer (read only),
agent (register as an agent; --pool pins the pools it may join).`,
    );

  addConnectionOptions(token.command("create").description("create a token and print it once"))
    .requiredOption("--role <role>", `one of ${ROLES.join(", ")}`)
    .option("--name <name>", "a name to find it by (default: <role>-<random>)")
    .option("--pool <name>", "limit the token to this pool (repeatable)", collect)
    .option("--agent-id <id>", "agent tokens: only this agent id may use it")
    .option(
      "--allow-takeover",
      "agent tokens: a new process may take over a live session of the same agent id (a replacement host)",
    )
    .option("-o, --output <format>", "table or json", "table")
    .action(
      async (
        f: {
          role: string;
          name?: string;
          pool?: string[];
          agentId?: string;
          allowTakeover?: boolean;
          output?: string;
        },
        cmd: Command,
      ) => {
        const format = outputFormat(f.output);
        if (!ROLES.includes(f.role as Role))
          throw usageError(`--role must be one of ${ROLES.join(", ")}, not "${f.role}"`);
        const name = f.name ?? `${f.role}-${Math.random().toString(36).slice(2, 8)}`;
        const r = await withClient(cmd, (c) =>
          c.admin.createToken({
            name,
            role: f.role as Role,
            pools: f.pool ?? [],
            ...(f.agentId ? { agentId: f.agentId } : {}),
            allowTakeover: f.allowTakeover === true,
          }),
        );
        if (format === "json")
          return printObject({ token: r.token, ...(r.info ? tokenRow(r.info) : {}) }, format);
        const scope = f.pool?.length ? `pools ${f.pool.join(", ")}` : "all pools";
        process.stderr.write(
          `created ${f.role} token ${r.info?.id ?? ""} "${name}" for ${scope}; it is shown only now:\n`,
        );
        process.stdout.write(`${r.token}\n`);
      },
    );

  addConnectionOptions(token.command("list").description("list tokens (never their secrets)"))
    .option("-a, --all", "include revoked tokens")
    .option("-o, --output <format>", "table or json", "table")
    .action(async (f: { all?: boolean; output?: string }, cmd: Command) => {
      const format = outputFormat(f.output);
      const tokens = await withClient(cmd, (c) => c.admin.listTokens({ includeRevoked: f.all ?? false }));
      printList(tokens.map(tokenRow), TOKEN_COLUMNS, format, "no tokens");
    });

  addConnectionOptions(
    token.command("revoke").description("revoke a token by id or name; it is refused from now on"),
  )
    .argument("<id-or-name>")
    .action(async (idOrName: string, _f: unknown, cmd: Command) => {
      const info = await withClient(cmd, (c) => c.admin.revokeToken(idOrName));
      process.stdout.write(`revoked ${info.id} "${info.name}" (${info.role})\n`);
    });
}
