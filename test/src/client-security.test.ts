// The client against a hostile daemon (issue 10): what a server sends never drives the user's
// terminal. Fake daemons speak the wire directly, so each attack is exactly what a test sends.

import test from 'ava';

import { ErrorCode, ErrorDomain, RemoteProc, VirError, remote, xdr, type Reply } from '@virtauth/core';

import { FakeDaemon } from './fake-daemon.js';
import { removeDir } from './relay-helpers.js';
import { runProcess, tempDir } from './peers/index.js';
import { virtauthBin } from './sasl-support.js';

/** An OSC window title, a bell, screen clearing, a one-byte C1 CSI and a bidi override. */
const ESCAPES = '\u001b]0;owned\u0007\u001b[2J\u009b31m\u202e\u2066';
/** What must never reach the terminal: every control but tab and newline, C1, bidi controls. */
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

let dir: string;
test.before(async () => {
  dir = await tempDir('vcs');
});
test.after.always(async () => {
  await removeDir(dir);
});

const reply = <R>(codec: xdr.Codec<R>, value: R): Reply => ({ codec: codec as xdr.Codec<unknown>, value });
const runCli = (uri: string, ...args: string[]) => runProcess(process.execPath, [virtauthBin, '-c', uri, '--no-prompt', ...args], { env: { ...process.env, LC_ALL: 'C' }, timeoutMs: 15_000 });

test('terminal: host names, XML, and error texts from a server reach the terminal with their control characters neutralised', async (t) => {
  const dom = { name: `web${ESCAPES}`, uuid: Buffer.alloc(16, 1), id: 1 };
  const daemon = await FakeDaemon.start(dir, 'escapes', {
    handlers: {
      [RemoteProc.CONNECT_GET_HOSTNAME]: () => reply(remote.connectGetHostnameRet, { hostname: `host${ESCAPES}.example` }),
      [RemoteProc.DOMAIN_LOOKUP_BY_NAME]: () => reply(remote.domainLookupRet, { dom }),
      [RemoteProc.DOMAIN_GET_XML_DESC]: () => reply(remote.domainGetXmlDescRet, { xml: `<domain>\n\t<name>web${ESCAPES}</name>\n</domain>\n` }),
      [RemoteProc.DOMAIN_GET_INFO]: () => {
        throw new VirError({ code: ErrorCode.INTERNAL_ERROR, domain: ErrorDomain.QEMU, detail: `broken${ESCAPES}\r\nerror: forged line` });
      },
    },
  });
  try {
    const hostname = await runCli(daemon.uri(), 'hostname');
    t.is(hostname.code, 0, hostname.stderr);
    t.false(UNSAFE.test(hostname.stdout), JSON.stringify(hostname.stdout));
    t.is(hostname.stdout, 'host?]0;owned??[2J?31m??.example\n\n');

    const xml = await runCli(daemon.uri(), 'dumpxml', 'web');
    t.is(xml.code, 0, xml.stderr);
    t.false(UNSAFE.test(xml.stdout));
    t.true(xml.stdout.startsWith('<domain>\n\t<name>web?]0;owned'), 'newlines and tabs are kept');

    const failed = await runCli(daemon.uri(), 'dominfo', 'web');
    t.is(failed.code, 1);
    t.false(UNSAFE.test(failed.stderr), JSON.stringify(failed.stderr));
    t.regex(failed.stderr, /^error: internal error: broken\?\]0;owned/);
  } finally {
    await daemon.stop();
  }
});

test('terminal: a failed open prints the server\'s error text neutralised', async (t) => {
  const daemon = await FakeDaemon.start(dir, 'open-escapes', {
    handlers: {
      [RemoteProc.CONNECT_OPEN]: () => {
        throw new VirError({ code: ErrorCode.NO_CONNECT, domain: ErrorDomain.REMOTE, detail: `no${ESCAPES}` });
      },
    },
  });
  try {
    const failed = await runCli(daemon.uri(), 'hostname');
    t.is(failed.code, 1);
    t.false(UNSAFE.test(failed.stderr), JSON.stringify(failed.stderr));
    t.regex(failed.stderr, /error: failed to connect to the hypervisor\nerror: .*no\?\]0;owned\?\?\[2J/);
  } finally {
    await daemon.stop();
  }
});
