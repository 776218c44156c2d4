// A PostgreSQL server of a test's own: a fresh cluster (initdb) in a temporary directory, listening
// on a free loopback port, that the test may stop, crash and start again under a running hub
// without touching the machine's server that other tests use. It runs as the postgres user (initdb
// refuses root) from the machine's PostgreSQL binaries, with trust authentication on loopback.
import { execFileSync, spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./processes.js";

/** The newest PostgreSQL the machine has, as Debian installs it. */
function binDir(): string {
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => /^\d+$/.test(v))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0) {
    throw new Error(
      `no PostgreSQL server binaries under ${root}: run 'npm run setup' (it installs postgresql)`,
    );
  }
  return join(root, versions[0]!, "bin");
}

export class PostgresServer {
  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly bin: string,
  ) {}

  /** postgres://postgres@127.0.0.1:PORT/DB */
  url(db = "postgres"): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${db}`;
  }

  /** initdb and start; the caller stop()s and remove()s it. */
  static async create(): Promise<PostgresServer> {
    if (process.getuid?.() !== 0) {
      throw new Error("a test's own PostgreSQL server runs as the postgres user: the test must run as root");
    }
    const dir = mkdtempSync(join(tmpdir(), "sb-pg-"));
    const uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim());
    chownSync(dir, uid, gid);
    const server = new PostgresServer(dir, await freePort(), binDir());
    server.asPostgres("initdb", [
      "-D",
      server.data,
      "-U",
      "postgres",
      "--auth=trust",
      "--no-sync",
      "--encoding=UTF8",
    ]);
    server.start();
    return server;
  }

  private get data(): string {
    return join(this.dir, "data");
  }

  /** Starts the server and waits until it takes connections. */
  start(): void {
    this.asPostgres("pg_ctl", [
      "-D",
      this.data,
      "-l",
      join(this.dir, "server.log"),
      "-w",
      "-t",
      "60",
      "-o",
      `-p ${this.port} -c listen_addresses=127.0.0.1 -k ${this.dir} -c fsync=on`,
      "start",
    ]);
  }

  /**
   * Stops the server: "fast" as an orderly restart does (clients are disconnected), "immediate" as
   * a crash would (no shutdown checkpoint; the next start recovers from the WAL).
   */
  stop(mode: "fast" | "immediate" = "fast"): void {
    this.asPostgres("pg_ctl", ["-D", this.data, "-m", mode, "-w", "-t", "60", "stop"]);
  }

  /** Stops it if it runs and removes its files. */
  remove(): void {
    spawnSync(
      "runuser",
      ["-u", "postgres", "--", join(this.bin, "pg_ctl"), "-D", this.data, "-m", "immediate", "stop"],
      {
        stdio: "ignore",
      },
    );
    rmSync(this.dir, { recursive: true, force: true });
  }

  private asPostgres(program: string, args: string[]): void {
    const r = spawnSync("runuser", ["-u", "postgres", "--", join(this.bin, program), ...args], {
      encoding: "utf8",
      timeout: 90_000,
    });
    if (r.status !== 0) {
      throw new Error(
        `${program} ${args.join(" ")} failed (${r.status ?? r.signal}): ${r.stderr}${r.stdout}`,
      );
    }
  }
}
