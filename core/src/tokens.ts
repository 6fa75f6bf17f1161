// Injection tokens: plugins register under these and hosts find them with `resolveAll`.

import type { InjectionToken } from 'tsyringe';
import type { AuthProvider } from './contracts/auth.js';
import type { Driver } from './contracts/driver.js';
import type { SaslMechanism } from './contracts/sasl.js';
import type { CredentialSource } from './credentials.js';
import type { ConfigKeyDeclaration } from './conf.js';
import type { UserDatabase } from './contracts/userdb.js';
import type { AccessDriverFactory } from './contracts/access.js';

export const AUTH_PROVIDER: InjectionToken<AuthProvider> = Symbol.for('virtauth.AuthProvider');
export const SASL_MECHANISM: InjectionToken<SaslMechanism> = Symbol.for('virtauth.SaslMechanism');
export const DRIVER: InjectionToken<Driver> = Symbol.for('virtauth.Driver');
export const CREDENTIAL_SOURCE: InjectionToken<CredentialSource> = Symbol.for('virtauth.CredentialSource');
export const USER_DATABASE: InjectionToken<UserDatabase> = Symbol.for('virtauth.UserDatabase');
export const CONFIG_KEYS: InjectionToken<ConfigKeyDeclaration> = Symbol.for('virtauth.ConfigKeys');
/** Access drivers (`access_drivers = [ "cedar" ]`): each registration makes one driver from the daemon's settings. */
export const ACCESS_DRIVER: InjectionToken<AccessDriverFactory> = Symbol.for('virtauth.AccessDriver');
