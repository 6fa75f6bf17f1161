// Shell-style globs (`*`, `?`) as libvirt matches allow lists (sasl_allowed_username_list, ...).

const cache = new Map<string, RegExp>();

export function globMatch(glob: string, text: string): boolean {
  let re = cache.get(glob);
  if (!re) {
    re = new RegExp(
      `^${glob
        .replace(/[.+^${}()|[\]\\]/g, '\\$&')
        .replace(/\*/g, '.*')
        .replace(/\?/g, '.')}$`,
      's',
    );
    if (cache.size < 1024) cache.set(glob, re);
  }
  return re.test(text);
}
