// The retry rule of the Postgres backend's statements (src/postgres-retry.ts): what is retried, how often, and the
// error a transaction pooler's lost prepared statement becomes.
import { afterEach, describe, expect, it, vi } from "vitest";
import { AgentixStorageError } from "../src/core/errors.js";
import { runStatement, STATEMENT_ATTEMPTS } from "../src/postgres-retry.js";

const failing = (code: string) => {
  const calls = { n: 0 };
  const statement = () => {
    calls.n++;
    return Promise.reject(Object.assign(new Error(`error ${code}`), { code }));
  };
  return { calls, statement };
};

describe("runStatement", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it.each(["40001", "40P01"])(
    "retries %s a bounded number of times, then rejects with the driver's error",
    async (code) => {
      vi.useFakeTimers();
      const { calls, statement } = failing(code);
      const outcome = runStatement(statement).catch((error: unknown) => error);
      await vi.runAllTimersAsync();
      expect(await outcome).toMatchObject({ code });
      expect(calls.n).toBe(STATEMENT_ATTEMPTS);
    },
  );

  it("returns what a later attempt returns", async () => {
    vi.useFakeTimers();
    let n = 0;
    const outcome = runStatement(() =>
      ++n < 3 ? Promise.reject(Object.assign(new Error("x"), { code: "40001" })) : Promise.resolve("done"),
    );
    await vi.runAllTimersAsync();
    expect(await outcome).toBe("done");
    expect(n).toBe(3);
  });

  it.each(["23505", "57P01", "08006"])(
    "never retries %s (it may have taken effect, or will fail again)",
    async (code) => {
      const { calls, statement } = failing(code);
      await expect(runStatement(statement)).rejects.toMatchObject({ code });
      expect(calls.n).toBe(1);
    },
  );

  it("a lost prepared statement names the pooler and prepare: false, with the driver's error as cause", async () => {
    const { statement } = failing("26000");
    const error = (await runStatement(statement).catch((e: unknown) => e)) as AgentixStorageError;
    expect(error).toBeInstanceOf(AgentixStorageError);
    expect(error.message).toMatch(/transaction pooler.*prepare: false/);
    expect((error.cause as { code: string }).code).toBe("26000");
  });
});
