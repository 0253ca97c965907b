// createStorageBackend's query parameters: agentix's own (schema, prefix), a few passed to the driver, and every
// other one a ValidationError, before any connection is made (the unreachable URLs use a loopback port where nothing
// listens).
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import postgres from "postgres";
import { afterAll, describe, expect, inject, it } from "vitest";
import { ValidationError } from "../src/core/errors.js";
import { createStorageBackend } from "../src/url.js";

const pgUrl = inject("postgresUrl");
const redisUrl = inject("redisUrl");
const schema = `agentix_url_${randomUUID().slice(0, 8)}`;

const rejection = (url: string) =>
  createStorageBackend(url).then(
    () => expect.unreachable(`${url} was accepted`),
    (error: unknown) => error as ValidationError,
  );

describe("createStorageBackend: URL query parameters", () => {
  afterAll(async () => {
    if (pgUrl) {
      const sql = postgres(pgUrl, { onnotice: () => {} });
      await sql`drop schema if exists ${sql(schema)} cascade`;
      await sql.end();
    }
    if (redisUrl) {
      const redis = new Redis(redisUrl);
      for await (const keys of redis.scanStream({ match: `${schema}:*`, count: 1000 })) {
        if ((keys as string[]).length > 0) await redis.del(...(keys as string[]));
      }
      await redis.quit();
    }
  });

  it.each([
    ["postgres://127.0.0.1:1/x?scheme=tenant", 'unknown query parameter "scheme" (a postgres:// URL takes schema, '],
    ["postgresql://127.0.0.1:1/x?schema=a&max=3&Schema=b", 'unknown query parameters "max", "Schema" (a postgresql://'],
    ["redis://127.0.0.1:1?prefx=app", 'unknown query parameter "prefx" (a redis:// URL takes prefix, db, family)'],
    ["rediss://127.0.0.1:1/0?prefix=app&keyPrefix=x", 'unknown query parameter "keyPrefix"'],
  ])("%s is a ValidationError naming the parameter", async (url, message) => {
    const error = await rejection(url);
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.field).toBe("url");
    expect(error.message).toContain(message);
  });

  it("?prepare= takes true or false, nothing else", async () => {
    const error = await rejection("postgres://127.0.0.1:1/x?prepare=no");
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.message).toContain('prepare must be true or false, not "no"');
  });

  it("accepts the documented parameters without connecting", async () => {
    for (const url of [
      "postgres://127.0.0.1:1/x?schema=tenant&prepare=false&application_name=app&sslmode=disable&connect_timeout=3",
      "redis://127.0.0.1:1?prefix=app&db=2&family=4",
    ]) {
      const storage = await createStorageBackend(url);
      await storage.close();
    }
  });

  it.skipIf(!pgUrl)("Postgres: schema goes to agentix, application_name and sslmode to the driver", async () => {
    const url = new URL(pgUrl as string);
    url.searchParams.set("schema", schema);
    url.searchParams.set("application_name", `agentix-url-${schema}`);
    url.searchParams.set("sslmode", "disable");
    const storage = await createStorageBackend(url.toString());
    try {
      const id = await storage.createSession("agent");
      const sql = postgres(pgUrl as string, { onnotice: () => {} });
      const [row] = await sql`select count(*)::int as n from ${sql(schema)}.sessions where id = ${id}`;
      const apps = await sql`select 1 from pg_stat_activity where application_name = ${`agentix-url-${schema}`}`;
      await sql.end();
      expect(row?.n).toBe(1);
      expect(apps.length).toBeGreaterThan(0);
    } finally {
      await storage.close();
    }
  });

  it.skipIf(!redisUrl)("Redis: prefix goes to agentix, db to the driver", async () => {
    const url = new URL(redisUrl as string);
    url.searchParams.set("prefix", schema);
    url.searchParams.set("db", "0");
    const storage = await createStorageBackend(url.toString());
    try {
      const id = await storage.createSession("agent");
      expect((await storage.getSession(id))?.agent_id).toBe("agent");
      await storage.deleteSession(id);
    } finally {
      await storage.close();
    }
  });
});
