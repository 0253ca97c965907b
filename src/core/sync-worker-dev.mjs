// Development only (tests and bench run the TypeScript sources): Node 20 does not
// apply `--import tsx` to a worker's entry, so the worker registers tsx itself
// and then loads the real worker. Built packages use sync-worker.js directly.
import { register } from "tsx/esm/api";

register();
await import("./sync-worker.ts");
