/**
 * The Drizzle tables of both relational backends: same tables, same columns, same order.
 * @module agentix/schema
 */
export * as pg from "./pg.js";
export * as sqlite from "./sqlite.js";
