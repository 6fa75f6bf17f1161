// The XenAPI test server as a process of its own, so it can run inside a network namespace next
// to the daemon that uses it. Protocol on stdio, one JSON object per line:
//   stdin, first line: {"users": {name: password}}    (stdin, not argv: argv is visible to all)
//   stdout: {"port": N} once listening
//   stdin "sessions" → stdout {"sessions": [username, ...]} (sessions currently logged in)
// It exits when stdin closes or on SIGTERM.

import { createInterface } from 'node:readline';

import { startXenApiServer, type XenApiServer } from './fixtures/xenapi-server.js';

let server: XenApiServer | null = null;
const lines = createInterface({ input: process.stdin });

async function shutdown(code: number): Promise<never> {
  await server?.close();
  process.exit(code);
}

lines.on('line', (line) => {
  void (async () => {
    if (server === null) {
      const { users } = JSON.parse(line) as { users: Record<string, string> };
      server = await startXenApiServer({ users });
      process.stdout.write(`${JSON.stringify({ port: server.port })}\n`);
    } else if (line === 'sessions') {
      process.stdout.write(`${JSON.stringify({ sessions: [...server.sessions.values()].map((s) => s.username) })}\n`);
    } else {
      process.stderr.write(`relay-xenapi-child: unknown command ${JSON.stringify(line.slice(0, 40))}\n`);
    }
  })().catch((e: unknown) => {
    process.stderr.write(`relay-xenapi-child: ${e instanceof Error ? e.message : String(e)}\n`);
    void shutdown(1);
  });
});
lines.on('close', () => void shutdown(0));
process.once('SIGTERM', () => void shutdown(0));
