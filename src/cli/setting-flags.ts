// A program's flags, taken from its settings table: each setting that has a flag becomes an option
// whose help says its default and its environment variable, so `--help` cannot drift from the loader.
import { Option, type Command } from "commander";
import { isTableSpec, type SettingInput, type Settings, type SettingsTable } from "../common/settings.js";
import { collect } from "./flags.js";

/** A default as help shows it: "30s" for seconds, words bare; nothing for empty or computed ones. */
function defaultText(value: unknown, input: SettingInput): string | undefined {
  if (value === undefined || value === false || value === "" || typeof value === "function") return undefined;
  if (Array.isArray(value)) return value.length === 0 ? undefined : value.join(",");
  if (typeof value === "object" && value !== null && Object.keys(value).length === 0) return undefined;
  if (input === "secs" && typeof value === "number") return `${value}s`;
  return typeof value === "string" ? value : JSON.stringify(value);
}

export function addSettingFlags<S extends Settings>(cmd: Command, table: SettingsTable<S>): Command {
  for (const [key, spec] of Object.entries(table.settings)) {
    if (isTableSpec(spec) || spec.flag === undefined) continue;
    const notes: string[] = [];
    const dflt = spec.defaultText ?? defaultText(spec.default, spec.input);
    if (dflt !== undefined) notes.push(`default ${dflt.replace(/`/g, "")}`);
    if (spec.env !== undefined) notes.push(`$${spec.env}`);
    notes.push(key);
    const option = new Option(
      spec.short ? `${spec.short}, ${spec.flag}` : spec.flag,
      `${spec.help} (${notes.join("; ")})`,
    );
    if (spec.repeatable) option.argParser(collect);
    cmd.addOption(option);
  }
  return cmd;
}

/**
 * The flags of a program that runs in the foreground (the hub, an agent), after its --config: its
 * --log-level, then its settings' flags, and help saying which source wins and which page lists every key.
 */
export function addProgramFlags(
  cmd: Command,
  settings: SettingsTable<Settings> | undefined,
  docPage: string,
  moreHelp = "",
): Command {
  cmd.option(
    "--log-level <level>",
    "trace, debug, info, warn, error (default: $SWITCHBOARD_LOG_LEVEL or info)",
  );
  if (settings) addSettingFlags(cmd, settings);
  return cmd.addHelpText(
    "after",
    `\nFlags win over the environment, which wins over the file (${docPage} lists every key).${moreHelp}`,
  );
}
