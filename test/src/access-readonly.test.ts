// The read-only rule: every procedure libvirt's API refuses on a read-only connection is refused
// on virtauthd's read-only socket, with libvirt's error, whether or not an access driver is
// configured (and even when the driver would allow everything). Each call carries well-formed
// arguments of all zeros, aimed at the default domain where it names one.

import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import test, { type ExecutionContext } from 'ava';
import {
  ErrorCode,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  RemoteProc,
  VirError,
  XdrReader,
  remote,
  remoteProcedures,
  xdr,
  type ProcedureInfo,
} from '@virtauth/core';

import { tempDir } from './peers/index.js';
import { rawClient, startVirtauthd } from './virtauthd-support.js';

/** The arguments all-zero bytes decode to (empty strings and lists, null pointers, zero numbers). */
function zeroArgs(info: ProcedureInfo): unknown {
  return info.args.decode(new XdrReader(Buffer.alloc(1 << 16)));
}

const writes = remoteProcedures.filter((p) => p.readOnlyDenied && !p.message);

async function refusesEveryWrite(t: ExecutionContext, extra: Record<string, string | string[]>): Promise<void> {
  const daemon = await startVirtauthd(t, { extra: new Map(Object.entries(extra)) });
  const rpc = await rawClient(daemon.roSocket);
  t.teardown(() => rpc.close(null));
  const call = <A, R>(proc: number, args: xdr.Codec<A>, value: A, ret: xdr.Codec<R>) =>
    rpc.call(REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, proc, args, value, ret);
  await call(RemoteProc.AUTH_LIST, xdr.xvoid, undefined, remote.authListRet);
  await call(RemoteProc.CONNECT_OPEN, remote.connectOpenArgs, { name: 'test:///default', flags: 0 }, xdr.xvoid);
  const { dom } = await call(
    RemoteProc.DOMAIN_LOOKUP_BY_NAME,
    remote.domainLookupByNameArgs,
    { name: 'test' },
    remote.domainLookupByNameRet,
  );

  t.true(writes.length > 150, `the table marks ${writes.length} procedures as writes`);
  const wrong: string[] = [];
  for (const info of writes) {
    const args = zeroArgs(info) as Record<string, unknown> | undefined;
    if (args && typeof args === 'object' && 'dom' in args) args['dom'] = dom;
    const outcome = await call(info.number, info.args, args, xdr.xvoid).then(
      () => 'succeeded',
      (e: unknown) =>
        e instanceof VirError &&
        e.code === ErrorCode.OPERATION_DENIED &&
        e.message === `operation forbidden: read only access prevents ${info.api}`
          ? null
          : String(e),
    );
    if (outcome !== null) wrong.push(`${info.name}: ${outcome}`);
  }
  t.deepEqual(wrong, []);
  // The connection is still usable afterwards, and nothing changed.
  const { state } = await call(RemoteProc.DOMAIN_GET_STATE, remote.domainGetStateArgs, { dom, flags: 0 }, remote.domainGetStateRet);
  t.is(state, 1);
}

test('read-only socket: every write procedure is refused without access drivers', async (t) => {
  await refusesEveryWrite(t, {});
});

test('read-only socket: every write procedure is refused even when the access driver allows everything', async (t) => {
  const dir = await tempDir('ro');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const policy = join(dir, 'allow-all.cedar');
  await writeFile(policy, 'permit (principal, action, resource);\n');
  await refusesEveryWrite(t, { access_drivers: ['cedar'], access_cedar_policy_file: policy });
});
