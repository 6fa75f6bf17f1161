// TLS channel binding data for SCRAM -PLUS: `tls-exporter` (RFC 9266) on TLS 1.3, and
// `tls-server-end-point` (RFC 5929) on older versions, where the exporter is only safe with the
// extended master secret, which node does not let us check.

import { createHash, X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { ChannelBinding } from '@virtauth/core';

export const TLS_EXPORTER_LABEL = 'EXPORTER-Channel-Binding';
export const TLS_EXPORTER_LENGTH = 32;

/**
 * The channel binding for this end of an established TLS connection, or null when none can be
 * computed (handshake not finished, no server certificate, or a certificate signature algorithm
 * for which RFC 5929 defines no hash, e.g. Ed25519 on TLS 1.2).
 */
export function channelBindingFor(socket: TLSSocket, side: 'client' | 'server'): ChannelBinding | null {
  // getProtocol() answers even before the handshake; the Finished messages prove it is complete.
  if (!socket.encrypted || socket.getFinished() === undefined || socket.getPeerFinished() === undefined) return null;
  const protocol = socket.getProtocol();
  if (protocol === null || protocol === 'unknown') return null;
  if (protocol === 'TLSv1.3') {
    // RFC 9266 §2: empty context. In TLS 1.3 an empty context and no context give the same bytes.
    return { type: 'tls-exporter', data: socket.exportKeyingMaterial(TLS_EXPORTER_LENGTH, TLS_EXPORTER_LABEL, Buffer.alloc(0)) };
  }
  const certificate = side === 'client' ? socket.getPeerCertificate(false) : socket.getCertificate();
  const der: unknown = certificate && 'raw' in certificate ? certificate.raw : undefined;
  if (!Buffer.isBuffer(der) || der.length === 0) return null;
  const data = tlsServerEndPointData(der);
  return data ? { type: 'tls-server-end-point', data } : null;
}

/** RFC 5929 §4.1: the certificate hashed with its signature's hash, MD5 and SHA-1 upgraded to SHA-256. */
export function tlsServerEndPointData(certificateDer: Buffer): Buffer | null {
  const hash = serverEndPointHash(certificateDer);
  return hash ? createHash(hash).update(certificateDer).digest() : null;
}

const SIGNATURE_HASHES: Record<string, string | 'pss'> = {
  '1.2.840.113549.1.1.4': 'sha256', // md5WithRSAEncryption (upgraded)
  '1.2.840.113549.1.1.5': 'sha256', // sha1WithRSAEncryption (upgraded)
  '1.2.840.113549.1.1.14': 'sha224',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.113549.1.1.10': 'pss', // RSASSA-PSS: the hash is in the parameters
  '1.2.840.10045.4.1': 'sha256', // ecdsa-with-SHA1 (upgraded)
  '1.2.840.10045.4.3.1': 'sha224',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
  '1.2.840.10040.4.3': 'sha256', // dsa-with-sha1 (upgraded)
  '2.16.840.1.101.3.4.3.1': 'sha224',
  '2.16.840.1.101.3.4.3.2': 'sha256',
};

const DIGEST_OIDS: Record<string, string> = {
  '1.3.14.3.2.26': 'sha256', // SHA-1 (upgraded)
  '2.16.840.1.101.3.4.2.4': 'sha224',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};

/** Node's digest name for a certificate's tls-server-end-point hash, or null when undefined. */
export function serverEndPointHash(certificateDer: Buffer): string | null {
  // X509Certificate validates the DER; node 20 does not expose the signature algorithm, so the
  // outer AlgorithmIdentifier is read directly.
  new X509Certificate(certificateDer);
  const certificate = readTlv(certificateDer, 0, 0x30);
  const tbs = readTlv(certificateDer, certificate.contentStart, 0x30);
  const algorithm = readTlv(certificateDer, tbs.end, 0x30);
  const oid = readTlv(certificateDer, algorithm.contentStart, 0x06);
  const mapped = SIGNATURE_HASHES[decodeOid(certificateDer.subarray(oid.contentStart, oid.end))];
  if (mapped === undefined) return null;
  if (mapped !== 'pss') return mapped;
  // RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0] AlgorithmIdentifier DEFAULT sha1, ... }
  if (oid.end >= algorithm.end) return 'sha256';
  const params = readTlv(certificateDer, oid.end, 0x30);
  if (params.contentStart >= params.end || certificateDer[params.contentStart] !== 0xa0) return 'sha256';
  const explicit = readTlv(certificateDer, params.contentStart, 0xa0);
  const hashAlgorithm = readTlv(certificateDer, explicit.contentStart, 0x30);
  const hashOid = readTlv(certificateDer, hashAlgorithm.contentStart, 0x06);
  return DIGEST_OIDS[decodeOid(certificateDer.subarray(hashOid.contentStart, hashOid.end))] ?? null;
}

interface Tlv {
  contentStart: number;
  end: number;
}

function readTlv(der: Buffer, offset: number, expectedTag: number): Tlv {
  if (offset + 2 > der.length || der[offset] !== expectedTag) throw new Error('malformed certificate DER');
  let length = der[offset + 1]!;
  let contentStart = offset + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    if (octets === 0 || octets > 4 || contentStart + octets > der.length) throw new Error('malformed certificate DER');
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + der[contentStart + i]!;
    contentStart += octets;
  }
  const end = contentStart + length;
  if (end > der.length) throw new Error('malformed certificate DER');
  return { contentStart, end };
}

function decodeOid(bytes: Buffer): string {
  const arcs: number[] = [];
  let value = 0;
  for (const byte of bytes) {
    value = value * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) {
      arcs.push(value);
      value = 0;
    }
  }
  const first = arcs.shift() ?? 0;
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80];
  return [...head, ...arcs].join('.');
}
