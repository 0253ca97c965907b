import { expect, it } from "vitest";
import { MemoryStorageBackend } from "../src/index.js";
import { runConformanceSuite } from "../src/testing/index.js";

runConformanceSuite("MemoryStorageBackend", { create: () => new MemoryStorageBackend() });

it("keeps sessions per backend instance, gone with it", async () => {
  const a = new MemoryStorageBackend();
  const b = new MemoryStorageBackend();
  const id = await a.createSession("agent");
  expect(await b.getSession(id)).toBeNull();
  await a.close();
});
