// Where a node's data lives: always inside storage.data_path, checked on the resolved path and again on
// the real path, so that neither `..` nor a symlink on the way leads a node's storage elsewhere.
import { mkdir, realpath, stat } from "node:fs/promises";
import { dirname, isAbsolute, relative, resolve } from "node:path";
import { Code, SwitchboardError } from "../../common/errors.js";

/**
 * "create": made when absent; "existing": must exist; "check": may be absent (its nearest existing parent
 * is checked).
 */
export type StorageDirMode = "create" | "existing" | "check";

/** The storage dir `asked` resolves to under `dataPath`, refused when it (or a symlink on its way) leads outside. */
export async function storageDir(dataPath: string, asked: string, mode: StorageDirMode): Promise<string> {
  const root = resolve(dataPath);
  const outside = (): SwitchboardError =>
    new SwitchboardError(
      Code.INVALID_ARGUMENT,
      `storage path ${asked} is outside storage.data_path (${root})`,
    );
  const within = (base: string, p: string): boolean => {
    const rel = relative(base, p);
    return !rel.startsWith("..") && !isAbsolute(rel);
  };
  const storagePath = resolve(root, asked);
  if (!within(root, storagePath)) throw outside();
  await mkdir(root, { recursive: true });
  if (mode === "create") await mkdir(storagePath, { recursive: true });
  let existing = storagePath;
  if (mode === "check") {
    while (existing !== root && !(await exists(existing))) existing = dirname(existing);
  }
  const [realRoot, realPath] = await Promise.all([
    realpath(root),
    realpath(existing).catch(() => {
      throw new SwitchboardError(Code.NOT_FOUND, `${asked} does not exist under storage.data_path`);
    }),
  ]);
  if (!within(realRoot, realPath)) throw outside();
  // Checked: its parent may be made now, for whatever fills it before the spawn (a migration's data).
  if (mode === "check" && existing !== storagePath) await mkdir(dirname(storagePath), { recursive: true });
  return storagePath;
}

function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
