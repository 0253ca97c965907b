import { isAbsolute } from "node:path";
import { Command } from "commander";
import { expandHome } from "../core/paths.js";
import { sessionTable, terminalWidth, transcript, wrapWidth } from "./format.js";
import { positiveInt, readStorage, requireSession, selectStorage, withStorage } from "./shared.js";

function list(): Command {
  return new Command("list")
    .description("list an agent's sessions, newest first")
    .argument("<agent-id>", "the agent whose sessions to list")
    .option("--cwd <dir>", "only sessions whose metadata.cwd is exactly this directory (a relative one: from here)")
    .option("--limit <n>", "at most this many sessions", positiveInt)
    .option("--json", "print the session records as a JSON array")
    .action(async (agentId: string, options: { cwd?: string; limit?: number; json?: boolean }, command: Command) => {
      // Agents store absolute paths (process.cwd()): `--cwd .` means this directory. An absolute one is matched as
      // given, since a cwd is data (a trailing slash is part of it).
      const cwd = options.cwd === undefined || isAbsolute(options.cwd) ? options.cwd : expandHome(options.cwd);
      await readStorage(selectStorage(command), async (storage) => {
        const sessions = await storage.listSessions(agentId, {
          ...(cwd === undefined ? {} : { cwd }),
          // One more than asked, to know whether to say that there are more.
          ...(options.limit === undefined ? {} : { limit: options.limit + 1 }),
        });
        const shown = options.limit === undefined ? sessions : sessions.slice(0, options.limit);
        if (options.json) {
          process.stdout.write(`${JSON.stringify(shown, null, 2)}\n`);
          return;
        }
        if (shown.length === 0) {
          const where = cwd === undefined ? "" : ` with cwd ${JSON.stringify(cwd)}`;
          process.stdout.write(`No sessions for agent ${JSON.stringify(agentId)}${where}.\n`);
          return;
        }
        const more = sessions.length > shown.length ? " (more: raise --limit)" : "";
        const footer = `${shown.length} session${shown.length === 1 ? "" : "s"}, newest first${more}`;
        process.stdout.write(`${[...sessionTable(shown, terminalWidth()), footer].join("\n")}\n`);
      });
    });
}

function show(): Command {
  return new Command("show")
    .description("print a session's transcript: role, time and content of every message")
    .argument("<session-id>", "the session to show")
    .option("--last <n>", "only the newest N messages", positiveInt)
    .option("--full", "do not fold long messages")
    .option("--json", 'print {"session": record, "messages": [...]} as JSON')
    .action(async (sessionId: string, options: { last?: number; full?: boolean; json?: boolean }, command: Command) => {
      await readStorage(selectStorage(command), async (storage) => {
        const session = await requireSession(storage, sessionId);
        const messages = await storage.loadMessages(
          sessionId,
          options.last === undefined ? {} : { last: options.last },
        );
        if (options.json) {
          process.stdout.write(`${JSON.stringify({ session, messages }, null, 2)}\n`);
          return;
        }
        const lines = transcript(session, messages, {
          width: wrapWidth(),
          maxLines: options.full ? Number.POSITIVE_INFINITY : 12,
        });
        process.stdout.write(`${lines.join("\n")}\n`);
      });
    });
}

function fork(): Command {
  return new Command("fork")
    .description("copy a session and its messages to a new session; prints the new id")
    .argument("<session-id>", "the session to fork")
    .action(async (sessionId: string, _options: unknown, command: Command) => {
      await withStorage(selectStorage(command), async (storage) => {
        process.stdout.write(`${await storage.forkSession(sessionId)}\n`);
      });
    });
}

function remove(): Command {
  return new Command("delete")
    .description("delete a session and its messages")
    .argument("<session-id>", "the session to delete")
    .action(async (sessionId: string, _options: unknown, command: Command) => {
      await withStorage(selectStorage(command), async (storage) => {
        // The library treats an unknown id as already deleted; a person who typed it wants to know.
        await requireSession(storage, sessionId);
        await storage.deleteSession(sessionId);
        process.stdout.write(`Deleted session ${sessionId}\n`);
      });
    });
}

/** `agentix sessions list|show|fork|delete`. */
export function sessionsCommand(): Command {
  return new Command("sessions")
    .description("inspect and manage sessions")
    .addCommand(list())
    .addCommand(show())
    .addCommand(fork())
    .addCommand(remove());
}
