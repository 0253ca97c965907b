import { randomUUID } from "node:crypto";
import { afterEach, expect, vi } from "vitest";
import type { StorageBackend } from "../core/backend.js";
import { ValidationError } from "../core/errors.js";

/** What the conformance suite needs to know about a backend. */
export interface ConformanceOptions {
  /** Builds a fresh backend for one test. The suite closes it after the test. */
  create: () => StorageBackend | Promise<StorageBackend>;
  /** Run the `...Sync` tests (default `true`). */
  sync?: boolean;
  /** Run the export/import tests: `scanSessions` and `importSession` (default `true`). */
  portable?: boolean;
  /** Size of the large-message test in MiB (default 16). */
  largeMessageMiB?: number;
}

export interface SuiteContext {
  options: ConformanceOptions;
  /** A fresh backend, closed after the test. */
  backend(): Promise<StorageBackend>;
}

/** Registers the per-test clean-up and returns the context every area uses. */
export function suiteContext(options: ConformanceOptions): SuiteContext {
  const opened: StorageBackend[] = [];
  afterEach(async () => {
    vi.useRealTimers();
    await Promise.allSettled(opened.splice(0).map((b) => b.close()));
  });
  return {
    options,
    async backend() {
      const b = await options.create();
      opened.push(b);
      return b;
    },
  };
}

/** A random agent id, so that tests sharing a store never see each other's sessions. */
export function agentId(label = "agent"): string {
  return `${label}-${randomUUID()}`;
}

/** A session id that has the right shape but names nothing. */
export function unknownId(): string {
  return "00000000-0000-7000-8000-000000000000".replace(/0{12}$/, randomUUID().slice(-12));
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Freezes `Date` (only `Date`: timers and I/O keep running) at `iso`. */
export function freezeClock(iso: string): void {
  vi.useFakeTimers({ toFake: ["Date"], now: new Date(iso) });
}

/** The error `promise` rejects with; fails the test when it resolves. */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected a rejection");
}

/** The error `call` throws; fails the test when it returns. */
export function thrown(call: () => unknown): unknown {
  try {
    call();
  } catch (error) {
    return error;
  }
  throw new Error("expected an error");
}

/** Asserts a `ValidationError` naming exactly `field`. */
export function expectField(error: unknown, field: string): void {
  expect(error).toBeInstanceOf(ValidationError);
  expect((error as ValidationError).field).toBe(field);
}

export const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
export const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/**
 * Where two JSON values differ (same types, same own keys, same strings and
 * numbers, plain prototypes), or `null`. vitest's `toStrictEqual` cannot be
 * used for values with an own `constructor` key, which it reads as a type.
 */
export function jsonDiff(actual: unknown, expected: unknown, path = "$"): string | null {
  if (typeof expected !== "object" || expected === null) {
    return Object.is(actual, expected) ? null : `${path}: ${String(actual)} !== ${String(expected)}`;
  }
  if (typeof actual !== "object" || actual === null) return `${path}: expected an object or array`;
  if (Array.isArray(expected) !== Array.isArray(actual)) return `${path}: array vs object`;
  const proto = Object.getPrototypeOf(actual);
  if (proto !== (Array.isArray(actual) ? Array.prototype : Object.prototype)) return `${path}: not a plain value`;
  const keys = Object.keys(expected);
  const actualKeys = Object.keys(actual);
  if (keys.join("\u0001") !== actualKeys.join("\u0001")) return `${path}: keys ${actualKeys} !== ${keys}`;
  for (const key of keys) {
    const diff = jsonDiff(
      (actual as Record<string, unknown>)[key],
      (expected as Record<string, unknown>)[key],
      `${path}.${key}`,
    );
    if (diff) return diff;
  }
  return null;
}
