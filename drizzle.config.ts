import { defineConfig } from "drizzle-kit";

// One config, two dialects: `npm run db:generate` runs drizzle-kit once per dialect.
const dialect = process.env.AGENTIX_DIALECT === "sqlite" ? "sqlite" : "postgresql";

export default defineConfig({
  dialect,
  schema: dialect === "sqlite" ? "./src/schema/sqlite.ts" : "./src/schema/pg.ts",
  out: process.env.AGENTIX_MIGRATIONS_OUT ?? `./migrations/${dialect === "sqlite" ? "sqlite" : "postgres"}`,
});
