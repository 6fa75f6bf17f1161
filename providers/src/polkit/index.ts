// The `polkit` auth scheme: unix-socket clients authorized by PolicyKit, as libvirtd does it.

import { AuthType, type AuthProvider } from '@virtauth/core';
import { polkitClient } from './client.js';
import { PolkitServer, type PolkitServerOptions } from './server.js';

export class PolkitAuthProvider implements AuthProvider {
  readonly type = AuthType.POLKIT;
  readonly name = 'polkit';
  readonly priority = 200;
  readonly client = polkitClient;
  readonly server: PolkitServer;

  constructor(serverOptions: PolkitServerOptions = {}) {
    this.server = new PolkitServer(serverOptions);
  }
}

export { polkitClient } from './client.js';
export { PolkitServer, type PolkitServerOptions } from './server.js';
export {
  DbusPolkitAuthority,
  DBUS_SERVICE_ERROR_CODE,
  type AuthorizationResult,
  type PolkitAuthorityClient,
  type PolkitAuthorityOptions,
  type UnixProcessSubject,
} from './authority.js';
export { processStartTime, parseStartTime } from './process-start-time.js';
export {
  polkitSettingsFrom,
  POLKIT_CONFIG_KEYS,
  DEFAULT_POLKIT_ACTION_RO,
  DEFAULT_POLKIT_ACTION_RW,
  type PolkitSettings,
} from './settings.js';
