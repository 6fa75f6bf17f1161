// auth.conf: key-file parsing as libvirt/GLib reads it, the (service, host) lookup with its
// fallback and errors, the file search order, and filling credentials by type.

import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CredentialType, ErrorCode, ErrorDomain, VirError, credential, makeCredentialRequester, parseUri } from '@virtauth/core';
import { AuthConfCredentialSource, AuthConfig, findAuthConfPath, loadAuthConfSource } from '../src/credentials/auth-conf.js';

const SAMPLE = `
# credentials for the lab
[credentials-lab]
username=alice
authname=alice-auth
password=s3cret
realm=LAB.EXAMPLE

[credentials-fallback]
authname=guest
password=guest-pw

[auth-libvirt-hostA]
credentials=lab

[auth-libvirt-default]
credentials=fallback

[auth-xenapi-xen1.example]
credentials=lab
`;

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'virtauth-authconf-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function writeFile(file: string, text: string): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  return file;
}

// ---------------------------------------------------------------------------------------------
// Lookup

test('a host group maps to its credential set', (t) => {
  const conf = AuthConfig.parse(SAMPLE);
  t.is(conf.lookup('libvirt', 'hostA', 'username'), 'alice');
  t.is(conf.lookup('libvirt', 'hostA', 'authname'), 'alice-auth');
  t.is(conf.lookup('libvirt', 'hostA', 'password'), 's3cret');
  t.is(conf.lookup('libvirt', 'hostA', 'realm'), 'LAB.EXAMPLE');
  t.is(conf.lookup('xenapi', 'xen1.example', 'password'), 's3cret');
});

test('an unknown host falls back to the service default group', (t) => {
  const conf = AuthConfig.parse(SAMPLE);
  t.is(conf.lookup('libvirt', 'hostZ', 'authname'), 'guest');
  t.is(conf.lookup('libvirt', 'hostZ', 'username'), null, 'a key missing from the set is no value');
});

test('no host means localhost, which here falls back to the default group', (t) => {
  const conf = AuthConfig.parse(`${SAMPLE}\n[credentials-local]\nauthname=root\n[auth-libvirt-localhost]\ncredentials=local\n`);
  t.is(conf.lookup('libvirt', null, 'authname'), 'root');
  t.is(conf.lookup('libvirt', '', 'authname'), 'root');
  t.is(AuthConfig.parse(SAMPLE).lookup('libvirt', null, 'authname'), 'guest');
});

test('a service with neither a host nor a default group has no values (not an error)', (t) => {
  const conf = AuthConfig.parse(SAMPLE);
  t.is(conf.lookup('esx', 'hostA', 'password'), null);
});

test("a mapping group without 'credentials' is CONF_SYNTAX in domain NONE, as libvirt reports it", (t) => {
  const conf = AuthConfig.parse('[auth-libvirt-hostA]\nfoo=bar\n', '/etc/x/auth.conf');
  const e = t.throws(() => conf.lookup('libvirt', 'hostA', 'password'), { instanceOf: VirError });
  t.is(e!.code, ErrorCode.CONF_SYNTAX);
  t.is(e!.domain, ErrorDomain.NONE);
  t.is(e!.message, "configuration file syntax error: Missing item 'credentials' in group 'auth-libvirt-hostA' in '/etc/x/auth.conf'");
});

test('a mapping to a credential set that does not exist is CONF_SYNTAX', (t) => {
  const conf = AuthConfig.parse('[auth-libvirt-default]\ncredentials=nope\n', 'f.conf');
  const e = t.throws(() => conf.lookup('libvirt', 'hostQ', 'authname'), { instanceOf: VirError });
  t.is(e!.code, ErrorCode.CONF_SYNTAX);
  t.is(e!.domain, ErrorDomain.NONE);
  t.is(
    e!.message,
    "configuration file syntax error: Missing group 'credentials-nope' referenced from group 'auth-libvirt-default' in 'f.conf'",
  );
});

// ---------------------------------------------------------------------------------------------
// Key-file syntax

test('comments, blank lines and surrounding whitespace', (t) => {
  const conf = AuthConfig.parse(
    [
      '; semicolon comment',
      '   # indented comment',
      '',
      '  [credentials-w]  ',
      '  authname   =   bob',
      '\tpassword=pw',
      '[auth-libvirt-default]',
      'credentials = w',
    ].join('\n'),
  );
  t.is(conf.lookup('libvirt', 'h', 'authname'), 'bob');
  t.is(conf.lookup('libvirt', 'h', 'password'), 'pw');
});

test('whitespace after a value is kept, as GLib keeps it', (t) => {
  const conf = AuthConfig.parse('[credentials-w]\npassword=pw  \n[auth-libvirt-default]\ncredentials=w\n');
  t.is(conf.lookup('libvirt', 'h', 'password'), 'pw  ');
});

test('CRLF line endings are accepted', (t) => {
  const conf = AuthConfig.parse('[credentials-w]\r\npassword=pw\r\n[auth-libvirt-default]\r\ncredentials=w\r\n');
  t.is(conf.lookup('libvirt', 'h', 'password'), 'pw');
});

test('the later of duplicate keys and groups wins; groups merge', (t) => {
  const conf = AuthConfig.parse(
    '[credentials-d]\npassword=old\nauthname=a\n[auth-libvirt-default]\ncredentials=d\n[credentials-d]\npassword=new\n',
  );
  t.is(conf.lookup('libvirt', 'h', 'password'), 'new');
  t.is(conf.lookup('libvirt', 'h', 'authname'), 'a');
});

test('values may contain = and GLib escapes', (t) => {
  const conf = AuthConfig.parse('[credentials-e]\npassword=a=b\\sc\\\\d\\te\n[auth-libvirt-default]\ncredentials=e\n');
  t.is(conf.lookup('libvirt', 'h', 'password'), 'a=b c\\d\te');
});

test('syntax errors name the file and line but never the line content', (t) => {
  const cases: [string, RegExp][] = [
    ['[credentials-x]\npassword hunter2\n', /line 2: not a group header, key=value pair or comment/],
    ['password=hunter2\n[credentials-x]\n', /line 1: key 'password' appears before the first group/],
    ['[credentials-x\npassword=hunter2\n', /line 1: malformed group header/],
    ['[credentials-x]\n=hunter2\n', /line 2: key=value pair without a key/],
    ['[credentials-x]\npassword=hunter2\\q\n', /line 2: the value contains an invalid escape sequence/],
    ['[credentials-x]\npassword=hunter2\\\n', /line 2: the value ends with an escape character/],
  ];
  for (const [text, message] of cases) {
    const e = t.throws(() => AuthConfig.parse(text, '/home/u/.config/libvirt/auth.conf'), { instanceOf: VirError, message });
    t.is(e!.code, ErrorCode.CONF_SYNTAX);
    t.regex(e!.message, /auth file '\/home\/u\/\.config\/libvirt\/auth\.conf'/);
    t.false(e!.message.includes('hunter2'), 'the secret stays out of the message');
  }
});

// ---------------------------------------------------------------------------------------------
// Filling credentials

test('the source fills each credential type from its auth.conf key and leaves the rest', async (t) => {
  const source = new AuthConfCredentialSource(AuthConfig.parse(SAMPLE));
  const creds = [
    credential(CredentialType.USERNAME, 'user'),
    credential(CredentialType.AUTHNAME, 'auth'),
    credential(CredentialType.PASSPHRASE, 'pass'),
    credential(CredentialType.REALM, 'realm'),
    credential(CredentialType.NOECHOPROMPT, 'otp'),
    credential(CredentialType.ECHOPROMPT, 'token'),
  ];
  await source.fill(creds, 'libvirt', 'hostA');
  t.deepEqual(
    creds.map((c) => c.result),
    ['alice', 'alice-auth', 's3cret', 'LAB.EXAMPLE', null, null],
  );
});

test('the source does not overwrite an answer already there', async (t) => {
  const source = new AuthConfCredentialSource(AuthConfig.parse(SAMPLE));
  const c = credential(CredentialType.AUTHNAME, 'auth');
  c.result = 'given';
  await source.fill([c], 'libvirt', 'hostA');
  t.is(c.result, 'given');
});

test('in the credential pipeline auth.conf answers first and the callback gets only the rest', async (t) => {
  const source = new AuthConfCredentialSource(AuthConfig.parse('[credentials-p]\nauthname=bob\n[auth-libvirt-default]\ncredentials=p\n'));
  const asked: number[] = [];
  const requester = makeCredentialRequester([source], {
    credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
    callback: (creds) => {
      for (const c of creds) {
        asked.push(c.type);
        c.result = 'typed';
      }
    },
  });
  const creds = [credential(CredentialType.AUTHNAME, 'name'), credential(CredentialType.PASSPHRASE, 'password')];
  await requester(creds, { service: 'libvirt', host: 'h1' });
  t.deepEqual(asked, [CredentialType.PASSPHRASE]);
  t.deepEqual(
    creds.map((c) => c.result),
    ['bob', 'typed'],
  );
});

test('a broken mapping fails the fill with CONF_SYNTAX', async (t) => {
  const source = new AuthConfCredentialSource(AuthConfig.parse('[auth-libvirt-default]\nx=y\n'));
  await t.throwsAsync(async () => source.fill([credential(CredentialType.AUTHNAME, 'n')], 'libvirt', 'h'), {
    instanceOf: VirError,
    message: /Missing item 'credentials'/,
  });
});

// ---------------------------------------------------------------------------------------------
// Which file

test('search order: LIBVIRT_AUTH_FILE, then authfile=, then XDG config, then the system file', (t) => {
  const dir = tempDir(t);
  const envFile = path.join(dir, 'env.conf');
  const uriFile = path.join(dir, 'uri.conf');
  const xdg = path.join(dir, 'xdg');
  const xdgFile = writeFile(path.join(xdg, 'libvirt', 'auth.conf'), '');
  const systemFile = writeFile(path.join(dir, 'etc', 'auth.conf'), '');
  const home = path.join(dir, 'home');

  t.is(
    findAuthConfPath({ env: { LIBVIRT_AUTH_FILE: envFile, XDG_CONFIG_HOME: xdg }, uriAuthFile: uriFile, systemPath: systemFile }),
    envFile,
  );
  t.is(findAuthConfPath({ env: { XDG_CONFIG_HOME: xdg }, uriAuthFile: uriFile, systemPath: systemFile }), uriFile);
  t.is(findAuthConfPath({ env: { XDG_CONFIG_HOME: xdg }, systemPath: systemFile }), xdgFile);
  t.is(findAuthConfPath({ env: { HOME: home }, systemPath: systemFile }), systemFile);
  t.is(findAuthConfPath({ env: { HOME: home }, systemPath: path.join(dir, 'none.conf') }), null);
});

test('without XDG_CONFIG_HOME the user file is ~/.config/libvirt/auth.conf', (t) => {
  const dir = tempDir(t);
  const userFile = writeFile(path.join(dir, '.config', 'libvirt', 'auth.conf'), '');
  t.is(findAuthConfPath({ env: { HOME: dir }, systemPath: path.join(dir, 'none') }), userFile);
});

test('the default locations are skipped when unreadable; explicit ones are taken as given', (t) => {
  const dir = tempDir(t);
  const xdg = path.join(dir, 'xdg');
  // A directory where the file should be is not a readable file.
  fs.mkdirSync(path.join(xdg, 'libvirt', 'auth.conf'), { recursive: true });
  const systemFile = writeFile(path.join(dir, 'etc', 'auth.conf'), '');
  t.is(findAuthConfPath({ env: { XDG_CONFIG_HOME: xdg }, systemPath: systemFile }), systemFile);
  const missing = path.join(dir, 'missing.conf');
  t.is(findAuthConfPath({ env: { LIBVIRT_AUTH_FILE: missing }, systemPath: systemFile }), missing);
  t.is(findAuthConfPath({ env: {}, uriAuthFile: missing, systemPath: systemFile }), missing);
});

test('loadAuthConfSource reads the URI authfile= and fills from it', async (t) => {
  const dir = tempDir(t);
  const file = writeFile(path.join(dir, 'a b.conf'), '[credentials-u]\nauthname=carol\n[auth-libvirt-srv.example]\ncredentials=u\n');
  const uri = parseUri(`qemu+tcp://srv.example/system?authfile=${encodeURIComponent(file)}`);
  const source = await loadAuthConfSource(uri, { env: { HOME: dir }, systemPath: path.join(dir, 'none') });
  t.truthy(source);
  const c = credential(CredentialType.AUTHNAME, 'name');
  await source!.fill([c], 'libvirt', 'srv.example');
  t.is(c.result, 'carol');
  t.is(source!.config.path, file);
});

test('loadAuthConfSource resolves null when no file applies', async (t) => {
  const dir = tempDir(t);
  t.is(await loadAuthConfSource(parseUri('test:///default'), { env: { HOME: dir }, systemPath: path.join(dir, 'none') }), null);
  t.is(await loadAuthConfSource(undefined, { env: { HOME: dir }, systemPath: path.join(dir, 'none') }), null);
});

test('an explicit file that cannot be read is an error naming it, not a silent fallback', async (t) => {
  const dir = tempDir(t);
  const systemFile = writeFile(path.join(dir, 'etc', 'auth.conf'), '[credentials-s]\nauthname=sys\n');
  const missing = path.join(dir, 'missing.conf');
  const e = await t.throwsAsync(loadAuthConfSource(undefined, { env: { LIBVIRT_AUTH_FILE: missing }, systemPath: systemFile }), {
    instanceOf: VirError,
  });
  t.is(e!.code, ErrorCode.READ_FAILED);
  t.is(e!.domain, ErrorDomain.NONE);
  t.is(e!.message, `Unable to read auth file '${missing}': ENOENT`);
});

test('a syntax error in the file found is reported with its path', async (t) => {
  const dir = tempDir(t);
  const file = writeFile(path.join(dir, 'bad.conf'), '[credentials-x]\nthis line is wrong\n');
  await t.throwsAsync(loadAuthConfSource(undefined, { env: { LIBVIRT_AUTH_FILE: file } }), {
    instanceOf: VirError,
    message: `configuration file syntax error: auth file '${file}' line 2: not a group header, key=value pair or comment`,
  });
});

test('hypervisor drivers read their login name from username=, SASL from authname=, as libvirt does', (t) => {
  const conf = AuthConfig.parse(
    '[credentials-x]\nusername=root\nauthname=alice\npassword=pw\n[auth-xenapi-xen1]\ncredentials=x\n[auth-libvirt-xen1]\ncredentials=x\n',
    'auth.conf',
  );
  const source = new AuthConfCredentialSource(conf);
  const forDriver = [credential(CredentialType.AUTHNAME, 'Enter username for xen1 [root]', 'xen1', 'root')];
  source.fill(forDriver, 'xenapi', 'xen1');
  t.is(forDriver[0]!.result, 'root');
  const forSasl = [credential(CredentialType.AUTHNAME, 'Please enter your authentication name', 'Authentication Name')];
  source.fill(forSasl, 'libvirt', 'xen1');
  t.is(forSasl[0]!.result, 'alice');
});
