import { execFile } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";

// The committed migrations (their snapshots) must match src/schema: a schema change committed without
// `npm run db:generate` fails here, for both dialects.

const root = fileURLToPath(new URL("..", import.meta.url));
const drizzleKit = join(root, "node_modules", "drizzle-kit", "bin.cjs");
const dir = mkdtempSync(join(tmpdir(), "agentix-drift-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `drizzle-kit generate` for `dialect` (see drizzle.config.ts) into `out`, and returns what it printed. */
async function generate(dialect: "sqlite" | "postgresql", out: string): Promise<string> {
  const { stdout, stderr } = await promisify(execFile)(process.execPath, [drizzleKit, "generate"], {
    cwd: root,
    // drizzle-kit prefixes "./" to the folder, so it must be relative.
    env: { ...process.env, AGENTIX_DIALECT: dialect, AGENTIX_MIGRATIONS_OUT: relative(root, out) },
    timeout: 60_000,
  });
  // drizzle-kit exits with 0 even when it fails, so its output tells.
  if (/error/i.test(stderr) || /error/i.test(stdout))
    throw new Error(`drizzle-kit generate failed:\n${stdout}${stderr}`);
  return stdout;
}

/** Every file under `folder` and its content, by relative path. */
function snapshot(folder: string): Record<string, string> {
  const files = readdirSync(folder, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
  return Object.fromEntries(
    files.map((e) => {
      const path = join(e.parentPath, e.name);
      return [relative(folder, path), readFileSync(path, "utf8")];
    }),
  );
}

describe.each([
  ["sqlite", "sqlite"],
  ["postgres", "postgresql"],
] as const)("migrations/%s", { timeout: 120_000 }, (folder, dialect) => {
  const committed = join(root, "migrations", folder);

  it("match the schema: drizzle-kit generate finds nothing to add", async () => {
    const out = join(dir, `${folder}-committed`);
    cpSync(committed, out, { recursive: true });
    expect(await generate(dialect, out)).toMatch(/No schema changes, nothing to migrate/);
    expect(snapshot(out)).toEqual(snapshot(committed));
  });

  it("would fail on drift: a committed snapshot that lacks an index gets a new migration creating it", async () => {
    const out = join(dir, `${folder}-drifted`);
    cpSync(committed, out, { recursive: true });
    // drizzle-kit diffs against the newest snapshot.
    const newest = readdirSync(join(out, "meta"))
      .filter((f) => f.endsWith("_snapshot.json"))
      .sort()
      .at(-1) as string;
    const snapshotFile = join(out, "meta", newest);
    const meta = JSON.parse(readFileSync(snapshotFile, "utf8")) as {
      tables: Record<string, { indexes: Record<string, unknown> }>;
    };
    const messages = Object.values(meta.tables).find((t) => "messages_session_idx" in t.indexes);
    expect(messages).toBeDefined();
    delete messages?.indexes.messages_session_idx;
    writeFileSync(snapshotFile, JSON.stringify(meta, null, 2));

    await generate(dialect, out);
    const added = Object.entries(snapshot(out)).filter(([f]) => f.endsWith(".sql") && !(f in snapshot(committed)));
    expect(added).toHaveLength(1);
    // Unique since v2's positions: (session_id, position).
    expect(added[0]?.[1]).toMatch(/CREATE (UNIQUE )?INDEX [`"]messages_session_idx[`"]/);
  });
});
