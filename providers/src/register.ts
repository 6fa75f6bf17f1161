// Registers the authentication providers virtauth ships; third-party providers register the
// same way, under the same token.

import { AUTH_PROVIDER } from '@virtauth/core';
import type { DependencyContainer } from 'tsyringe';
import { noneAuthProvider } from './none.js';

export function registerDefaultProviders(container: DependencyContainer): void {
  container.register(AUTH_PROVIDER, { useValue: noneAuthProvider });
}
