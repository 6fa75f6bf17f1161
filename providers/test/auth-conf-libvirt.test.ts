// Cross-check of our auth.conf reading against libvirt itself: the same files are given to
// libvirt's test driver (whose <auth> element makes it look the user name and password up in
// auth.conf, service "test", host "localhost") through python3-libvirt. The callback always
// answers wrongly, so libvirt's connection succeeds exactly when the file supplied both the right
// user name and the right password; errors are compared by code, domain and text.

import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VirError } from '@virtauth/core';
import { AuthConfig } from '../src/credentials/auth-conf.js';

const PYTHON = '/usr/bin/python3';
const haveLibvirt = fs.existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import libvirt'], { stdio: 'ignore' }).status === 0;

interface Case {
  name: string;
  text: string;
  /** The password in the test driver's XML (the user is always alice). */
  password?: string;
}

const creds = (user: string, pw: string) => `[credentials-c]\nusername=${user}\npassword=${pw}\n[auth-test-localhost]\ncredentials=c\n`;

const cases: Case[] = [
  { name: 'plain', text: creds('alice', 'pw') },
  { name: 'wrong password', text: creds('alice', 'nope') },
  { name: 'trailing whitespace kept', text: '[credentials-c]\nusername=alice\npassword=pw  \n[auth-test-localhost]\ncredentials=c\n' },
  {
    name: 'trailing whitespace matching',
    text: '[credentials-c]\nusername=alice\npassword=pw  \n[auth-test-localhost]\ncredentials=c\n',
    password: 'pw  ',
  },
  {
    name: 'leading whitespace dropped',
    text: '  [credentials-c]  \n  username  =   alice\n\tpassword =\tpw\n[auth-test-localhost]\ncredentials =c\n',
  },
  {
    name: 'later duplicate wins',
    text: '[credentials-c]\nusername=alice\npassword=zz\npassword=pw\n[auth-test-localhost]\ncredentials=c\n',
  },
  {
    name: 'earlier duplicate loses',
    text: '[credentials-c]\nusername=alice\npassword=pw\npassword=zz\n[auth-test-localhost]\ncredentials=c\n',
  },
  { name: 'groups merge', text: '[credentials-c]\nusername=alice\n[auth-test-localhost]\ncredentials=c\n[credentials-c]\npassword=pw\n' },
  {
    name: 'escapes',
    text: '[credentials-c]\nusername=alice\npassword=p\\sw\\\\\\t\n[auth-test-localhost]\ncredentials=c\n',
    password: 'p w\\\t',
  },
  { name: 'value with =', text: creds('alice', 'a=b'), password: 'a=b' },
  { name: 'CRLF', text: creds('alice', 'pw').replace(/\n/g, '\r\n') },
  { name: 'comments', text: `# top\n   # indented\n${creds('alice', 'pw')}` },
  {
    name: 'host group before default',
    text: `${creds('alice', 'pw')}[credentials-d]\nusername=x\npassword=y\n[auth-test-default]\ncredentials=d\n`,
  },
  { name: 'default group', text: '[credentials-d]\nusername=alice\npassword=pw\n[auth-test-default]\ncredentials=d\n' },
  { name: 'other host only', text: '[credentials-d]\nusername=alice\npassword=pw\n[auth-test-elsewhere]\ncredentials=d\n' },
  { name: 'missing credentials item', text: '[auth-test-localhost]\nfoo=bar\n' },
  { name: 'missing credential set', text: '[auth-test-localhost]\ncredentials=nope\n' },
  { name: 'line without =', text: '[credentials-c]\nusername alice\n' },
  { name: 'key before group', text: 'username=alice\n[credentials-c]\n' },
  { name: 'bad escape', text: '[credentials-c]\nusername=alice\npassword=p\\qw\n[auth-test-localhost]\ncredentials=c\n' },
];

interface Outcome {
  ok: boolean;
  code?: number;
  domain?: number;
  message?: string;
}

const PROBE = `
import json, sys, libvirt
libvirt.registerErrorHandler(lambda ctx, err: None, None)
def wrong_answers(creds, data):
    for c in creds:
        c[4] = "wrong-" + str(c[0])
    return 0
import os
out = []
for conf, xml in json.load(sys.stdin):
    os.environ["LIBVIRT_AUTH_FILE"] = conf
    try:
        libvirt.openAuth("test://" + xml, [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], wrong_answers, None], 0).close()
        out.append({"ok": True})
    except libvirt.libvirtError as e:
        out.append({"ok": False, "code": e.get_error_code(), "domain": e.get_error_domain(), "message": e.get_error_message()})
print(json.dumps(out))
`;

const xmlAttr = (s: string) => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/\t/g, '&#9;');

function ours(file: string, text: string, password: string): Outcome {
  try {
    const conf = AuthConfig.parse(text, file);
    const user = conf.lookup('test', 'localhost', 'username');
    const pw = conf.lookup('test', 'localhost', 'password');
    return { ok: user === 'alice' && pw === password };
  } catch (e) {
    if (!(e instanceof VirError)) throw e;
    return { ok: false, code: e.code, domain: e.domain, message: e.message };
  }
}

// Under CI the real peer must be there: a missing python3-libvirt fails instead of skipping.
const runAgainstLibvirt = haveLibvirt || process.env.CI === 'true' ? test : test.skip;

runAgainstLibvirt(
  `our reading of auth.conf files agrees with libvirt's${haveLibvirt ? '' : ' (python3-libvirt missing: apt-get install python3-libvirt)'}`,
  (t) => {
    if (!haveLibvirt) {
      t.fail('python3-libvirt is not installed (Debian package python3-libvirt, used with /usr/bin/python3)');
      return;
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'virtauth-authconf-libvirt-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const jobs = cases.map((c, i) => {
      const conf = path.join(dir, `case${i}.conf`);
      const xml = path.join(dir, `node${i}.xml`);
      fs.writeFileSync(conf, c.text);
      fs.writeFileSync(xml, `<node><auth><user password="${xmlAttr(c.password ?? 'pw')}">alice</user></auth></node>\n`);
      return [conf, xml];
    });
    const run = spawnSync(PYTHON, ['-c', PROBE], { input: JSON.stringify(jobs), encoding: 'utf8', timeout: 60_000 });
    t.is(run.status, 0, run.stderr);
    const theirs = JSON.parse(run.stdout) as Outcome[];
    cases.forEach((c, i) => {
      const conf = jobs[i]![0]!;
      const mine = ours(conf, c.text, c.password ?? 'pw');
      const libvirt = theirs[i]!;
      t.is(mine.ok, libvirt.ok, `${c.name}: success`);
      // Lookup errors must match exactly; for malformed files libvirt reports no cause at all
      // ("An error occurred, but the cause is unknown"), so only the failure is compared.
      if (libvirt.code === 33) {
        t.is(mine.code, 33, `${c.name}: code`);
        t.is(mine.domain, libvirt.domain, `${c.name}: domain`);
        t.is(mine.message, libvirt.message, `${c.name}: message`);
      }
    });
  },
);
