// The server's TLS key, certificate, CA and (when crl_file names one) CRL, read as one set: at
// start, and again on SIGHUP, where a set that fails to load or to make a context leaves the
// running one in place.

import { readFile } from 'node:fs/promises';
import tls from 'node:tls';
import { ErrorCode, ErrorDomain, VirError } from '@virtauth/core';
import type { DaemonConfig } from './config.js';

export interface TlsMaterial {
  key: Buffer;
  cert: Buffer;
  ca: Buffer;
  crl?: Buffer;
}

async function readPem(what: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    throw new VirError({
      code: ErrorCode.SYSTEM_ERROR,
      domain: ErrorDomain.RPC,
      detail: `Cannot read TLS ${what} '${path}': ${(e as Error).message}`,
    });
  }
}

export async function loadTlsMaterial(cfg: Pick<DaemonConfig, 'keyFile' | 'certFile' | 'caFile' | 'crlFile'>): Promise<TlsMaterial> {
  const [key, cert, ca, crl] = await Promise.all([
    readPem('key', cfg.keyFile),
    readPem('certificate', cfg.certFile),
    readPem('CA certificate', cfg.caFile),
    cfg.crlFile === null ? undefined : readPem('certificate revocation list', cfg.crlFile),
  ]);
  const material: TlsMaterial = crl ? { key, cert, ca, crl } : { key, cert, ca };
  // Building a context here checks that the key matches the certificate and that every PEM
  // parses, so a broken set is refused before any listener uses it.
  try {
    tls.createSecureContext(material);
  } catch (e) {
    throw new VirError({
      code: ErrorCode.SYSTEM_ERROR,
      domain: ErrorDomain.RPC,
      detail: `Unusable TLS credentials (key '${cfg.keyFile}', certificate '${cfg.certFile}', CA '${cfg.caFile}'): ${(e as Error).message}`,
    });
  }
  return material;
}
