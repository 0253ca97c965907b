// What `import "agentix/langchain"` runs (package.json "exports"; the types are langchain.ts's). Node resolves every
// static import of a module graph before it runs any of it, so without @langchain/core the adapter's static imports
// would fail with Node's bare ERR_MODULE_NOT_FOUND: this entry checks first, then loads the adapter.
import { requirePackages } from "../core/driver.js";

await requirePackages("agentix/langchain", ["@langchain/core"]);

export const { AgentixChatMessageHistory } = await import("./langchain.js");
