import 'reflect-metadata';
import test from 'ava';
import { ErrorCode, VirError, parseConf } from '@virtauth/core';
import { UriAllowList, buildConfig, defaultConfig } from '../src/index.js';

test('by default only the embedded test:///default is allowed', (t) => {
  const list = new UriAllowList(defaultConfig().uriAllowedList);
  t.true(list.allows('test:///default'));
  for (const uri of [
    'test:///other',
    'test+unix:///default',
    'test:///default?socket=/tmp/x',
    'xenapi:///?server=x',
    'qemu:///system',
    'not a uri',
  ]) {
    t.false(list.allows(uri), uri);
  }
});

test('globs apply to the path and to parameters that do not decide where the daemon connects', (t) => {
  const list = new UriAllowList(['test:///*', 'relayprobe:///?probe=*&count=*', 'test+unix:///default?socket=/run/b.sock&name=*']);
  t.true(list.allows('test:///anything'));
  t.true(list.allows('relayprobe:///?probe=ask'), 'a glob-valued parameter may be left out');
  t.true(list.allows('relayprobe:///?count=3&probe=flood'), 'in any order');
  t.false(list.allows('relayprobe:///?probe=ask&socket=/tmp/evil'), 'a parameter the entry does not name');
  t.false(list.allows('relayprobe:///?probe=a&probe=b'), 'a parameter given twice (libvirt would take the last)');
  t.true(list.allows('test+unix:///default?socket=/run/b.sock&name=xenapi:///?server=x'));
  t.false(list.allows('test+unix:///default?name=x'), "the entry's literal socket= is required");
  t.false(list.allows('test+unix:///default?socket=/run/c.sock&name=x'));
  t.false(list.allows('test+tcp://evil/default?socket=/run/b.sock&name=x'), 'another transport and host');
});

test('scheme, transport, user, host and port are compared literally; host case does not matter', (t) => {
  const list = new UriAllowList(['xenapi://root@Xen1.example:8443/?no_verify=0']);
  t.true(list.allows('xenapi://root@xen1.example:8443/?no_verify=0'));
  for (const uri of [
    'xenapi://admin@xen1.example:8443/?no_verify=0',
    'xenapi://root@xen1.example:8444/?no_verify=0',
    'xenapi://root@xen2.example:8443/?no_verify=0',
    'xenapi+unix://root@xen1.example:8443/?no_verify=0',
    'xenapi://root@xen1.example:8443/?no_verify=1',
    'xenapi://root@xen1.example:8443/',
  ]) {
    t.false(list.allows(uri), uri);
  }
});

test('an entry with a glob where it would move the connection is refused at configuration time', (t) => {
  for (const entry of [
    'xenapi:///?server=*',
    'xenapi:///?server=xen1&scheme=*',
    'test+unix:///default?socket=/run/*',
    'test+tls://*/default',
    'test+tls://h/default?pkipath=/home/*',
    'xenapi:///?no_verify=?',
    'te*t:///default',
    'xenapi:///?server=a&server=b',
    'nonsense',
  ]) {
    const e = t.throws(() => new UriAllowList([entry]), { instanceOf: VirError }, entry);
    t.is(e?.code, ErrorCode.CONF_SYNTAX, entry);
  }
});

test('uri_allowed_list in a config file: a bad entry names the file, line and key', (t) => {
  const text = 'log_level = 3\nuri_allowed_list = [ "test:///default",\n  "xenapi:///?server=*" ]\n';
  const lines = new Map<string, number>();
  const e = t.throws(() => buildConfig(parseConf(text, 'd.conf', lines), 'd.conf', lines), { instanceOf: VirError });
  t.regex(
    e!.message,
    /d\.conf:2: uri_allowed_list: 'xenapi:\/\/\/\?server=\*': server= decides where or how the daemon connects and must be written literally/,
  );
  t.deepEqual(buildConfig(parseConf('uri_allowed_list = [ "test:///*" ]\n')).uriAllowedList, ['test:///*']);
});

test("features add their own names next to the operator's (the gateway's upstream entries)", (t) => {
  const list = new UriAllowList(['test:///default']);
  t.false(list.allows('test+unix:///default?socket=/run/up.sock'));
  list.add('test+unix:///default?socket=/run/up.sock');
  t.true(list.allows('test+unix:///default?socket=/run/up.sock'));
  t.deepEqual(list.entries, ['test:///default', 'test+unix:///default?socket=/run/up.sock']);
});
