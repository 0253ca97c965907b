// What `import "agentix/openai-agents"` runs (package.json "exports"; the types are openai-agents.ts's). Node resolves
// every static import of a module graph before it runs any of it, so without @openai/agents-core the adapter's static
// import would fail with Node's bare ERR_MODULE_NOT_FOUND: this entry checks first, then loads it.
import { requirePackages } from "../core/driver.js";

await requirePackages("agentix/openai-agents", ["@openai/agents-core"]);

export const { AgentixSession, roleOf } = await import("./openai-agents.js");
