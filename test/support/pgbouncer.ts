// A private PgBouncer in transaction mode (issue 17), in front of the Postgres the tests use: the most common
// production pooler setup, which routes each transaction to any server connection. Started on a free loopback port
// in a temp directory, stopped (and the directory removed) by the returned function.
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Where PgBouncer is looked for: $AGENTIX_PGBOUNCER, then the Debian package's path, then $PATH. */
export function pgbouncerBinary(): string | null {
  const candidates = [process.env.AGENTIX_PGBOUNCER, "/usr/sbin/pgbouncer", "pgbouncer"].filter(
    (c): c is string => c !== undefined && c !== "",
  );
  return candidates.find((c) => spawnSync(c, ["--version"]).status === 0) ?? null;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.once("error", reject);
  });
}

const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => resolve(true));
    socket.once("error", () => resolve(false));
    socket.once("close", () => socket.destroy());
    socket.once("connect", () => socket.end());
  });

/**
 * Starts PgBouncer (`pool_mode = transaction`, at most 8 server connections, so that 32 writers share them) in front
 * of `upstream`, a `postgres://user@host:port/db` URL with trust authentication. Returns the URL to reach the same
 * database through it. PgBouncer refuses to run as root, so as root it runs as the `postgres` user.
 */
export async function startPgBouncer(
  binary: string,
  upstream: string,
): Promise<{ url: string; stop: () => Promise<void> }> {
  const target = new URL(upstream);
  const user = decodeURIComponent(target.username || "postgres");
  const database = decodeURIComponent(target.pathname.slice(1) || "postgres");
  const dir = mkdtempSync(join(tmpdir(), "agentix-pgbouncer-"));
  const port = await freePort();
  const password = decodeURIComponent(target.password);
  const server = `host=${target.hostname} port=${target.port || 5432} user=${user}${password ? ` password=${password}` : ""}`;
  writeFileSync(join(dir, "users.txt"), `"${user}" ""\n`);
  writeFileSync(
    join(dir, "pgbouncer.ini"),
    [
      "[databases]",
      `* = ${server}`,
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      `unix_socket_dir = ${dir}`,
      "auth_type = trust",
      `auth_file = ${join(dir, "users.txt")}`,
      "pool_mode = transaction",
      "default_pool_size = 8",
      "max_client_conn = 500",
      // postgres.js may send it; PgBouncer refuses unknown startup parameters otherwise.
      "ignore_startup_parameters = extra_float_digits,options",
      `logfile = ${join(dir, "pgbouncer.log")}`,
      "",
    ].join("\n"),
  );
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const [uid, gid] = ["-u", "-g"].map((flag) => Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" })));
    chownSync(dir, uid as number, gid as number);
  }
  // A shell that runs PgBouncer until its stdin closes: stop() closes it, and so does the end of this process,
  // however it ends (a test run killed midway must not leave a PgBouncer behind).
  const watch = ["-c", '"$0" "$1" & pid=$!; read -r _; kill "$pid"; wait "$pid"', binary, join(dir, "pgbouncer.ini")];
  const child: ChildProcess = asRoot
    ? spawn("runuser", ["-u", "postgres", "--", "sh", ...watch], { stdio: ["pipe", "ignore", "ignore"] })
    : spawn("sh", watch, { stdio: ["pipe", "ignore", "ignore"] });
  let exited = false;
  child.once("exit", () => {
    exited = true;
  });
  const deadline = Date.now() + 10_000;
  while (!(await accepts(port))) {
    if (exited || Date.now() > deadline) {
      child.stdin?.end();
      const log = existsSync(join(dir, "pgbouncer.log")) ? join(dir, "pgbouncer.log") : "(no log)";
      throw new Error(`PgBouncer did not start on 127.0.0.1:${port}; see ${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `postgres://${encodeURIComponent(user)}@127.0.0.1:${port}/${encodeURIComponent(database)}`,
    stop: async () => {
      if (!exited) {
        const gone = new Promise((r) => child.once("exit", r));
        child.stdin?.end();
        await Promise.race([gone, new Promise((r) => setTimeout(r, 3_000))]);
        if (!exited) child.kill("SIGKILL");
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
