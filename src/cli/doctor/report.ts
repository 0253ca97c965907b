// What `agentix doctor` found: one finding per problem, with what a repair did about it.

/** One problem found in a store. */
export interface Finding {
  /** Where: a session, a file, a key or a table. */
  where: string;
  /** What is wrong. */
  problem: string;
  /** What the repair did (`undefined`: not repaired, a check only or nothing safe to do). */
  repaired: string | undefined;
}

/** The lines `agentix doctor` prints for its findings. */
export function formatFindings(findings: Finding[], store: string, repair: boolean): string[] {
  if (findings.length === 0) return [`${store}: no problems found`];
  const lines = findings.map((f) => `${f.where}: ${f.problem}${f.repaired === undefined ? "" : ` -> ${f.repaired}`}`);
  const left = findings.filter((f) => f.repaired === undefined).length;
  const n = `${findings.length} problem${findings.length === 1 ? "" : "s"}`;
  lines.push(
    repair
      ? `${store}: ${n} found, ${findings.length - left} repaired${left ? `, ${left} left (no safe automatic repair)` : ""}`
      : `${store}: ${n} found; run with --repair to repair them`,
  );
  return lines;
}
