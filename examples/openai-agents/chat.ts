// One turn of a chat with an OpenAI Agents SDK agent whose history lives in agentix's File store: run it twice and
// the second process answers with the first one's turn in its context. The model is local (no network, no API
// key): it calls the weather tool when asked about the weather and otherwise says how much history it was given.
//
//   npx tsx examples/openai-agents/chat.ts --dir /tmp/agentix-demo --session demo "What is the weather in Lisbon?"
//   npx tsx examples/openai-agents/chat.ts --dir /tmp/agentix-demo --session demo "Thanks!"
import { parseArgs } from "node:util";
import {
  Agent,
  type AgentInputItem,
  type Model,
  type ModelRequest,
  type ModelResponse,
  Runner,
  tool,
  Usage,
} from "@openai/agents-core";
import { z } from "zod";
import { AgentixSession } from "../../src/adapters/openai-agents.js";
import { FileStorageBackend } from "../../src/file.js";

/** A stand-in for a real model: `new Agent({ model: "gpt-5-mini" })` with `@openai/agents` and an API key. */
class LocalModel implements Model {
  async getResponse(request: ModelRequest): Promise<ModelResponse> {
    const input = typeof request.input === "string" ? [] : request.input;
    const last = input.at(-1) as { role?: string; content?: unknown; type?: string; output?: unknown } | undefined;
    if (last?.role === "user" && JSON.stringify(last.content).includes("weather")) {
      const call: AgentInputItem = {
        type: "function_call",
        callId: `call-${input.length}`,
        name: "weather",
        arguments: JSON.stringify({ city: "Lisbon" }),
        status: "completed",
      };
      return { usage: new Usage(), output: [call] };
    }
    const userTurns = input.filter((item) => (item as { role?: string }).role === "user").length;
    const output = last?.output as { text?: string } | string | undefined;
    const text =
      last?.type === "function_call_result"
        ? `The tool says: ${typeof output === "string" ? output : output?.text}.`
        : `You have asked me ${userTurns} things so far (${input.length} items of history in my context).`;
    return {
      usage: new Usage(),
      output: [{ type: "message", role: "assistant", status: "completed", content: [{ type: "output_text", text }] }],
    };
  }
  // biome-ignore lint/correctness/useYield: this example runs without streaming
  async *getStreamedResponse(): AsyncIterable<never> {
    throw new Error("LocalModel does not stream");
  }
}

const weather = tool({
  name: "weather",
  description: "The weather in a city",
  parameters: z.object({ city: z.string() }),
  execute: async ({ city }) => `18°C and sunny in ${city}`,
});

const { values, positionals } = parseArgs({
  options: { dir: { type: "string" }, session: { type: "string", default: "demo" } },
  allowPositionals: true,
});
const question = positionals.join(" ") || "Hello!";

// The File store under --dir (default ~/.agentix/projects); any agentix backend works the same way.
await using storage = new FileStorageBackend(values.dir === undefined ? {} : { basePath: values.dir });
const session = new AgentixSession({ storage, sessionId: values.session, agentId: "example-chat" });
const agent = new Agent({ name: "assistant", instructions: "Be brief.", model: new LocalModel(), tools: [weather] });

const result = await new Runner({ tracingDisabled: true }).run(agent, question, { session });
console.log(`assistant: ${result.finalOutput}`);
console.log(`history: ${(await session.getItems()).length} items in session ${session.storageSessionId}`);
