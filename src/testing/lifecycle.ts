import { describe, expect, it } from "vitest";
import type { StorageBackend } from "../core/backend.js";
import { BackendClosedError } from "../core/errors.js";
import { agentId, type SuiteContext, unknownId } from "./context.js";

/** Every public call, so that none can escape the closed check. */
function everyCall(b: StorageBackend, id: string): Array<[string, () => unknown]> {
  return [
    ["createSession", () => b.createSession("a")],
    ["createSession with sessionId", () => b.createSession("a", null, { sessionId: unknownId() })],
    ["openSession", () => b.openSession("a", unknownId())],
    ["updateSession", () => b.updateSession(id, { metadata: null })],
    ["saveMessages", () => b.saveMessages(id, [{ role: "tool", content: "x" }])],
    ["saveMessages (empty)", () => b.saveMessages(id, [])],
    ["countMessages", () => b.countMessages(id)],
    ["getSession", () => b.getSession(id)],
    ["listSessions", () => b.listSessions("a")],
    ["forkSession", () => b.forkSession(id)],
    ["deleteSession", () => b.deleteSession(id)],
    ["saveMessage", () => b.saveMessage(id, "user", "x")],
    ["loadMessages", () => b.loadMessages(id)],
    ["scanSessions", () => b.scanSessions()],
    ["importSession", () => b.importSession({} as never, [])],
  ];
}

function everySyncCall(b: StorageBackend, id: string): Array<[string, () => unknown]> {
  return [
    ["createSessionSync", () => b.createSessionSync("a")],
    ["createSessionSync with sessionId", () => b.createSessionSync("a", null, { sessionId: unknownId() })],
    ["openSessionSync", () => b.openSessionSync("a", unknownId())],
    ["updateSessionSync", () => b.updateSessionSync(id, { metadata: null })],
    ["saveMessagesSync", () => b.saveMessagesSync(id, [{ role: "tool", content: "x" }])],
    ["countMessagesSync", () => b.countMessagesSync(id)],
    ["getSessionSync", () => b.getSessionSync(id)],
    ["listSessionsSync", () => b.listSessionsSync("a")],
    ["forkSessionSync", () => b.forkSessionSync(id)],
    ["deleteSessionSync", () => b.deleteSessionSync(id)],
    ["saveMessageSync", () => b.saveMessageSync(id, "user", "x")],
    ["loadMessagesSync", () => b.loadMessagesSync(id)],
  ];
}

export function lifecycleTests(ctx: SuiteContext): void {
  describe("close", () => {
    it("can be called twice; every other call afterwards is a BackendClosedError", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      expect(b.closed).toBe(false);
      await b.close();
      await b.close();
      expect(b.closed).toBe(true);
      for (const [name, call] of everyCall(b, id)) {
        await expect(Promise.resolve().then(call), name).rejects.toBeInstanceOf(BackendClosedError);
      }
      for (const [name, call] of everySyncCall(b, id)) {
        expect(call, name).toThrow(BackendClosedError);
      }
    });

    it("is what `await using` calls", async () => {
      let outside: StorageBackend | undefined;
      {
        await using b = await ctx.backend();
        outside = b;
        await b.getSession(unknownId());
      }
      expect(outside?.closed).toBe(true);
      await expect(outside?.getSession(unknownId())).rejects.toBeInstanceOf(BackendClosedError);
    });
  });
}
