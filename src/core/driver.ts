import { AgentixStorageError } from "./errors.js";

/**
 * Imports a package that a subpath needs, or fails with one line that names every package the subpath needs and
 * the install command for those that are missing. Backends call it at the top of their module, so that `agentix`
 * itself never loads a driver.
 * @param specifier what to import: `"postgres"`, `"drizzle-orm/migrator"`
 * @param subpath the subpath that needs it, for the message: `"agentix/postgres"`
 * @param packages every package that subpath needs, as `npm install` takes them: `["better-sqlite3@12", "drizzle-orm"]`
 */
export async function importDriver<T>(specifier: string, subpath: string, packages: readonly string[]): Promise<T> {
  try {
    return (await import(specifier)) as T;
  } catch (error) {
    if (!isMissing(error, packageName(specifier))) throw error;
    throw await missingPackages(subpath, packages, specifier, error);
  }
}

/**
 * Fails, as {@link importDriver} does, unless every package is installed. For the subpaths whose modules import
 * their packages statically (Node resolves every static import before any code runs, so a missing one would be
 * Node's bare `ERR_MODULE_NOT_FOUND`): their entry calls this, then loads them.
 */
export async function requirePackages(
  subpath: string,
  packages: readonly string[],
  options: { /** Installed as dev dependencies (`npm install -D`). */ dev?: boolean } = {},
): Promise<void> {
  const { missing, cause } = await findMissing(packages);
  if (missing.length > 0) throw missingPackagesError(subpath, packages, missing, cause, options.dev === true);
}

async function missingPackages(subpath: string, packages: readonly string[], specifier: string, cause: unknown) {
  const { missing } = await findMissing(packages);
  // `specifier` is one of `packages`; should it not be, it is still what is missing.
  return missingPackagesError(subpath, packages, missing.length > 0 ? missing : [packageName(specifier)], cause, false);
}

/** The packages of `packages` that are not installed, and the first error that said so. */
async function findMissing(packages: readonly string[]): Promise<{ missing: string[]; cause: unknown }> {
  const missing: string[] = [];
  let cause: unknown;
  for (const pkg of packages) {
    const name = packageName(pkg);
    try {
      await import(name);
    } catch (error) {
      if (!isMissing(error, name)) continue; // installed; whatever else is wrong, the real import reports it
      missing.push(pkg);
      cause ??= error;
    }
  }
  return { missing, cause };
}

/** `agentix/sqlite needs the packages better-sqlite3 and drizzle-orm: npm install better-sqlite3@12 drizzle-orm` */
function missingPackagesError(
  subpath: string,
  packages: readonly string[],
  missing: readonly string[],
  cause: unknown,
  dev: boolean,
): AgentixStorageError {
  const names = packages.map(packageName);
  const needs = names.length === 1 ? `the package ${names[0]}` : `the packages ${list(names)}`;
  const which =
    missing.length < packages.length
      ? `; ${list(missing.map(packageName))} ${missing.length === 1 ? "is" : "are"} not installed`
      : "";
  const install = `npm install ${dev ? "-D " : ""}${missing.join(" ")}`;
  return new AgentixStorageError(`${subpath} needs ${needs}${which}: ${install}`, { cause });
}

/** `drizzle-orm` of `drizzle-orm/migrator` and of `drizzle-orm@0.45`; `@scope/pkg` of `@scope/pkg/sub@1`. */
export function packageName(specifier: string): string {
  const parts = specifier.split("/");
  const name = specifier.startsWith("@") ? parts.slice(0, 2).join("/") : (parts[0] as string);
  const version = name.indexOf("@", 1);
  return version === -1 ? name : name.slice(0, version);
}

/** Whether `error` says that the package `name` itself is not installed (not a file inside it, not another package). */
function isMissing(error: unknown, name: string): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (code !== "ERR_MODULE_NOT_FOUND" && code !== "MODULE_NOT_FOUND") return false;
  // Node: "Cannot find package 'x' imported from ..."; vitest names the whole specifier ('x/sub').
  const message = String((error as Error).message);
  return [`'${name}'`, `'${name}/`, `"${name}"`, `"${name}/`].some((quoted) => message.includes(quoted));
}

const list = (items: string[]): string =>
  items.length <= 1 ? items.join("") : `${items.slice(0, -1).join(", ")} and ${items.at(-1)}`;
