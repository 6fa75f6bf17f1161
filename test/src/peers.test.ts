// Self-test of the real-libvirt peer harness: if these fail, the interop tests built on it are moot.
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import test from 'ava';

import {
  PrivateLibvirtd,
  TestPki,
  describeResult,
  interopTest,
  peerStatus,
  planInteropTest,
  pythonLibvirtCommands,
  runPythonLibvirt,
  runProcess,
  runVirsh,
  tempDir,
  type PeerStatus,
} from './peers/index.js';

const saslErrorCode = 45; // VIR_ERR_AUTH_FAILED
const rpcErrorDomain = 7; // VIR_FROM_RPC

const present = (name: string): PeerStatus => ({ name, available: true, reason: '' });
const absent = (name: string): PeerStatus => ({ name, available: false, reason: `${name} not found: install Debian package pkg-${name}` });

test('interop plan: runs with every peer present, fails in CI and skips elsewhere when one is missing', (t) => {
  t.is(planInteropTest([present('virsh'), present('libvirtd')], true).mode, 'run');
  t.is(planInteropTest([present('virsh'), present('libvirtd')], false).mode, 'run');

  const inCi = planInteropTest([present('virsh'), absent('libvirtd')], true);
  t.is(inCi.mode, 'fail');
  t.regex(inCi.message, /libvirtd not found: install Debian package pkg-libvirtd/);
  t.regex(inCi.message, /\.ci\/run must install/);
  t.deepEqual(
    inCi.missing.map((status) => status.name),
    ['libvirtd'],
  );

  const onLaptop = planInteropTest([absent('virsh'), absent('libvirtd')], false);
  t.is(onLaptop.mode, 'skip');
  t.regex(onLaptop.message, /virsh: virsh not found.*libvirtd: libvirtd not found/);

  t.throws(() => peerStatus('libvirt'), { message: /unknown interop peer "libvirt"; known peers: .*libvirtd/ });
});

test('the python script builder refuses commands it cannot run', (t) => {
  t.throws(() => pythonLibvirtCommands('test:///default', { commands: ['reboot'] }), {
    message: /unsupported python libvirt command "reboot"/,
  });
  t.throws(() => pythonLibvirtCommands('test:///default', { commands: ['dominfo'] }), { message: /dominfo NAME/ });
  t.throws(() => pythonLibvirtCommands('test:///default', { commands: ['hostname now'] }), { message: /unsupported/ });
});

interopTest.serial(
  'auth none: real virsh and python3-libvirt talk to a private libvirtd over its unix sockets',
  ['root', 'libvirtd', 'virsh', 'python3-libvirt'],
  async (t) => {
    const daemon = await PrivateLibvirtd.start({ auth_unix_rw: 'none' });
    t.teardown(() => daemon.stop());
    t.true(Buffer.byteLength(daemon.rwSocket) < 108);
    t.is(daemon.uri(), `test+unix:///default?socket=${daemon.rwSocket}`);

    const virsh = await runVirsh(['hostname'], { uri: daemon.uri() });
    t.is(virsh.code, 0, describeResult(virsh));
    const virshHostname = virsh.stdout.trim();
    t.not(virshHostname, '');

    const python = await runPythonLibvirt(daemon.uri(), {
      commands: ['hostname', 'version', 'uri', 'list', 'dominfo test', 'dumpxml test'],
    });
    if (!python.ok) {
      t.fail(`python open failed: ${JSON.stringify(python.error)}; daemon log: ${await daemon.logText()}`);
      return;
    }
    t.is(python.hostname, virshHostname);
    t.true((python.libVersion ?? 0) >= 9_000_000, `libVersion ${python.libVersion}`);
    t.is(python.uri, daemon.uri(), 'the remote driver reports the URI the client opened');
    t.deepEqual(python.credentialRequests, [], 'auth none asks for no credentials');
    const testDomain = python.domains?.find((domain) => domain.name === 'test');
    t.truthy(testDomain, JSON.stringify(python.domains));
    t.is(testDomain?.state, 1, "the test driver's domain is running");
    t.deepEqual(python.domainInfo?.test, testDomain);
    t.regex(python.domainXml?.test ?? '', /<name>test<\/name>/);

    const readOnly = await runPythonLibvirt(daemon.uri('test:///default', 'unix-ro'), { readOnly: true, commands: ['hostname'] });
    t.true(readOnly.ok, JSON.stringify(readOnly));
  },
);

interopTest.serial(
  'auth sasl: SCRAM-SHA-256 with the right password opens, a wrong one fails with code 45',
  ['root', 'libvirtd', 'virsh', 'python3-libvirt', 'saslpasswd2', 'sasl-scram', 'sasl-sasldb'],
  async (t) => {
    const daemon = await PrivateLibvirtd.start({ auth_unix_rw: 'sasl', listenTcp: true, saslUsers: { alice: 'correct horse' } });
    t.teardown(() => daemon.stop());

    const accepted = await runPythonLibvirt(daemon.uri(), { authname: 'alice', passphrase: 'correct horse', commands: ['hostname'] });
    t.true(accepted.ok, `${JSON.stringify(accepted)}; daemon log: ${await daemon.logText()}`);
    t.deepEqual(
      accepted.credentialRequests.map((call) => call.map((credential) => credential.type)),
      [['AUTHNAME', 'PASSPHRASE']],
      'SCRAM asks once, for both credentials',
    );

    const refused = await runPythonLibvirt(daemon.uri(), { authname: 'alice', passphrase: 'wrong', commands: ['hostname'] });
    t.false(refused.ok);
    if (!refused.ok) {
      t.is(refused.stage, 'open');
      t.is(refused.error.code, saslErrorCode, refused.error.message);
      t.is(refused.error.domain, rpcErrorDomain);
    }

    // Plain TCP needs a SASL security layer, which SCRAM lacks: libvirtd refuses it outright.
    t.true(daemon.uri('test:///default', 'tcp').startsWith(`test+tcp://127.0.0.1:${daemon.tcpPort}/default`));
    const overTcp = await runPythonLibvirt(daemon.uri('test:///default', 'tcp'), {
      authname: 'alice',
      passphrase: 'correct horse',
      commands: ['hostname'],
    });
    t.false(overTcp.ok, JSON.stringify(overTcp));
    if (!overTcp.ok) {
      t.is(overTcp.error.code, saslErrorCode, overTcp.error.message);
    }

    // virsh reads an auth file (key authname=) and, without one, answers its prompts from stdin.
    const authDirectory = await tempDir('va');
    t.teardown(() => rm(authDirectory, { recursive: true, force: true }));
    const authFile = join(authDirectory, 'auth.conf');
    await writeFile(authFile, '[credentials-peer]\nauthname=alice\npassword=correct horse\n[auth-libvirt-localhost]\ncredentials=peer\n', {
      mode: 0o600,
    });
    const withAuthFile = await runVirsh(['hostname'], { uri: daemon.uri(), env: { LIBVIRT_AUTH_FILE: authFile } });
    t.is(withAuthFile.code, 0, describeResult(withAuthFile));
    const prompted = await runVirsh(['hostname'], { uri: daemon.uri(), input: 'alice\ncorrect horse\n' });
    t.is(prompted.code, 0, describeResult(prompted));
    // The prompts share stdout with the answer: "Please enter your authentication name: Please enter your password: HOST".
    t.regex(prompted.stdout, /authentication name:.*password:/s);
    t.true(prompted.stdout.trim().endsWith(withAuthFile.stdout.trim()), describeResult(prompted));
  },
);

interopTest.serial(
  "TLS: the test PKI's client certificate is accepted, one from another CA is refused",
  ['root', 'libvirtd', 'virsh', 'certtool'],
  async (t) => {
    const pki = await TestPki.create();
    t.teardown(() => pki.remove());
    t.is(pki.client.subject, 'C=GB,O=virtauth,CN=client1');
    const queriedDn = await runProcess('virt-pki-query-dn', [pki.client.certFile]);
    t.is(queriedDn.stdout.trim(), pki.client.subject, 'libvirt reads the subject the way TestPki reports it');
    const daemon = await PrivateLibvirtd.start({
      auth_unix_rw: 'none',
      listenTls: true,
      tls: pki,
      extraConfig: { tls_allowed_dn_list: [pki.client.subject] },
    });
    t.teardown(() => daemon.stop());

    const accepted = await runVirsh(['hostname'], { uri: daemon.uri('test:///default', 'tls') });
    t.is(accepted.code, 0, `${describeResult(accepted)}; daemon log: ${await daemon.logText()}`);

    const refused = await runVirsh(['hostname'], { uri: daemon.uri('test:///default', 'tls', { pkipath: pki.otherCaClient.pkiPath }) });
    t.not(refused.code, 0, describeResult(refused));
  },
);
