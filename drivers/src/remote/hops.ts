// The daemons a connection came through, named to a virtauth server (the relay program's HOPS).

import {
  ErrorCode,
  RELAY_PROGRAM,
  RELAY_PROTOCOL_VERSION,
  RelayProc,
  VirError,
  relayProtocol,
  xdr,
  type HopIdentity,
  type RpcConnection,
} from '@virtauth/core';

/**
 * Names the daemons a connection came through to a virtauth server, whose identity of the
 * connection then carries them. Resolves false when the server does not take them (libvirtd, or
 * an older virtauthd): its identity of this connection then has no hops.
 */
export async function announceHops(rpc: RpcConnection, hops: readonly HopIdentity[]): Promise<boolean> {
  try {
    await rpc.call(
      RELAY_PROGRAM,
      RELAY_PROTOCOL_VERSION,
      RelayProc.HOPS,
      relayProtocol.relayHopsArgs,
      { hops: hops.map((h) => ({ daemon: h.daemon, driver: h.driver ?? '' })) },
      xdr.xvoid,
    );
    return true;
  } catch (e) {
    // "Cannot find program" (no relay program) or "unknown procedure" (no HOPS in it).
    if (e instanceof VirError && (e.code === ErrorCode.RPC || e.code === ErrorCode.NO_SUPPORT)) return false;
    throw e;
  }
}
