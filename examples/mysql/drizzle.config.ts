import { defineConfig } from "drizzle-kit";

// Run from this folder: `npx drizzle-kit generate` after every change to src/schema.ts; commit what it writes.
export default defineConfig({
  dialect: "mysql",
  schema: "./src/schema.ts",
  out: "./migrations",
});
