// The daemon's own credentials (auth.conf, registered sources) as a driver it opens may use them.

import type { DependencyContainer } from 'tsyringe';
import { CREDENTIAL_SOURCE, type CredentialSource } from '@virtauth/core';
import type { ClientSession } from '../session.js';

/** Where the daemon's credential sources come from, read afresh for each CONNECT_OPEN. */
export type CredentialSourcesReader = () => Promise<readonly CredentialSource[]>;

/** The sources registered under CREDENTIAL_SOURCE, for a server given no reader of its own. */
export function registeredCredentialSources(container: DependencyContainer): CredentialSourcesReader {
  return () => Promise.resolve(container.isRegistered(CREDENTIAL_SOURCE, true) ? container.resolveAll(CREDENTIAL_SOURCE) : []);
}

/**
 * The daemon's stored credentials as its drivers may use them: only from an entry for exactly
 * the host being opened (never `-default`; a source that cannot promise that answers nothing),
 * and never when the answer would travel unencrypted.
 */
export function storedCredentials(source: CredentialSource, session: ClientSession): CredentialSource {
  return {
    fill: (creds, service, host, info) => {
      if (info?.cleartext) {
        session.log.warn(
          { event: 'credentials.stored.withheld', service, host },
          "the daemon's stored credentials are never sent over an unencrypted channel",
        );
        return;
      }
      return source.fillExact?.(creds, service, host);
    },
  };
}
