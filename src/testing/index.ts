/**
 * The agentix conformance suite: every point of the storage contract as a
 * vitest test. Run it on your own backend with three lines:
 *
 * ```ts
 * import { runConformanceSuite } from "agentix/testing";
 * import { MyBackend } from "../src/my-backend.js";
 * runConformanceSuite("MyBackend", { create: () => new MyBackend({ ... }) });
 * ```
 * @module agentix/testing
 */
import { describe } from "vitest";
import { contentTests } from "./content.js";
import { type ConformanceOptions, suiteContext } from "./context.js";
import { forkTests } from "./fork.js";
import { hostileTests } from "./hostile.js";
import { lifecycleTests } from "./lifecycle.js";
import { messageTests } from "./messages.js";
import { portableTests } from "./portable.js";
import { sessionTests } from "./sessions.js";
import { syncTests } from "./sync.js";
import { v2EditSyncTests, v2EditTests } from "./v2-edits.js";
import { v2ForkTests } from "./v2-forks.js";
import { v2ImportSyncTests, v2ImportTests } from "./v2-import.js";
import { v2KeyTests } from "./v2-keys.js";
import { v2MessageTests } from "./v2-messages.js";
import { v2PagingSyncTests, v2PagingTests } from "./v2-paging.js";
import { v2SessionTests } from "./v2-sessions.js";
import { v2SyncTests } from "./v2-sync.js";
import { v2WriteMetadataSyncTests, v2WriteMetadataTests } from "./v2-write-metadata.js";
import { validationTests } from "./validation.js";

export { trickyContents } from "./content.js";
export type { ConformanceOptions } from "./context.js";
export { hostileIds } from "./hostile.js";

/**
 * Registers the conformance suite for a backend with vitest. `create` must
 * return a fresh backend for each test (it may share the underlying store:
 * every test uses its own random agent ids); the suite closes it afterwards.
 */
export function runConformanceSuite(name: string, options: ConformanceOptions): void {
  describe(`${name} conformance`, () => {
    const ctx = suiteContext(options);
    sessionTests(ctx);
    messageTests(ctx);
    forkTests(ctx);
    contentTests(ctx);
    validationTests(ctx);
    hostileTests(ctx);
    lifecycleTests(ctx);
    v2SessionTests(ctx);
    v2MessageTests(ctx);
    v2PagingTests(ctx);
    v2EditTests(ctx);
    v2KeyTests(ctx);
    v2ForkTests(ctx);
    v2WriteMetadataTests(ctx);
    if (options.sync !== false) {
      syncTests(ctx);
      v2SyncTests(ctx);
      v2PagingSyncTests(ctx);
      v2EditSyncTests(ctx);
      v2WriteMetadataSyncTests(ctx);
    }
    if (options.portable !== false) {
      portableTests(ctx);
      v2ImportTests(ctx);
      if (options.sync !== false) v2ImportSyncTests(ctx);
    }
  });
}
