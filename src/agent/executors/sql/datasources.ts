// The agent's SQL datasources: opened once from its config, checked at start and then periodically (a
// connect check each, which also asks what the datasource's database user may do), reported in every
// heartbeat; one that cannot connect, or that is read_only with a user who can do more than read, makes the
// agent Degraded with the datasource and the reason named. One that may write and connects as a privileged
// user is logged once as a warning. Tasks find a datasource by name, or by driver name for clients that name
// the engine instead (seed 000's `database = "postgres"`).
import type { Logger } from "../../../common/logger.js";
import type { DatasourceHealth } from "../../../gen/switchboard/v1/task.js";
import type { Datasource, DatasourceConfig, SqlDriver } from "./datasource.js";

export type DatasourceOpener = (config: DatasourceConfig, logger?: Logger) => Datasource;

// Loaded on demand: an agent with only a SQLite datasource never loads pg or mysql2 (RSS and start time).
const LOADERS: Record<SqlDriver, () => Promise<DatasourceOpener>> = {
  postgres: async () => (await import("./postgres/postgres.js")).openPostgres,
  mysql: async () => (await import("./mysql/mysql.js")).openMysql,
  sqlite: async () => (await import("./sqlite/sqlite.js")).openSqlite,
};

/** The openers of the drivers these datasources use. */
export async function loadOpeners(
  configs: readonly DatasourceConfig[],
): Promise<Partial<Record<SqlDriver, DatasourceOpener>>> {
  const drivers = [...new Set(configs.map((c) => c.driver))];
  const loaded = await Promise.all(drivers.map(async (d) => [d, await LOADERS[d]()] as const));
  return Object.fromEntries(loaded);
}

/** Names a client may use for a driver instead of a datasource name. */
const DRIVER_ALIASES: Record<string, SqlDriver> = {
  postgres: "postgres",
  postgresql: "postgres",
  pg: "postgres",
  mysql: "mysql",
  mariadb: "mysql",
  sqlite: "sqlite",
  sqlite3: "sqlite",
};

export const DEFAULT_CHECK_INTERVAL_MS = 30_000;
/** A datasource that is down is checked this often, so the agent recovers soon after the database does. */
const DOWN_CHECK_INTERVAL_MS = 3_000;
/** A check that takes longer than this counts as failed. */
const CHECK_TIMEOUT_MS = 15_000;

interface Entry {
  config: DatasourceConfig;
  ds: Datasource;
  health: DatasourceHealth;
  checking: boolean;
  /** The warning about a privileged user on a datasource that may write went out. */
  warnedPrivileged: boolean;
}

export class Datasources {
  private readonly entries = new Map<string, Entry>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    configs: readonly DatasourceConfig[],
    private readonly logger: Logger,
    /** From loadOpeners(configs). */
    openers: Partial<Record<SqlDriver, DatasourceOpener>>,
  ) {
    for (const config of configs) {
      const open = openers[config.driver];
      if (open === undefined)
        throw new Error(`no ${config.driver} driver was loaded for datasource "${config.name}"`);
      this.entries.set(config.name, {
        config,
        ds: open(config, logger.child({ datasource: config.name })),
        // Unchecked counts as healthy until the first check says otherwise; start() runs that check.
        health: {
          name: config.name,
          driver: config.driver,
          readOnly: config.readOnly,
          healthy: true,
          error: "",
          checkedAtMs: 0,
        },
        checking: false,
        warnedPrivileged: false,
      });
    }
  }

  get size(): number {
    return this.entries.size;
  }

  /** Checks every datasource now, then every intervalMs. */
  async start(intervalMs = DEFAULT_CHECK_INTERVAL_MS): Promise<void> {
    await this.checkAll();
    if (this.entries.size === 0) return;
    this.timer = setInterval(
      () => {
        const now = Date.now();
        for (const e of this.entries.values()) {
          const every = e.health.healthy ? intervalMs : DOWN_CHECK_INTERVAL_MS;
          if (now - e.health.checkedAtMs >= every) void this.check(e);
        }
      },
      Math.min(intervalMs, DOWN_CHECK_INTERVAL_MS),
    );
    this.timer.unref();
  }

  /** A query failed for want of a connection: check now rather than at the next interval. */
  suspect(name: string): void {
    const e = this.entries.get(name);
    if (e) void this.check(e);
  }

  /** By name; else, when the name is a driver's, the first datasource of that driver (config order). */
  resolve(name: string): Datasource | undefined {
    const exact = this.entries.get(name);
    if (exact) return exact.ds;
    const driver = DRIVER_ALIASES[name.toLowerCase()];
    if (!driver) return undefined;
    for (const e of this.entries.values()) if (e.config.driver === driver) return e.ds;
    return undefined;
  }

  config(name: string): DatasourceConfig | undefined {
    return this.entries.get(name)?.config;
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  health(): DatasourceHealth[] {
    return [...this.entries.values()].map((e) => ({ ...e.health }));
  }

  /** The reason the agent is Degraded because of its datasources, or undefined. */
  trouble(): string | undefined {
    const bad = [...this.entries.values()].filter((e) => !e.health.healthy);
    if (bad.length === 0) return undefined;
    return bad
      .map((e) => {
        // Drivers' messages start with the datasource's name already.
        const prefix = `datasource "${e.config.name}": `;
        const why = e.health.error.startsWith(prefix) ? e.health.error.slice(prefix.length) : e.health.error;
        return `datasource "${e.config.name}" is down: ${why}`;
      })
      .join("; ");
  }

  async checkAll(): Promise<void> {
    await Promise.all([...this.entries.values()].map((e) => this.check(e)));
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await Promise.all(
      [...this.entries.values()].map((e) =>
        e.ds
          .close()
          .catch((err: unknown) => this.logger.warn({ err, datasource: e.config.name }, "close failed")),
      ),
    );
  }

  private async check(e: Entry): Promise<void> {
    if (e.checking) return;
    e.checking = true;
    let timer: NodeJS.Timeout | undefined;
    try {
      const found = await Promise.race([
        e.ds.check(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS / 1000} s`)),
            CHECK_TIMEOUT_MS,
          );
        }),
      ]);
      if (found.privileged && !e.warnedPrivileged) {
        e.warnedPrivileged = true;
        this.logger.warn(
          { datasource: e.config.name, user: found.privileged.user, privilege: found.privileged.privilege },
          "datasource connects as a privileged user; it is not read_only, so its tasks act with all of that " +
            "user's rights (server files, programs, settings): use a least-privilege role where you can",
        );
      }
      if (!e.health.healthy) this.logger.info({ datasource: e.config.name }, "datasource is back");
      e.health = { ...e.health, healthy: true, error: "", checkedAtMs: Date.now() };
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      if (e.health.healthy || e.health.error !== error) {
        this.logger.warn({ datasource: e.config.name, error }, "datasource check failed");
      }
      e.health = { ...e.health, healthy: false, error, checkedAtMs: Date.now() };
    } finally {
      clearTimeout(timer);
      e.checking = false;
    }
  }
}
