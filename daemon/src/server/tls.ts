// The TLS listeners: libvirt's handshake (a client certificate the CA signed, then one byte),
// tls_allowed_dn_list, and new credentials for connections accepted from now on.

import tls from 'node:tls';
import type { Logger } from 'pino';
import { ErrorCode, ErrorDomain, VirError, globMatch } from '@virtauth/core';
import type { DaemonConfig } from '../config.js';
import { loadTlsMaterial, type TlsMaterial } from '../tls-material.js';

/** tls_allowed_dn_list: no list lets any certificate the CA signed in; a list, only DNs a glob matches. */
export function tlsClientAllowed(allowed: readonly string[] | null, dn: string): boolean {
  return allowed === null || allowed.some((glob) => globMatch(glob, dn));
}

/** The client certificate's subject as libvirt writes it for tls_allowed_dn_list: C=..,O=..,CN=.. */
export function clientDistinguishedName(socket: tls.TLSSocket): string {
  const raw = socket.getPeerX509Certificate();
  if (!raw) return '';
  return raw.subject.split('\n').join(',');
}

/** The daemon's TLS servers, which share one set of credentials. */
export class TlsListeners {
  private readonly servers: tls.Server[] = [];

  /** `config` is read when a client connects, so a reload's tls_allowed_dn_list applies to the next one. */
  constructor(
    private readonly config: DaemonConfig,
    private readonly log: Logger,
  ) {}

  get any(): boolean {
    return this.servers.length > 0;
  }

  /** A TLS server with the configured credentials; `onClient` gets each client it lets in, with its DN. */
  async create(onClient: (socket: tls.TLSSocket, dn: string) => void): Promise<tls.Server> {
    const material = await loadTlsMaterial(this.config);
    // libvirt requires a client certificate signed by the CA; the handshake enforces both.
    const server = tls.createServer({ ...material, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' });
    this.servers.push(server);
    server.on('secureConnection', (socket: tls.TLSSocket) => {
      const dn = clientDistinguishedName(socket);
      if (!tlsClientAllowed(this.config.tlsAllowedDnList, dn)) {
        this.log.warn({ event: 'client.refused', reason: 'tls_allowed_dn_list', dn }, 'client certificate DN not allowed');
        socket.destroy();
        return;
      }
      // The one byte libvirt's server sends once it has accepted the client's certificate.
      socket.write(Buffer.from([1]));
      onClient(socket, dn);
    });
    server.on('tlsClientError', (e) => this.log.warn({ event: 'tls.handshake.failed', err: e.message }, 'TLS handshake failed'));
    return server;
  }

  /** New credentials for connections accepted from now on; those connected keep theirs. */
  use(material: TlsMaterial): void {
    for (const server of this.servers) server.setSecureContext(material);
  }

  /**
   * Reads the TLS key, certificate and CA again and uses them for new connections, as libvirtd's
   * server-update-tls does.
   */
  async updateFiles(): Promise<void> {
    if (!this.any) {
      throw new VirError({
        code: ErrorCode.INTERNAL_ERROR,
        domain: ErrorDomain.RPC,
        detail: 'no tls service found, unable to update tls files',
      });
    }
    // Loading checks the set, so a bad file is an error for whoever asked, not for the next client.
    this.use(await loadTlsMaterial(this.config));
    this.log.info({ event: 'tls.files.updated', cert: this.config.certFile }, 'TLS files read again');
  }
}
