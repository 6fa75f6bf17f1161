// The `none` scheme: nothing to do on either side; a socket with it is open to every client.

import { AuthType, type AuthProvider } from '@virtauth/core';

export const noneAuthProvider: AuthProvider = {
  type: AuthType.NONE,
  name: 'none',
  // Chosen only when the server offers nothing this client can do better.
  priority: 0,
  client: { authenticate: async () => {} },
  server: { procedures: {} },
};
