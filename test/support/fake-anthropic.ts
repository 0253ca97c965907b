// A fake Anthropic Messages API on 127.0.0.1, for running the Claude Agent SDK's real query() (and the Claude Code
// binary it starts) without a network: every POST /v1/messages is answered with one text reply, streamed as the
// API streams (server-sent events) when the request asks for it. The requests are kept for the test to read.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** A request the fake API received: its path and its parsed JSON body. */
export interface FakeRequest {
  url: string;
  body: { model?: string; stream?: boolean; messages?: unknown[] } | null;
}

export interface FakeAnthropic {
  /** `http://127.0.0.1:<port>`: the SDK's `ANTHROPIC_BASE_URL`. */
  url: string;
  requests: FakeRequest[];
  close(): Promise<void>;
}

/** Starts the fake API; `reply` makes the text of each answer from the request. */
export async function startFakeAnthropic(reply: (request: FakeRequest) => string): Promise<FakeAnthropic> {
  const requests: FakeRequest[] = [];
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let text = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      text += chunk;
    });
    req.on("end", () => {
      let body: FakeRequest["body"] = null;
      try {
        body = JSON.parse(text) as FakeRequest["body"];
      } catch {
        // not JSON: kept as null
      }
      const request = { url: req.url ?? "", body };
      requests.push(request);
      if (req.method !== "POST" || !request.url.startsWith("/v1/messages")) {
        res.writeHead(404, { "content-type": "application/json" });
        res.end(JSON.stringify({ type: "error", error: { type: "not_found_error", message: "not faked" } }));
        return;
      }
      if (request.url.startsWith("/v1/messages/count_tokens")) {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ input_tokens: 10 }));
        return;
      }
      answer(res, body, reply(request));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise<void>((resolve, reject) => server.close((e) => (e ? reject(e) : resolve()))),
  };
}

function answer(res: ServerResponse, body: FakeRequest["body"], text: string): void {
  const message = {
    id: `msg_fake_${Math.random().toString(36).slice(2)}`,
    type: "message",
    role: "assistant",
    model: body?.model ?? "claude-fake",
    stop_sequence: null,
  };
  const usage = { input_tokens: 10, output_tokens: 5 };
  if (!body?.stream) {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ ...message, content: [{ type: "text", text }], stop_reason: "end_turn", usage }));
    return;
  }
  res.writeHead(200, { "content-type": "text/event-stream" });
  const event = (type: string, data: object) =>
    res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
  event("message_start", {
    message: { ...message, content: [], stop_reason: null, usage: { ...usage, output_tokens: 1 } },
  });
  event("content_block_start", { index: 0, content_block: { type: "text", text: "" } });
  event("content_block_delta", { index: 0, delta: { type: "text_delta", text } });
  event("content_block_stop", { index: 0 });
  event("message_delta", { delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: 5 } });
  event("message_stop", {});
  res.end();
}
