// The console credential callback: piped answers across sequential prompts, defaults, end of
// input, hidden secrets, the origin line, EXTERNAL, cancellation, and a real piped process.

import test from 'ava';
import { spawn } from 'node:child_process';
import { PassThrough, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import {
  CredentialType,
  ErrorCode,
  ErrorDomain,
  VirError,
  credential,
  makeCredentialRequester,
  type Credential,
  type CredentialRequestInfo,
} from '@virtauth/core';
import { CONSOLE_CREDENTIAL_TYPES, createConsoleAuth, describeOrigin } from '../src/credentials/console-prompter.js';

class Capture extends Writable {
  text = '';
  isTTY?: boolean;
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    this.emit('text');
    done();
  }

  /** Resolves once the output shows `prompt` for the `nth` time: the prompter is then waiting for its answer. */
  shows(prompt: string, nth = 1): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (this.text.split(prompt).length - 1 < nth) return;
        this.off('text', check);
        resolve();
      };
      this.on('text', check);
      check();
    });
  }
}

const NAME_PROMPT = 'Please enter your authentication name: ';
const PASSWORD_PROMPT = 'Please enter your password: ';

const info = (extra: Partial<CredentialRequestInfo> = {}): CredentialRequestInfo => ({
  service: 'libvirt',
  host: 'localhost',
  origin: [],
  ...extra,
});
const authname = () => credential(CredentialType.AUTHNAME, 'Please enter your authentication name', 'Authentication Name');
const password = () => credential(CredentialType.PASSPHRASE, 'Please enter your password', 'Password');

function piped(...chunks: string[]) {
  const input = new PassThrough();
  const output = new Capture();
  // Feed the answers asynchronously, in the given pieces, as a pipe would.
  void (async () => {
    for (const c of chunks) {
      await new Promise((r) => setImmediate(r));
      if (c === '<EOF>') input.end();
      else input.write(c);
    }
  })();
  return { input, output, auth: createConsoleAuth({ input, output }) };
}

test("advertises virConnectAuthPtrDefault's credential types", (t) => {
  t.deepEqual([...CONSOLE_CREDENTIAL_TYPES], [2, 6, 8, 5, 7, 9]);
});

test('piped answers fill two prompts in sequence', async (t) => {
  const { output, auth } = piped('alice\nsecret\n');
  const creds = [authname(), password()];
  t.true(await auth.callback(creds, info()));
  t.deepEqual(
    creds.map((c) => c.result),
    ['alice', 'secret'],
  );
  t.is(output.text, 'Please enter your authentication name: Please enter your password: ');
});

test('answers split across chunks anywhere, with CRLF endings, still line up', async (t) => {
  const { auth } = piped('ali', 'ce\r\nsec', 'ret', '\r\n');
  const creds = [authname(), password()];
  t.true(await auth.callback(creds, info()));
  t.deepEqual(
    creds.map((c) => c.result),
    ['alice', 'secret'],
  );
});

test('one input stream is shared by successive callbacks and by separate console auths', async (t) => {
  const input = new PassThrough();
  const output = new Capture();
  input.write('one\ntwo\nthree\nfour\n');
  const first = [authname(), password()];
  t.true(await createConsoleAuth({ input, output }).callback(first, info()));
  const second = [credential(CredentialType.REALM, 'Realm')];
  t.true(await createConsoleAuth({ input, output }).callback(second, info()));
  t.deepEqual(
    [...first, ...second].map((c) => c.result),
    ['one', 'two', 'three'],
  );
});

test('an empty answer takes the default, or the empty string without one', async (t) => {
  const { auth } = piped('\n\n');
  const withDefault = credential(CredentialType.AUTHNAME, 'Enter username for esx1 [root]', 'esx1', 'root');
  const withoutDefault = credential(CredentialType.ECHOPROMPT, 'Token');
  t.true(await auth.callback([withDefault, withoutDefault], info()));
  t.is(withDefault.result, 'root');
  t.is(withoutDefault.result, '');
});

test('end of input leaves the credential unfilled and reports failure', async (t) => {
  const { auth } = piped('alice\n', '<EOF>');
  const creds = [authname(), password()];
  t.false(await auth.callback(creds, info()));
  t.is(creds[0]!.result, 'alice');
  t.is(creds[1]!.result, null);
});

test('a last line without a newline still counts as an answer', async (t) => {
  const { auth } = piped('alice\nsecret', '<EOF>');
  const creds = [authname(), password()];
  t.true(await auth.callback(creds, info()));
  t.is(creds[1]!.result, 'secret');
});

test('after end of input every later prompt fails at once', async (t) => {
  const { auth } = piped('<EOF>');
  t.false(await auth.callback([authname()], info()));
  t.false(await auth.callback([password()], info()));
});

test('through the credential pipeline, end of input is AUTH_FAILED, not a hang', async (t) => {
  const { auth } = piped('<EOF>');
  const requester = makeCredentialRequester([], auth);
  const e = await t.throwsAsync(requester([authname(), password()], { service: 'libvirt', host: 'localhost' }), { instanceOf: VirError });
  t.is(e!.code, ErrorCode.AUTH_FAILED);
  t.is(e!.message, 'authentication failed: Failed to collect auth credentials');
});

test('the secret never reaches the output', async (t) => {
  const { output, auth } = piped('alice\nhunter2-secret\notp-999\n');
  const creds = [authname(), password(), credential(CredentialType.NOECHOPROMPT, 'One-time code')];
  t.true(await auth.callback(creds, info()));
  t.deepEqual(
    creds.map((c) => c.result),
    ['alice', 'hunter2-secret', 'otp-999'],
  );
  t.false(output.text.includes('hunter2'));
  t.false(output.text.includes('otp-999'));
  t.false(output.text.includes('alice'), 'piped answers are not echoed either');
});

test('the origin line says who asks, driver first, then each daemon hop', async (t) => {
  const { output, auth } = piped('pw\n');
  const origin = [
    { daemon: 'virtauthd@hostB', driver: 'xenapi', uri: 'xenapi://xen1.example/' },
    { daemon: 'virtauthd@hostA', driver: 'remote', uri: 'xenapi+tls://hostB/' },
  ];
  t.true(await auth.callback([password()], info({ service: 'xenapi', host: 'xen1.example', origin })));
  t.is(
    output.text,
    '*** Credential request relayed by a daemon: it does not come from this computer ***\n' +
      'Connected daemon: no verified connection\n' +
      'xenapi on xen1.example via virtauthd@hostB via virtauthd@hostA asks for credentials\n' +
      '[relayed] Please enter your password: ',
  );
});

test('no origin line for a local request', (t) => {
  t.is(describeOrigin({ host: 'h', origin: [] }), null);
  t.is(describeOrigin({ host: 'h', origin: [{ daemon: 'd@x', driver: 'esx', uri: 'esx://h/' }] }), 'esx on h via d@x asks for credentials');
});

test('control characters from remote text are neutralised before printing', async (t) => {
  const { output, auth } = piped('x\n');
  const origin = [{ daemon: 'evil\u001b[2J', driver: 'xen\u0007api', uri: '' }];
  const c = credential(CredentialType.ECHOPROMPT, 'Token\u001b]0;owned\u0007\u202e');
  t.true(await auth.callback([c], info({ host: 'h\r\nost', origin })));
  // eslint-disable-next-line no-control-regex -- the test looks for control characters
  t.false(/[\u0000-\u0008\u000b-\u001f\u007f\u202e]/.test(output.text));
  t.is(
    output.text.split('\n').slice(1).join('\n'),
    'Connected daemon: no verified connection\nxen?api on h??ost via evil?[2J asks for credentials\n[relayed] Token?]0;owned??: ',
  );
});

test('EXTERNAL is accepted only for the PolicyKit challenge', async (t) => {
  const { output, auth } = piped();
  const polkit = credential(CredentialType.EXTERNAL, 'PolicyKit', 'PolicyKit');
  t.true(await auth.callback([polkit], info()));
  t.is(polkit.result, '');
  const other = credential(CredentialType.EXTERNAL, 'Something', 'Kerberos');
  t.false(await auth.callback([other], info()));
  t.is(other.result, null);
  t.is(output.text, '', 'nothing is prompted for EXTERNAL');
});

test('a request the console cannot answer fails before anything is asked', async (t) => {
  const { output, auth } = piped('alice\n');
  const creds = [authname(), credential(CredentialType.LANGUAGE, 'Language')];
  t.false(await auth.callback(creds, info()));
  t.is(output.text, '');
  t.is(creds[0]!.result, null);
  const mixed = [authname(), credential(CredentialType.EXTERNAL, 'x', 'not-polkit')];
  t.false(await auth.callback(mixed, info()));
  // The line was not consumed by the refused requests.
  const later = [authname()];
  t.true(await auth.callback(later, info()));
  t.is(later[0]!.result, 'alice');
});

test('noPrompt fails at once with AUTH_UNAVAILABLE', async (t) => {
  const input = new PassThrough();
  const auth = createConsoleAuth({ input, output: new Capture(), noPrompt: true });
  const e = await t.throwsAsync(async () => auth.callback([authname()], info()), { instanceOf: VirError });
  t.is(e!.code, ErrorCode.AUTH_UNAVAILABLE);
  t.is(e!.domain, ErrorDomain.AUTH);
  t.is(e!.message, 'authentication unavailable: no interactive prompt available');
});

test('a withdrawn request stops waiting, and the next prompt still gets the next line', async (t) => {
  const input = new PassThrough();
  const output = new Capture();
  const auth = createConsoleAuth({ input, output });
  const controller = new AbortController();
  const waiting = auth.callback([authname()], info({ signal: controller.signal }));
  await output.shows(NAME_PROMPT);
  controller.abort(new Error('client went away'));
  const e = await t.throwsAsync(Promise.resolve(waiting), { instanceOf: VirError });
  t.is(e!.code, ErrorCode.AUTH_CANCELLED);
  input.write('bob\n');
  const next = [authname()];
  t.true(await auth.callback(next, info()));
  t.is(next[0]!.result, 'bob');
});

test('a deadline that passes is OPERATION_TIMEOUT', async (t) => {
  const input = new PassThrough();
  const auth = createConsoleAuth({ input, output: new Capture() });
  const started = Date.now();
  const e = await t.throwsAsync(Promise.resolve(auth.callback([password()], info({ deadline: Date.now() + 50 }))), {
    instanceOf: VirError,
  });
  t.is(e!.code, ErrorCode.OPERATION_TIMEOUT);
  t.true(Date.now() - started < 2000);
});

// ---------------------------------------------------------------------------------------------
// Terminal input (through `read`), with a stream that claims to be a TTY

function fakeTerminal() {
  const input = new PassThrough() as PassThrough & { isTTY: boolean; setRawMode(mode: boolean): void; rawModes: boolean[] };
  input.isTTY = true;
  input.rawModes = [];
  input.setRawMode = (mode: boolean) => {
    input.rawModes.push(mode);
  };
  const output = new Capture();
  output.isTTY = true;
  return { input, output };
}

/** Types `text` once `prompt` is up, as a person answering it does. */
const typeAt = async (output: Capture, prompt: string, input: PassThrough, text: string) => {
  await output.shows(prompt);
  input.write(text);
};

test('terminal: an echoed answer is shown, a secret is not', async (t) => {
  const { input, output } = fakeTerminal();
  const auth = createConsoleAuth({ input, output });
  const creds: Credential[] = [authname(), password()];
  const answered = auth.callback(creds, info());
  await typeAt(output, NAME_PROMPT, input, 'alice\r');
  await typeAt(output, PASSWORD_PROMPT, input, 'hunter2-secret\r');
  t.true(await answered);
  t.deepEqual(
    creds.map((c) => c.result),
    ['alice', 'hunter2-secret'],
  );
  t.true(output.text.includes('Please enter your authentication name: '));
  t.true(output.text.includes('alice'), 'the name is echoed');
  t.true(output.text.includes('Please enter your password: '));
  t.false(output.text.includes('hunter2'), 'the secret is not echoed');
  t.true(input.rawModes.includes(true), 'the terminal was put in raw mode');
  t.is(input.rawModes.at(-1), false, 'and restored');
});

test('terminal: Ctrl-D at an empty prompt is end of input, and the callback fails', async (t) => {
  const { input, output } = fakeTerminal();
  const auth = createConsoleAuth({ input, output });
  const creds = [password()];
  const answered = auth.callback(creds, info());
  await typeAt(output, PASSWORD_PROMPT, input, '\u0004');
  t.false(await answered);
  t.is(creds[0]!.result, null);
});

test('terminal: Ctrl-C cancels with AUTH_CANCELLED', async (t) => {
  const { input, output } = fakeTerminal();
  const auth = createConsoleAuth({ input, output });
  const answered = auth.callback([password()], info());
  await typeAt(output, PASSWORD_PROMPT, input, '\u0003');
  const e = await t.throwsAsync(Promise.resolve(answered), { instanceOf: VirError });
  t.is(e!.code, ErrorCode.AUTH_CANCELLED);
});

test('terminal: a withdrawn request releases the terminal', async (t) => {
  const { input, output } = fakeTerminal();
  const auth = createConsoleAuth({ input, output });
  const controller = new AbortController();
  const answered = auth.callback([password()], info({ signal: controller.signal }));
  await output.shows(PASSWORD_PROMPT);
  controller.abort(new Error('gone'));
  await t.throwsAsync(Promise.resolve(answered), { instanceOf: VirError, message: /withdrawn/ });
  t.is(input.rawModes.at(-1), false);
  t.is(input.listenerCount('keypress'), 0, 'no readline is left listening');
});

// ---------------------------------------------------------------------------------------------
// A real process with answers piped to its stdin

const here = path.dirname(fileURLToPath(import.meta.url));
const prompterModule = path.join(here, '..', 'src', 'credentials', 'console-prompter.js');

function runPrompter(stdin: string | null): Promise<{ stdout: string; code: number | null; ms: number }> {
  const script = `
    import { createConsoleAuth } from ${JSON.stringify(prompterModule)};
    const creds = [
      { type: 2, prompt: 'Please enter your authentication name', challenge: null, defresult: null, result: null },
      { type: 5, prompt: 'Please enter your password', challenge: null, defresult: null, result: null },
    ];
    const ok = await createConsoleAuth().callback(creds, { service: 'libvirt', host: 'localhost', origin: [] });
    process.stdout.write('\\n' + JSON.stringify({ ok, results: creds.map((c) => c.result) }) + '\\n');
  `;
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (c) => (stdout += c));
    const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(killer);
      resolve({ stdout, code, ms: Date.now() - started });
    });
    if (stdin !== null) child.stdin.write(stdin);
    child.stdin.end();
  });
}

test('a process with two answers piped to stdin fills both and exits', async (t) => {
  const { stdout, code } = await runPrompter('alice\nsecret\nextra line\n');
  t.is(code, 0);
  const [prompts, json] = stdout.split('\n');
  t.is(prompts, 'Please enter your authentication name: Please enter your password: ');
  t.deepEqual(JSON.parse(json!), { ok: true, results: ['alice', 'secret'] });
});

test('a process whose stdin is empty fails fast instead of hanging', async (t) => {
  const { stdout, code, ms } = await runPrompter(null);
  t.is(code, 0);
  t.deepEqual(JSON.parse(stdout.split('\n')[1]!), { ok: false, results: [null, null] });
  t.true(ms < 8000);
});

test('a relayed request always gets the header naming the verified daemon, and [relayed] prompts, every time; even with no origin chain', async (t) => {
  const { output, auth } = piped('a\nb\nc\n');
  const via = {
    daemon: 'virtauthd@hostA\u001b[2J',
    identity: { transport: 'unix' as const, socket: '/run/virtauth/virtauth-sock' },
    key: 'unix:/run/virtauth/virtauth-sock',
  };
  const origin = [{ daemon: 'virtauthd@hostA', driver: 'xenapi', uri: 'xenapi://xen1/' }];
  const header =
    '*** Credential request relayed by a daemon: it does not come from this computer ***\n' +
    'Connected daemon: virtauthd@hostA?[2J (unix socket /run/virtauth/virtauth-sock)\n';
  t.true(await auth.callback([authname()], info({ host: 'xen1', origin, via })));
  t.true(await auth.callback([authname()], info({ host: 'xen1', origin, via })));
  const asked = `${header}xenapi on xen1 via virtauthd@hostA asks for credentials\n[relayed] Please enter your authentication name: `;
  t.is(output.text, asked + asked, 'the second request of the same daemon is marked as plainly as the first');
  const before = output.text.length;
  t.true(await auth.callback([authname()], info({ host: 'xen1', origin: [], via })));
  t.is(
    output.text.slice(before),
    `${header}A driver for xen1 asks for credentials (no origin chain given)\n[relayed] Please enter your authentication name: `,
  );
});
