// The `none` scheme: nothing to do on either side; a socket with it is open to every client.

import { AuthType, type AuthProvider } from '@virtauth/core';

export const noneAuthProvider: AuthProvider = {
  type: AuthType.NONE,
  name: 'none',
  client: { authenticate: async () => {} },
  server: { procedures: {} },
};
