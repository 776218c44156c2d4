// `switchboard docker ps` and `images` on a terminal: the Engine API's JSON (as the agent relays it) in the
// columns `docker ps` and `docker images` print. `-o json` prints the engine's JSON itself instead.
import { ago, type Column } from "./output.js";

/** The fields of GET /containers/json used here; the engine sends many more. */
export interface EngineContainer {
  Id?: string;
  Names?: string[] | null;
  Image?: string;
  Command?: string;
  Created?: number;
  State?: string;
  Status?: string;
}

/** The fields of GET /images/json used here. */
export interface EngineImage {
  Id?: string;
  RepoTags?: string[] | null;
  Created?: number;
  Size?: number;
}

export interface ContainerRow {
  id: string;
  image: string;
  command: string;
  createdMs: number;
  status: string;
  names: string;
}

export interface ImageRow {
  repository: string;
  tag: string;
  id: string;
  createdMs: number;
  size: number;
}

const COMMAND_WIDTH = 20;

export function containerRows(list: EngineContainer[]): ContainerRow[] {
  return list.map((c) => {
    const cmd = c.Command ?? "";
    return {
      id: shortId(c.Id ?? ""),
      image: c.Image ?? "",
      command: JSON.stringify(
        cmd.length > COMMAND_WIDTH ? `${cmd.slice(0, COMMAND_WIDTH - 1).trimEnd()}…` : cmd,
      ),
      createdMs: (c.Created ?? 0) * 1000,
      status: c.Status || c.State || "",
      names: (c.Names ?? []).map((n) => n.replace(/^\//, "")).join(","),
    };
  });
}

/** One row per tag, as `docker images` prints them; an untagged image is <none>:<none>. */
export function imageRows(list: EngineImage[]): ImageRow[] {
  return list.flatMap((img) => {
    const tags = img.RepoTags && img.RepoTags.length > 0 ? img.RepoTags : ["<none>:<none>"];
    return tags.map((t) => {
      const colon = t.lastIndexOf(":");
      // A colon inside the registry's host:port is not the tag's.
      const tagged = colon > t.lastIndexOf("/");
      return {
        repository: tagged ? t.slice(0, colon) : t,
        tag: tagged ? t.slice(colon + 1) : "<none>",
        id: shortId(img.Id ?? ""),
        createdMs: (img.Created ?? 0) * 1000,
        size: img.Size ?? 0,
      };
    });
  });
}

/** Decimal units, as docker prints sizes. */
export function humanSize(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let v = bytes;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${v}B` : `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v)}${units[i]}`;
}

function shortId(id: string): string {
  return id.replace(/^sha256:/, "").slice(0, 12);
}

export const CONTAINER_COLUMNS: Column<ContainerRow>[] = [
  { header: "CONTAINER ID", value: (r) => r.id },
  { header: "IMAGE", value: (r) => r.image },
  { header: "COMMAND", value: (r) => r.command },
  { header: "CREATED", value: (r) => ago(r.createdMs) },
  { header: "STATUS", value: (r) => r.status },
  { header: "NAMES", value: (r) => r.names },
];

export const IMAGE_COLUMNS: Column<ImageRow>[] = [
  { header: "REPOSITORY", value: (r) => r.repository },
  { header: "TAG", value: (r) => r.tag },
  { header: "IMAGE ID", value: (r) => r.id },
  { header: "CREATED", value: (r) => ago(r.createdMs) },
  { header: "SIZE", value: (r) => humanSize(r.size) },
];
