// What `import "agentix/testing"` runs (package.json "exports"; the types are index.ts's). Node resolves every
// static import of a module graph before it runs any of it, so without vitest the suite's static imports would fail
// with Node's bare ERR_MODULE_NOT_FOUND: this entry checks first, then loads the suite.
import { requirePackages } from "../core/driver.js";

await requirePackages("agentix/testing", ["vitest"], { dev: true });

export const { runConformanceSuite, trickyContents, hostileIds } = await import("./index.js");
