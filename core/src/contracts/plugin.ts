// What a plugin package exports so virtauthd can load it from its config file (`plugins = [...]`)
// and an application can register it in the container it passes to openAuth.

import type { DependencyContainer } from 'tsyringe';
import type { ConfValue } from '../conf.js';

/**
 * The daemon's config settings that the daemon itself does not read (libvirtd.conf syntax). A
 * plugin reads the keys it declared under CONFIG_KEYS; a client application passes its own map
 * (often empty).
 */
export type PluginSettings = ReadonlyMap<string, ConfValue>;

/** A plugin module: registers its providers, mechanisms, drivers, user database and config keys. */
export interface VirtauthPlugin {
  /**
   * Registers into `container` under the public tokens. Bad settings throw a VirError with
   * CONF_SYNTAX and the key's name; the daemon then refuses to start.
   */
  register(container: DependencyContainer, settings: PluginSettings): void | Promise<void>;
}
