// Registers the access drivers virtauth ships; `access_drivers` in the daemon's config picks
// among everything registered under ACCESS_DRIVER, third parties' drivers included.

import { ACCESS_DRIVER } from '@virtauth/core';
import type { DependencyContainer } from 'tsyringe';
import { cedarAccessDriverFactory } from './cedar.js';
import { polkitAccessDriverFactory } from './polkit.js';

export function registerAccessDrivers(container: DependencyContainer): void {
  container.register(ACCESS_DRIVER, { useValue: cedarAccessDriverFactory });
  container.register(ACCESS_DRIVER, { useValue: polkitAccessDriverFactory });
}
