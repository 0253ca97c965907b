// A local model for the OpenAI Agents SDK's runner (no network): it records every request it gets and answers with
// a tool call when it is asked for the weather and the tool has not answered yet, with text otherwise.
import { type Model, type ModelRequest, type ModelResponse, Usage } from "@openai/agents-core";

export class FakeModel implements Model {
  /** The input items of every request, in order. */
  readonly requests: ModelRequest[] = [];

  async getResponse(request: ModelRequest): Promise<ModelResponse> {
    this.requests.push(structuredClone(request));
    const input = typeof request.input === "string" ? [] : request.input;
    const last = input.at(-1) as { type?: string; role?: string; content?: unknown } | undefined;
    const n = this.requests.length;
    if (last?.role === "user" && JSON.stringify(last.content).includes("weather")) {
      return {
        usage: new Usage(),
        responseId: `resp-${n}`,
        output: [
          {
            type: "function_call",
            callId: `call-${n}`,
            name: "weather",
            arguments: '{"city":"Lisbon"}',
            status: "completed",
          },
        ],
      };
    }
    return {
      usage: new Usage(),
      responseId: `resp-${n}`,
      output: [
        {
          type: "message",
          role: "assistant",
          status: "completed",
          id: `msg-${n}`,
          content: [{ type: "output_text", text: `reply ${n}: I saw ${input.length} items` }],
        },
      ],
    };
  }

  // biome-ignore lint/correctness/useYield: the runner under test calls getResponse only (run without streaming)
  async *getStreamedResponse(): AsyncIterable<never> {
    throw new Error("FakeModel does not stream");
  }
}
