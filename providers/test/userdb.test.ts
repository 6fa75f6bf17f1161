// The user databases: verifiers only, atomic private file, reload on change, clear corruption errors.

import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, ErrorDomain, VirError } from '@virtauth/core';
import { passwordMatchesVerifier, SCRAM_SHA_256 } from '../src/sasl/scram.js';
import { FileUserDatabase } from '../src/userdb/file-user-database.js';
import { InMemoryUserDatabase } from '../src/userdb/in-memory-user-database.js';

const root = mkdtempSync(join(tmpdir(), 'virtauth-userdb-'));
test.after.always(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
const freshPath = () => join(root, `case-${++counter}`, 'private', 'users.json');
const writeFile = (path: string, content: string) => {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, content);
};

const PASSWORD = 'Tr0ub4dor&3-unique-secret';

function assertNoPassword(t: { false: (v: boolean, m?: string) => void }, text: string, password: string): void {
  t.false(text.includes(password), 'the password appears in clear');
  t.false(text.includes(Buffer.from(password).toString('base64')), 'the password appears in base64');
  t.false(text.includes(Buffer.from(password).toString('hex')), 'the password appears in hex');
}

test('FileUserDatabase: round trip, private file and directory, no plaintext', async (t) => {
  const path = freshPath();
  const db = new FileUserDatabase({ path, iterations: 4096 });
  t.deepEqual(await db.list(), []);
  t.is(await db.getVerifier('alice', 'SHA-256'), null);
  await db.setPassword('alice', PASSWORD);
  await db.setPassword('bob', 'bobs other password');

  t.deepEqual(await db.list(), ['alice', 'bob']);
  const verifier = await db.getVerifier('alice', 'SHA-256');
  t.truthy(verifier);
  t.is(verifier!.iterations, 4096);
  t.is(verifier!.salt.length, 16);
  t.true(await passwordMatchesVerifier(SCRAM_SHA_256, verifier!, PASSWORD));
  t.false(await passwordMatchesVerifier(SCRAM_SHA_256, verifier!, 'bobs other password'));
  t.is(await db.getVerifier('alice', 'SHA-1'), null);

  t.is(statSync(path).mode & 0o777, 0o600);
  t.is(statSync(join(path, '..')).mode & 0o777, 0o700);
  const text = readFileSync(path, 'utf8');
  assertNoPassword(t, text, PASSWORD);
  const document = JSON.parse(text);
  t.is(document.version, 1);
  t.deepEqual(Object.keys(document.users), ['alice', 'bob']);
  t.deepEqual(Object.keys(document.users.alice.verifiers[0]).sort(), ['hash', 'iterations', 'salt', 'serverKey', 'storedKey']);
  t.is(document.users.alice.verifiers[0].storedKey, verifier!.storedKey.toString('base64'));
  // No temporary files are left behind.
  t.deepEqual(readdirSync(join(path, '..')), ['users.json']);

  // A second instance reads the same data from disk.
  const reopened = new FileUserDatabase({ path });
  t.deepEqual(await reopened.getVerifier('alice', 'SHA-256'), verifier);

  t.true(await db.remove('alice'));
  t.false(await db.remove('alice'));
  t.deepEqual(await db.list(), ['bob']);
});

test('FileUserDatabase: a running daemon sees changes made by another process', async (t) => {
  const path = freshPath();
  const daemon = new FileUserDatabase({ path });
  const cli = new FileUserDatabase({ path });
  t.is(await daemon.getVerifier('carol', 'SHA-256'), null);
  await cli.setPassword('carol', 'first password');
  const first = await daemon.getVerifier('carol', 'SHA-256');
  t.true(await passwordMatchesVerifier(SCRAM_SHA_256, first!, 'first password'));
  await cli.setPassword('carol', 'second password');
  const second = await daemon.getVerifier('carol', 'SHA-256');
  t.true(await passwordMatchesVerifier(SCRAM_SHA_256, second!, 'second password'));
  t.notDeepEqual(second!.salt, first!.salt);
  // The daemon's own change keeps the user the CLI added.
  await daemon.setPassword('dave', 'dave password');
  t.deepEqual(await cli.list(), ['carol', 'dave']);
  await cli.remove('carol');
  t.is(await daemon.getVerifier('carol', 'SHA-256'), null);
  rmSync(path);
  t.deepEqual(await daemon.list(), []);
});

test('FileUserDatabase: concurrent changes in one process are all kept', async (t) => {
  const db = new FileUserDatabase({ path: freshPath(), iterations: 1024 });
  await Promise.all(['u1', 'u2', 'u3', 'u4', 'u5'].map((name) => db.setPassword(name, `${name} password`)));
  t.deepEqual(await db.list(), ['u1', 'u2', 'u3', 'u4', 'u5']);
});

test('FileUserDatabase: writers in separate processes at once all keep their change (the lock file)', async (t) => {
  const path = freshPath();
  const moduleUrl = new URL('../src/userdb/file-user-database.js', import.meta.url).href;
  const names = ['p1', 'p2', 'p3', 'p4', 'p5', 'p6'];
  const script = (name: string) =>
    `const { FileUserDatabase } = await import(${JSON.stringify(moduleUrl)}); const db = new FileUserDatabase({ path: ${JSON.stringify(path)}, iterations: 1024 }); for (let i = 0; i < 5; i++) await db.setPassword(${JSON.stringify(name)} + i, 'pw');`;
  const codes = await Promise.all(
    names.map(
      (name) =>
        new Promise<number | null>((resolve) => {
          const child = spawn(process.execPath, ['--input-type=module', '-e', script(name)], { stdio: ['ignore', 'ignore', 'inherit'] });
          child.once('exit', resolve);
        }),
    ),
  );
  t.deepEqual(
    codes,
    names.map(() => 0),
  );
  const expected = names.flatMap((n) => [0, 1, 2, 3, 4].map((i) => `${n}${i}`)).sort();
  t.deepEqual(await new FileUserDatabase({ path }).list(), expected);
  t.false(
    readdirSync(join(path, '..')).some((f) => f.endsWith('.lock')),
    'the lock file is gone',
  );
});

test('FileUserDatabase: a lock left by a dead process is taken over; a live one makes the change wait, then fail clearly', async (t) => {
  const path = freshPath();
  const db = new FileUserDatabase({ path, iterations: 1024, lockWaitMs: 300 });
  await db.setPassword('first', 'pw');
  const dead = spawn(process.execPath, ['-e', '']);
  await new Promise((resolve) => dead.once('exit', resolve));
  writeFileSync(`${path}.lock`, `${dead.pid}\n`);
  await db.setPassword('second', 'pw');
  t.deepEqual(await db.list(), ['first', 'second']);

  writeFileSync(`${path}.lock`, `${process.pid}\n`); // a writer that is alive and holds it
  const started = Date.now();
  const e = await t.throwsAsync(db.setPassword('third', 'pw'), { instanceOf: VirError });
  t.is(e!.code, ErrorCode.OPERATION_TIMEOUT);
  t.true(e!.message.includes(`${path}.lock`));
  t.true(Date.now() - started >= 300);
  t.deepEqual(await db.list(), ['first', 'second'], 'nothing was written without the lock');
  rmSync(`${path}.lock`);
  await db.setPassword('third', 'pw');
  t.deepEqual(await db.list(), ['first', 'second', 'third']);
});

test('FileUserDatabase: corrupt files give a clear CONF_SYNTAX error naming the file, not its content', async (t) => {
  const valid = {
    hash: 'SHA-256',
    salt: Buffer.alloc(16, 1).toString('base64'),
    iterations: 4096,
    storedKey: Buffer.alloc(32, 2).toString('base64'),
    serverKey: Buffer.alloc(32, 3).toString('base64'),
  };
  const cases: [string, RegExp][] = [
    ['{"version":1,"users":{"alice":{"verifiers":[ SECRETSTUFF', /is not valid JSON/],
    ['[]', /is not a JSON object/],
    [JSON.stringify({ version: 2, users: {} }), /has version 2; this program reads version 1/],
    [JSON.stringify({ version: 1 }), /has no "users" object/],
    [JSON.stringify({ version: 1, users: { alice: {} } }), /user "alice" has no "verifiers" array/],
    [
      JSON.stringify({ version: 1, users: { alice: { verifiers: [{ ...valid, salt: 'not base64!' }] } } }),
      /user "alice", verifier 0 has an invalid base64 "salt"/,
    ],
    [JSON.stringify({ version: 1, users: { alice: { verifiers: [{ ...valid, iterations: 0 }] } } }), /invalid "iterations"/],
    [
      JSON.stringify({ version: 1, users: { alice: { verifiers: [{ ...valid, storedKey: 'QUJD' }] } } }),
      /"storedKey" of 3 bytes; SHA-256 needs 32/,
    ],
    [JSON.stringify({ version: 1, users: { alice: { verifiers: [{ ...valid, hash: '' }] } } }), /no "hash" name/],
  ];
  for (const [content, pattern] of cases) {
    const path = freshPath();
    const db = new FileUserDatabase({ path });
    await db.list();
    writeFile(path, content);
    const error = await t.throwsAsync(db.getVerifier('alice', 'SHA-256'), { instanceOf: VirError });
    t.is(error!.code, ErrorCode.CONF_SYNTAX);
    t.is(error!.domain, ErrorDomain.CONF);
    t.true(error!.message.includes(path));
    t.regex(error!.message, pattern);
    t.false(error!.message.includes('SECRETSTUFF'));
    // Changes are refused too rather than overwriting a file we could not read.
    await t.throwsAsync(db.setPassword('bob', 'x-password'), { instanceOf: VirError });
    t.is(readFileSync(path, 'utf8'), content);
  }
  // A valid file is accepted.
  const path = freshPath();
  const db = new FileUserDatabase({ path });
  await db.list();
  writeFile(path, JSON.stringify({ version: 1, users: { alice: { verifiers: [valid] } } }));
  t.deepEqual((await db.getVerifier('alice', 'SHA-256'))?.storedKey, Buffer.alloc(32, 2));
});

test('user databases: bad names and passwords are refused without echoing the password', async (t) => {
  for (const db of [new FileUserDatabase({ path: freshPath() }), new InMemoryUserDatabase()]) {
    const empty = await t.throwsAsync(db.setPassword('alice', ''), { instanceOf: VirError });
    t.is(empty!.code, ErrorCode.INVALID_ARG);
    const control = await t.throwsAsync(db.setPassword('alice', 'bell\u0007secret-value'), { instanceOf: VirError });
    t.regex(control!.message, /password contains a character SASLprep/);
    t.false(control!.message.includes('secret-value'));
    await t.throwsAsync(db.setPassword('', PASSWORD), { instanceOf: VirError, message: /user name/ });
    await t.throwsAsync(db.setPassword('tab\tname', PASSWORD), { instanceOf: VirError, message: /user name contains/ });
    t.deepEqual(await db.list(), []);
  }
  t.throws(() => new FileUserDatabase({ path: freshPath(), iterations: 0 }), { instanceOf: VirError });
  t.throws(() => new InMemoryUserDatabase({ iterations: -1 }), { instanceOf: VirError });
});

test('user databases: names are SASLprep-normalized when stored and looked up', async (t) => {
  for (const db of [new FileUserDatabase({ path: freshPath() }), new InMemoryUserDatabase()]) {
    // Fullwidth letters are NFKC-mapped to ASCII; a soft hyphen is mapped to nothing.
    await db.setPassword('\uFF21dmin', PASSWORD);
    t.deepEqual(await db.list(), ['Admin']);
    t.truthy(await db.getVerifier('Ad\u00ADmin', 'SHA-256'));
    t.is(await db.getVerifier('admin', 'SHA-256'), null);
    t.is(await db.getVerifier('bad\u0007name', 'SHA-256'), null);
    t.true(await db.remove('\uFF21dmin'));
  }
});

test('InMemoryUserDatabase: returns copies, so callers cannot alter stored keys', async (t) => {
  const db = new InMemoryUserDatabase({ iterations: 4096 });
  await db.setPassword('alice', PASSWORD);
  const a = await db.getVerifier('alice', 'SHA-256');
  a!.storedKey.fill(0);
  const b = await db.getVerifier('alice', 'SHA-256');
  t.notDeepEqual(b!.storedKey, a!.storedKey);
  t.true(await passwordMatchesVerifier(SCRAM_SHA_256, b!, PASSWORD));
  t.deepEqual(await db.list(), ['alice']);
  t.true(await db.remove('alice'));
  t.is(await db.getVerifier('alice', 'SHA-256'), null);
});
