import { homedir } from "node:os";
import { resolve } from "node:path";

/** Expands a leading `~` to the home directory and makes the path absolute. */
export function expandHome(path: string): string {
  if (path === "~") return homedir();
  if (path.startsWith("~/")) return resolve(homedir(), path.slice(2));
  return resolve(path);
}

/** Where the File backend stores sessions unless told otherwise. */
export const DEFAULT_BASE_PATH = "~/.agentix/projects";
