import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, isAbsolute, join, relative } from "node:path";
import { Command } from "commander";
import type { MessageContent, Role } from "../core/types.js";
import { sessionTable, terminalWidth, transcript, wrapWidth } from "./format.js";
import { type GlobalOptions, redact, withStorage } from "./shared.js";

const AGENT = "travel-assistant";
type Turn = [Role, MessageContent];

const conversation: Turn[] = [
  ["system", "You are a concise travel assistant."],
  ["user", "I have a free weekend in Lisbon. What should I not miss?"],
  ["assistant", "Saturday: Alfama and tram 28. Sunday: Belém and a pastel de nata."],
];
const followUp: Turn[] = [
  ["user", "Is one day enough for Sintra?"],
  ["assistant", "Yes, if you leave early: Pena Palace first, then Quinta da Regaleira."],
];
const forkFollowUp: Turn[] = [
  ["user", "What if it rains all weekend?"],
  // Content may be any JSON: here content blocks, as model APIs return them.
  [
    "assistant",
    [
      { type: "text", text: "Swap Sintra for the Gulbenkian Museum and the Oceanário." },
      { type: "tool_use", name: "weather", input: { city: "Lisbon" } },
    ],
  ],
];

/** How to run the CLI again as it was run now: `agentix`, or the script from a checkout (`npm start` runs the source). */
function invocation(): string {
  const script = process.argv[1] ?? "agentix";
  if (basename(script) === "agentix") return "agentix";
  const path = relative(process.cwd(), script);
  const shown = path.startsWith("..") || isAbsolute(path) ? script : path;
  return `${script.endsWith(".ts") ? "npx tsx" : "node"} ${shown}`;
}

/** `agentix demo`: what the library does, on a store that needs no server. */
export function demoCommand(): Command {
  return new Command("demo")
    .description(
      "create, append to, fork and list sessions, then print their transcripts " +
        "(in a fresh temporary File store unless --storage is given; AGENTIX_STORAGE_URL is ignored)",
    )
    .action(async (_options: unknown, command: Command) => {
      // Never the user's real store by accident: only an explicit --storage replaces the temporary directory.
      const given = command.optsWithGlobals<GlobalOptions>().storage;
      const url = given ?? `file:${await mkdtemp(join(tmpdir(), "agentix-demo-"))}`;
      const say = (line = "") => process.stdout.write(`${line}\n`);
      const indent = (lines: string[]) => {
        for (const line of lines) say(`   ${line}`.trimEnd());
      };
      say(given ? `Storage: ${redact(given)}` : `Storage: a File store in ${url.slice(5)} (a new temporary directory)`);
      say();
      await withStorage(url, async (storage) => {
        const save = async (id: string, turns: Turn[]) => {
          for (const [role, content] of turns) await storage.saveMessage(id, role, content);
        };
        const original = await storage.createSession(AGENT, { cwd: process.cwd(), title: "Weekend in Lisbon" });
        await save(original, conversation);
        say(`1. createSession  ${original}  agent "${AGENT}", then ${conversation.length} messages`);
        await save(original, followUp);
        say(`2. saveMessage    ${followUp.length} more messages appended: the user asks about Sintra`);
        const fork = await storage.forkSession(original);
        say(`3. forkSession    ${fork}  a copy: same agent, metadata and messages`);
        await save(fork, forkFollowUp);
        say(`4. saveMessage    the fork goes on with a rainy-day plan; the original is untouched`);
        say();
        say(`5. listSessions("${AGENT}"), newest first:`);
        const width = terminalWidth();
        indent(sessionTable(await storage.listSessions(AGENT), width === undefined ? undefined : width - 3));
        for (const [step, label, id] of [
          [6, "original", original],
          [7, "fork", fork],
        ] as const) {
          const record = await storage.getSession(id);
          if (!record) continue;
          say();
          say(`${step}. loadMessages: the ${label}`);
          indent(transcript(record, await storage.loadMessages(id), { width: wrapWidth() - 3, maxLines: 12 }));
        }
        const option = given ? redact(given) : /[\s'"$]/.test(url) ? `'${url}'` : url;
        say();
        say("Look around:");
        say(`   ${invocation()} sessions list ${AGENT} --storage ${option}`);
        say(`   ${invocation()} sessions show ${fork} --storage ${option}`);
      });
    });
}
