import { AgentixStorageError } from "./errors.js";

/**
 * Imports a backend's driver package, or fails with a message naming what to install.
 * Backends call it at the top of their module, so `agentix` itself never loads a driver.
 */
export async function importDriver<T>(pkg: string, subpath: string, install = pkg): Promise<T> {
  try {
    return (await import(pkg)) as T;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (
      (code === "ERR_MODULE_NOT_FOUND" || code === "MODULE_NOT_FOUND") &&
      String(error).includes(pkg.split("/")[0] as string)
    ) {
      throw new AgentixStorageError(`${subpath} needs the package "${pkg}": run npm install ${install}`, {
        cause: error,
      });
    }
    throw error;
  }
}
