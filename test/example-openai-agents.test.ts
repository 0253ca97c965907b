// examples/openai-agents/chat.ts as its README runs it: two processes, one turn each, one File store; the second
// resumes the conversation the first stored.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, expect, it } from "vitest";
import { AgentixSession } from "../src/adapters/openai-agents.js";
import { FileStorageBackend } from "../src/file.js";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "agentix-example-agents-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const turn = async (question: string) => {
  const tsx = join(ROOT, "node_modules/tsx/dist/cli.mjs");
  const args = [tsx, "examples/openai-agents/chat.ts", "--dir", dir, "--session", "demo", question];
  return (await run(process.execPath, args, { cwd: ROOT })).stdout;
};

it("runs two turns in two processes, the second resuming the first from the File store", async () => {
  const first = await turn("What is the weather in Lisbon?");
  expect(first).toMatch(/^assistant: The tool says: 18°C and sunny in Lisbon\.\nhistory: 4 items in session /);
  const second = await turn("Thanks!");
  expect(second).toMatch(/^assistant: You have asked me 2 things so far \(5 items of history in my context\)\.\n/);
  expect(second).toMatch(/history: 6 items/);
  await using storage = new FileStorageBackend({ basePath: dir });
  const items = await new AgentixSession({ storage, sessionId: "demo" }).getItems();
  expect(items.map((i) => (i as { type?: string }).type ?? "message")).toEqual([
    "message",
    "function_call",
    "function_call_result",
    "message",
    "message",
    "message",
  ]);
}, 60_000);
