import type { JsonObject, MessageContent, MessageRecord, SessionRecord } from "../core/types.js";

/** `2025-01-15T14:30:00.123Z` as `2025-01-15 14:30:00.123` (UTC: the headers say so). */
export function formatTime(iso: string): string {
  return iso.replace("T", " ").replace(/Z$/, "");
}

/**
 * Makes stored text safe to print: control characters (an ANSI escape hidden in a message could rewrite the
 * terminal) and lone surrogates are shown as `\uXXXX`; newlines and tabs are kept.
 */
export function printable(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]|\p{Cs}/gu, (c) => {
    return `\\u${(c.codePointAt(0) ?? 0).toString(16).padStart(4, "0")}`;
  });
}

/** Cuts `text` to `width` characters, marking the cut with `…`. */
export function truncate(text: string, width: number): string {
  const chars = [...text];
  return chars.length <= width ? text : `${chars.slice(0, Math.max(width - 1, 0)).join("")}…`;
}

/** The text of a message: a string as is; text blocks (`{type: "text", text}`) as their text; anything else as JSON. */
export function contentText(content: MessageContent): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return JSON.stringify(content);
  return content
    .map((block) =>
      typeof block === "object" && block !== null && !Array.isArray(block) && block.type === "text"
        ? String(block.text)
        : JSON.stringify(block),
    )
    .join("\n");
}

/** Wraps one paragraph at `width` columns, breaking words longer than a line. */
function wrap(line: string, width: number): string[] {
  const out: string[] = [];
  let current = "";
  for (const word of line.split(/(?<= )/)) {
    if ([...current].length + [...word.trimEnd()].length > width && current !== "") {
      out.push(current.trimEnd());
      current = "";
    }
    let rest = word;
    while ([...rest].length > width) {
      const chars = [...rest];
      out.push(chars.slice(0, width).join(""));
      rest = chars.slice(width).join("");
    }
    current += rest;
  }
  out.push(current.trimEnd());
  return out;
}

export interface FoldOptions {
  /** Columns of text. */
  width: number;
  /** Lines shown before the rest is folded away; `Infinity` shows everything. */
  maxLines: number;
}

/** The content wrapped to `width` and folded after `maxLines` lines, with a line saying how much was left out. */
export function fold(text: string, { width, maxLines }: FoldOptions): string[] {
  const lines = printable(text)
    .split("\n")
    .flatMap((line) => wrap(line.replaceAll("\t", "  "), width));
  if (lines.length <= maxLines) return lines;
  const hidden = lines.length - maxLines;
  return [...lines.slice(0, maxLines), `… ${hidden} more line${hidden === 1 ? "" : "s"} (--full shows everything)`];
}

/** The metadata besides `cwd`, as compact JSON ("" when there is none). */
function otherMetadata(metadata: JsonObject | null): string {
  if (!metadata) return "";
  const { cwd, ...rest } = metadata;
  const other = typeof cwd === "string" ? rest : metadata;
  return Object.keys(other).length === 0 ? "" : JSON.stringify(other);
}

/** Sessions as an aligned table, one row each, cut to `width` columns when given. */
export function sessionTable(sessions: SessionRecord[], width = Number.POSITIVE_INFINITY): string[] {
  const rows = [
    ["SESSION ID", "UPDATED (UTC)", "CWD", "METADATA"],
    ...sessions.map((s) => [
      s.session_id,
      formatTime(s.updated_at),
      typeof s.metadata?.cwd === "string" ? printable(s.metadata.cwd) : "-",
      printable(otherMetadata(s.metadata)),
    ]),
  ];
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => [...(row[column] ?? "")].length))) ?? [];
  return rows.map((row) =>
    truncate(row.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join("  "), width).trimEnd(),
  );
}

/**
 * A session's header and its messages as a chat log: time (UTC), role and content, one message after the other,
 * content wrapped beside the role and folded. A line with the date precedes the messages of each new day.
 */
export function transcript(session: SessionRecord, messages: MessageRecord[], options: FoldOptions): string[] {
  const cwd = typeof session.metadata?.cwd === "string" ? printable(session.metadata.cwd) : "-";
  const extra = otherMetadata(session.metadata);
  const lines = [
    `Session ${session.session_id}  agent ${printable(session.agent_id)}`,
    `  created ${formatTime(session.created_at)} UTC, updated ${formatTime(session.updated_at)} UTC, cwd ${cwd}`,
    ...(extra ? [`  metadata ${truncate(printable(extra), options.width - 11)}`] : []),
    `  ${messages.length} message${messages.length === 1 ? "" : "s"}${messages.length > 0 ? ":" : ""}`,
  ];
  const gutter = " ".repeat(2 + 12 + 2 + 9 + 2);
  let date = session.created_at.slice(0, 10);
  for (const message of messages) {
    if (!message.timestamp.startsWith(date)) {
      date = message.timestamp.slice(0, 10);
      lines.push(`  ${date}`);
    }
    const head = `  ${formatTime(message.timestamp).slice(11)}  ${message.role.padEnd(9)}  `;
    const body = fold(contentText(message.content), { ...options, width: Math.max(options.width - gutter.length, 20) });
    body.forEach((line, i) => {
      lines.push(`${i === 0 ? head : gutter}${line}`.trimEnd());
    });
  }
  return lines;
}

/** The terminal's width, or `undefined` when the output is not a terminal (a file or a pipe: lines are not cut). */
export function terminalWidth(): number | undefined {
  return process.stdout.isTTY ? Math.max(process.stdout.columns ?? 100, 60) : undefined;
}

/** Where long message text wraps: the terminal's width, else 100 columns (so that piped output is stable). */
export function wrapWidth(): number {
  return terminalWidth() ?? 100;
}
