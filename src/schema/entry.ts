// What `import "agentix/schema"` runs (package.json "exports"; the types are index.ts's). Node resolves every static
// import of a module graph before it runs any of it, so without drizzle-orm the tables' static imports would fail
// with Node's bare ERR_MODULE_NOT_FOUND: this entry checks first, then loads them.
import { requirePackages } from "../core/driver.js";

await requirePackages("agentix/schema", ["drizzle-orm"]);

export const { pg, sqlite } = await import("./index.js");
