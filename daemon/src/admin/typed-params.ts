// Typed parameters an admin client sends (client limits, worker pool), checked as libvirt's
// virTypedParamsValidate checks them: known names only, each once, each of its declared type.

import { ErrorCode, ErrorDomain, VirError } from '@virtauth/core';
import { ParamType, type TypedParam } from './client-info.js';

const TYPE_NAMES: Record<number, string> = { 1: 'int', 2: 'uint', 3: 'llong', 4: 'ullong', 5: 'double', 6: 'boolean', 7: 'string' };

/** Validates `params` against `allowed` (name → type) and returns the unsigned values by name. */
export function validateUintParams(params: readonly TypedParam[], allowed: readonly string[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const p of params) {
    if (!allowed.includes(p.field)) {
      throw new VirError({
        code: ErrorCode.ARGUMENT_UNSUPPORTED,
        domain: ErrorDomain.NONE,
        detail: `parameter '${p.field}' not supported`,
      });
    }
    if (out.has(p.field)) {
      throw new VirError({ code: ErrorCode.INVALID_ARG, domain: ErrorDomain.NONE, detail: `parameter '${p.field}' occurs multiple times` });
    }
    if (p.value.tag !== ParamType.UINT) {
      throw new VirError({
        code: ErrorCode.INVALID_ARG,
        domain: ErrorDomain.NONE,
        detail: `invalid type '${TYPE_NAMES[p.value.tag] ?? p.value.tag}' for parameter '${p.field}', expected 'uint'`,
      });
    }
    out.set(p.field, p.value.value);
  }
  return out;
}
