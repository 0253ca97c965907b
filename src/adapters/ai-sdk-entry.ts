// What `import "agentix/ai-sdk"` runs (package.json "exports"; the types are ai-sdk.ts's). The adapter needs only the
// AI SDK's types, but it is of no use without the AI SDK: a missing `ai` is named here, as for the other subpaths.
import { requirePackages } from "../core/driver.js";

await requirePackages("agentix/ai-sdk", ["ai"]);

export const { createChat, loadChat, saveChat } = await import("./ai-sdk.js");
