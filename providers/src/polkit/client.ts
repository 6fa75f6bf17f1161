// Client half of AUTH_POLKIT: one call; the server asks polkit about our process, so there is
// nothing to send and no credential to collect.

import { RemoteProc, remote, xdr, type ClientAuthContext, type ClientAuthProvider } from '@virtauth/core';

export const polkitClient: ClientAuthProvider = {
  async authenticate(ctx: ClientAuthContext): Promise<void> {
    // libvirt's client ignores `complete` too: an error reply is the only failure.
    await ctx.rpc.call(RemoteProc.AUTH_POLKIT, xdr.xvoid, undefined, remote.authPolkitRet);
  },
};
