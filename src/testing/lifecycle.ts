import { describe, expect, it } from "vitest";
import type { StorageBackend } from "../core/backend.js";
import { BackendClosedError } from "../core/errors.js";
import { agentId, type SuiteContext, unknownId } from "./context.js";

/** Every public call, so that none can escape the closed check. */
function everyCall(b: StorageBackend, id: string): Array<[string, () => unknown]> {
  return [
    ["createSession", () => b.createSession("a")],
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
