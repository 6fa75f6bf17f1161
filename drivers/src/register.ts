// Registers the drivers virtauth ships; third-party drivers register the same way.

import { AUTH_PROVIDER, DRIVER } from '@virtauth/core';
import { instanceCachingFactory, type DependencyContainer } from 'tsyringe';
import { RemoteDriver, type RemoteDriverOptions } from './remote/remote-driver.js';
import { TestDriver } from './test/test-driver.js';
import { XenApiDriver } from './xenapi/driver.js';

export function registerDefaultDrivers(container: DependencyContainer, remoteOptions: Omit<RemoteDriverOptions, 'providers'> = {}): void {
  container.register(DRIVER, { useValue: new TestDriver() });
  container.register(DRIVER, { useValue: new XenApiDriver() });
  container.register(DRIVER, {
    useFactory: instanceCachingFactory((c) => new RemoteDriver({ ...remoteOptions, providers: () => c.resolveAll(AUTH_PROVIDER) })),
  });
}
