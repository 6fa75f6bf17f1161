// A virtauth client for the polkit interop tests, run as a test account (through setpriv) in its
// own process, so the daemon sees that account's SO_PEERCRED. Prints one JSON line.
//   open URI [ro]            virtauth's openAuth, then getHostname
//   auth-list URI            AUTH_LIST alone on a raw connection
//   orphan SOCKET            connects, hands the socket to a child and exits; the child then
//                            sends AUTH_POLKIT, so the daemon checks a process that is gone
import 'reflect-metadata';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

import {
  OpenFlag,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  RemoteProc,
  RpcConnection,
  VirError,
  parseUri,
  remote,
  xdr,
} from '@virtauth/core';
import { openTransport } from '@virtauth/drivers';
import { openAuth } from 'virtauth';

export type PolkitClientResult =
  { ok: true; hostname?: string; types?: number[]; complete?: number } | { ok: false; code: number; domain: number; message: string };

function print(result: PolkitClientResult): Promise<never> {
  return new Promise(() => process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(result.ok ? 0 : 1)));
}

function failure(error: unknown): PolkitClientResult {
  if (error instanceof VirError) return { ok: false, code: error.code, domain: error.domain, message: error.message };
  return { ok: false, code: -1, domain: -1, message: error instanceof Error ? error.message : String(error) };
}

function rawCall<R>(rpc: RpcConnection, proc: number, ret: import('@virtauth/core').Codec<R>): Promise<R> {
  return rpc.call(REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, proc, xdr.xvoid, undefined, ret);
}

async function open(uri: string, readOnly: boolean): Promise<PolkitClientResult> {
  const conn = await openAuth(uri, null, readOnly ? OpenFlag.READ_ONLY : 0);
  try {
    return { ok: true, hostname: await conn.getHostname() };
  } finally {
    await conn.close().catch(() => {});
  }
}

async function authList(uri: string): Promise<PolkitClientResult> {
  const { socket } = await openTransport(parseUri(uri), { readOnly: false, timeoutMs: 10_000 });
  const rpc = new RpcConnection(socket);
  socket.resume();
  try {
    return { ok: true, types: (await rawCall(rpc, RemoteProc.AUTH_LIST, remote.authListRet)).types };
  } finally {
    rpc.close(null);
  }
}

async function orphan(socketPath: string): Promise<void> {
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(socketPath, () => resolve(s));
    s.once('error', reject);
  });
  // The child inherits the connected socket as fd 3 and its stdout: it prints the result.
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'orphan-child', String(process.pid)], {
    stdio: ['ignore', 'inherit', 'inherit', socket],
    detached: true,
  });
  child.unref();
  socket.destroy();
  process.exit(0);
}

async function orphanChild(parentPid: number): Promise<PolkitClientResult> {
  // Wait until the process that connected (the one SO_PEERCRED names) is gone for good.
  const deadline = Date.now() + 10_000;
  while (existsSync(`/proc/${parentPid}`)) {
    if (Date.now() > deadline) throw new Error(`process ${parentPid} did not exit`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const socket = new net.Socket({ fd: 3, readable: true, writable: true });
  const rpc = new RpcConnection(socket);
  socket.resume();
  try {
    return { ok: true, complete: (await rawCall(rpc, RemoteProc.AUTH_POLKIT, remote.authPolkitRet)).complete };
  } finally {
    rpc.close(null);
  }
}

const [mode, argument, extra] = process.argv.slice(2);
try {
  if (mode === 'open' && argument) await print(await open(argument, extra === 'ro'));
  else if (mode === 'auth-list' && argument) await print(await authList(argument));
  else if (mode === 'orphan' && argument) await orphan(argument);
  else if (mode === 'orphan-child' && argument) await print(await orphanChild(Number(argument)));
  else {
    process.stderr.write('usage: polkit-client open URI [ro] | auth-list URI | orphan SOCKET\n');
    process.exit(2);
  }
} catch (error) {
  await print(failure(error));
}
