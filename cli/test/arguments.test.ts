// The virtauth command line itself, run as a user runs it, on the in-process test driver: global
// options before the command (as virsh), --json output one object per line, errors on stderr
// with exit status 1.

import test from 'ava';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CLIENT_VERSION } from '../src/commands.js';

const cliBin = fileURLToPath(new URL('../../bin/virtauth.js', import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function virtauth(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [cliBin, ...args],
      { env: { ...process.env, VIRTAUTH_DEFAULT_URI: 'test:///default' } },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code) : 0, stdout, stderr }),
    );
  });
}

const TEST_DOMAIN = { name: 'test', uuid: '6695eb01-f6a4-8304-79aa-97f2502e193f', id: 1 };

test("list: virsh's table, then a blank line; with --json one line, the JSON array, and no blank line", async (t) => {
  const table = await virtauth('-c', 'test:///default', 'list', '--all');
  t.is(table.code, 0, table.stderr);
  t.is(table.stdout, ' Id   Name   State\n----------------------\n 1    test   running\n\n');
  const json = await virtauth('--json', 'list', '--all');
  t.is(json.code, 0, json.stderr);
  t.deepEqual(JSON.parse(json.stdout), [{ ...TEST_DOMAIN, state: 1 }]);
  t.is(json.stdout.split('\n').length, 2, 'one line');
});

test('a domain verb with --json prints one object naming the domain and the action', async (t) => {
  const text = await virtauth('suspend', 'test');
  t.is(text.code, 0, text.stderr);
  t.is(text.stdout, "Domain 'test' suspended\n\n");
  const json = await virtauth('--json', 'suspend', '6695eb01-f6a4-8304-79aa-97f2502e193f');
  t.is(json.code, 0, json.stderr);
  t.is(json.stdout, `${JSON.stringify({ domain: TEST_DOMAIN, action: 'suspended' })}\n`);
});

test('global options go before the command: --json after it is an unknown option of that command', async (t) => {
  const run = await virtauth('list', '--json');
  t.is(run.code, 1);
  t.is(run.stdout, '');
  t.regex(run.stderr, /^error: unknown option '--json'\n/);
  t.regex(run.stderr, /Usage: virtauth list \[options\]/);
});

test('errors go to stderr with status 1 and nothing on stdout: an unknown domain, option, command, a missing argument', async (t) => {
  const missing = await virtauth('dominfo', 'no-such-domain');
  t.deepEqual(missing, { code: 1, stdout: '', stderr: "error: failed to get domain 'no-such-domain'\n\n" });
  for (const args of [['--bogus'], ['frobnicate'], ['dominfo']]) {
    const run = await virtauth(...args);
    t.is(run.code, 1, args.join(' '));
    t.is(run.stdout, '', args.join(' '));
    t.regex(
      run.stderr,
      /^error: (unknown option '--bogus'|unknown command 'frobnicate'|missing required argument 'domain')\n/,
      args.join(' '),
    );
  }
});

test("a URI that cannot be opened: both of virsh's error lines", async (t) => {
  const run = await virtauth('-c', 'test+unix:///default?socket=/nonexistent/virtauth-sock', '--no-prompt', 'hostname');
  t.is(run.code, 1);
  t.is(run.stdout, '');
  t.regex(run.stderr, /^error: failed to connect to the hypervisor\nerror: [^\n]+\n\n$/);
});

test('--version prints the client version', async (t) => {
  const run = await virtauth('--version');
  t.deepEqual(run, { code: 0, stdout: `${CLIENT_VERSION}\n`, stderr: '' });
});
