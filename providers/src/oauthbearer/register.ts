// How a host adds OAUTHBEARER: one registration under the public SASL_MECHANISM token. The SASL
// auth provider finds it with the other mechanisms, offers it (server) and may choose it (client).

import { SASL_MECHANISM } from '@virtauth/core';
import type { DependencyContainer } from 'tsyringe';
import { OAuthBearerMechanism, type OAuthBearerMechanismOptions } from './mechanism.js';

export function registerOAuthBearer(container: DependencyContainer, options: OAuthBearerMechanismOptions): OAuthBearerMechanism {
  const mechanism = new OAuthBearerMechanism(options);
  container.register(SASL_MECHANISM, { useValue: mechanism });
  return mechanism;
}
