// What a client can do before it authenticates, and the checks around authentication, in process
// (no root, no libvirt peers): every procedure but the auth ones answers "authentication
// required", the SASL user name allow list holds, and a client that stops answering keepalive
// PINGs is dropped.

import 'reflect-metadata';
import test from 'ava';
import net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { container as rootContainer } from 'tsyringe';
import {
  AuthType,
  CredentialType,
  ErrorCode,
  ErrorDomain,
  Feature,
  PRE_AUTH_PROCS,
  REMOTE_PROGRAM,
  RemoteProc,
  RpcConnection,
  VirError,
} from '@virtauth/core';
import { makeCredentialRequester, parseUri, remote, xdr, type ConnectAuth, type ConfValue } from '@virtauth/core';
import { FileUserDatabase, SaslAuthProvider, ScramSha256Mechanism } from '@virtauth/providers';
import { JsonSink, callRemote, connect } from './helpers.js';
import { buildConfig, createDaemon, createLogger, type DaemonHandle } from '../src/index.js';

const ITERATIONS = 4096;
const PASSWORDS = { alice: 'alice-Pa55-pre', bob: 'bob-Pa55-pre', 'svc-backup': 'svc-Pa55-pre' };

interface Daemon {
  handle: DaemonHandle;
  log: JsonSink;
  socket: string;
}

async function startDaemon(t: import('ava').ExecutionContext, settings: Record<string, ConfValue> = {}): Promise<Daemon> {
  const dir = await mkdtemp(join(tmpdir(), 'va-pre-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const userDb = join(dir, 'users.json');
  const users = new FileUserDatabase({ path: userDb, iterations: ITERATIONS });
  for (const [name, password] of Object.entries(PASSWORDS)) await users.setPassword(name, password);
  const config = buildConfig(
    new Map<string, ConfValue>(
      Object.entries({
        unix_sock_dir: dir,
        auth_unix_rw: 'sasl',
        sasl_user_db: userDb,
        sasl_mech_list: ['SCRAM-SHA-256'],
        scram_iteration_count: ITERATIONS,
        sasl_failure_delay_ms: 0,
        ...settings,
      }),
    ),
  );
  const log = new JsonSink();
  const handle = await createDaemon({ config, container: rootContainer.createChildContainer(), logger: createLogger(1, log) });
  t.teardown(() => handle.stop());
  return { handle, log, socket: join(dir, 'virtauth-sock') };
}

async function login(rpc: RpcConnection, user: string, password: string): Promise<void> {
  const provider = new SaslAuthProvider(() => [new ScramSha256Mechanism()]);
  const auth: ConnectAuth = {
    credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
    callback: (creds) => {
      for (const c of creds) c.result = c.type === CredentialType.AUTHNAME ? user : password;
    },
  };
  await callRemote(rpc, RemoteProc.AUTH_LIST, xdr.xvoid, undefined, remote.authListRet);
  await provider.client.authenticate({
    rpc: { call: (proc, args, value, ret) => callRemote(rpc, proc, args, value, ret) },
    uri: parseUri('test+unix:///default'),
    mechanism: 'SCRAM-SHA-256',
    transport: { kind: 'unix', secure: true },
    auth,
    requestCredentials: makeCredentialRequester([], auth),
    service: 'libvirt',
    host: 'localhost',
    channelBindingPolicy: 'prefer',
  });
}

test('before authentication every procedure but the auth ones answers "authentication required", and none runs', async (t) => {
  const daemon = await startDaemon(t);
  const rpc = await connect(t, daemon.socket);
  const programs = daemon.handle.server.programDefinitions;
  let refused = 0;
  for (const program of programs) {
    for (const [proc, definition] of program.procedures) {
      if (definition.needsAuth === false) {
        // Only the auth procedures (and AUTH_LIST) may run unauthenticated.
        if (program.prog === REMOTE_PROGRAM) t.true(PRE_AUTH_PROCS.has(proc), `remote procedure ${proc} runs before authentication`);
        else t.fail(`procedure ${proc} of program ${program.prog} runs before authentication`);
        continue;
      }
      // An empty body: the gate must answer before any decoding or handler.
      const e = await t.throwsAsync(
        rpc.call(program.prog, program.vers, proc, xdr.xvoid, undefined, xdr.xvoid),
        { instanceOf: VirError },
        `procedure ${proc}`,
      );
      t.is(e?.message, 'authentication required', `program ${program.prog} procedure ${proc}`);
      t.is(e?.code, ErrorCode.RPC);
      t.is(e?.domain, ErrorDomain.RPC);
      refused++;
    }
  }
  t.true(refused >= 30, `${refused} procedures checked`);
  t.true(programs.some((p) => p.procedures.has(RemoteProc.CONNECT_GET_HOSTNAME)));
  // The connection still works, and nothing was opened.
  t.deepEqual((await callRemote(rpc, RemoteProc.AUTH_LIST, xdr.xvoid, undefined, remote.authListRet)).types, [AuthType.SASL]);
  t.deepEqual(daemon.log.events('connect.open'), []);
});

test('sasl_allowed_username_list: names matching a glob get in, others fail like a wrong password', async (t) => {
  const daemon = await startDaemon(t, { sasl_allowed_username_list: ['alice', 'svc-*'] });
  for (const user of ['alice', 'svc-backup'] as const) {
    const rpc = await connect(t, daemon.socket);
    await login(rpc, user, PASSWORDS[user]);
    await callRemote(rpc, RemoteProc.CONNECT_OPEN, remote.connectOpenArgs, { name: 'test:///default', flags: 0 }, xdr.xvoid);
    t.truthy((await callRemote(rpc, RemoteProc.CONNECT_GET_HOSTNAME, xdr.xvoid, undefined, remote.connectGetHostnameRet)).hostname, user);
  }
  const rpc = await connect(t, daemon.socket);
  const e = await t.throwsAsync(login(rpc, 'bob', PASSWORDS.bob), { instanceOf: VirError });
  t.is(e!.code, ErrorCode.AUTH_FAILED);
  t.deepEqual(
    daemon.log.events('auth.sasl.failed').map((r) => r.reason),
    ['user name not in sasl_allowed_username_list'],
  );
  await t.throwsAsync(callRemote(rpc, RemoteProc.CONNECT_GET_HOSTNAME, xdr.xvoid, undefined, remote.connectGetHostnameRet), {
    message: /authentication required|closed/,
  });
});

test('keepalive: a client that asked for it and stops answering PINGs is dropped after interval × count', async (t) => {
  const daemon = await startDaemon(t, { auth_unix_rw: 'none', keepalive_interval: 1, keepalive_count: 1 });
  const socket = net.connect(daemon.socket);
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  // A client of our own RpcConnection would answer PINGs: this one sends one call and then only reads.
  const rpc = new RpcConnection(socket);
  socket.resume();
  t.teardown(() => rpc.close(null));
  const { supported } = await callRemote(
    rpc,
    RemoteProc.CONNECT_SUPPORTS_FEATURE,
    remote.connectSupportsFeatureArgs,
    { feature: Feature.PROGRAM_KEEPALIVE },
    remote.connectSupportsFeatureRet,
  );
  t.is(supported, 1);
  // From here on, nothing we receive is answered.
  socket.removeAllListeners('data');
  socket.on('data', () => undefined);
  const started = Date.now();
  await new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const elapsed = Date.now() - started;
  t.true(elapsed >= 1500 && elapsed < 6000, `dropped after ${elapsed} ms`);
  t.is(daemon.handle.server.clientCount, 0);
});
