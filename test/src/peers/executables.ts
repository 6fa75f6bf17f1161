import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Directories searched after PATH: daemons live in sbin, polkitd in its libexec directory. */
const extraSearchDirectories = ['/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/lib/polkit-1', '/usr/libexec/polkit-1'];

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Absolute path of an executable found on PATH or in the usual sbin/libexec places, else undefined. */
export function findExecutable(name: string): string | undefined {
  if (name.includes('/')) {
    return isExecutable(name) ? name : undefined;
  }
  const pathDirectories = (process.env.PATH ?? '').split(delimiter).filter((directory) => directory !== '');
  for (const directory of [...pathDirectories, ...extraSearchDirectories]) {
    const candidate = join(directory, name);
    if (isExecutable(candidate)) {
      return candidate;
    }
  }
  return undefined;
}

/** Like findExecutable, but throws an error that names the Debian package to install. */
export function requireExecutable(name: string, debianPackage: string): string {
  const path = findExecutable(name);
  if (path === undefined) {
    throw new Error(`${name} not found: install it with \`apt-get install --no-install-recommends ${debianPackage}\``);
  }
  return path;
}

/** Debian's interpreter: python3-libvirt is built for it, not for a pyenv python first on PATH. */
export const systemPython = '/usr/bin/python3';
