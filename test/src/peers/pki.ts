import { chmod, copyFile, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { requireExecutable } from './executables.js';
import { describeResult, runProcess } from './process.js';
import { tempDir } from './util.js';

/** A client identity laid out as libvirt's `pkipath` directory expects it. */
export interface ClientPkiDir {
  /** Directory holding cacert.pem, clientcert.pem and clientkey.pem (pass as `?pkipath=`). */
  pkiPath: string;
  caCertFile: string;
  certFile: string;
  keyFile: string;
  /** The certificate's subject as libvirtd's tls_allowed_dn_list matches it, e.g. "C=GB,O=virtauth,CN=client1". */
  subject: string;
}

export interface TestPkiOptions {
  /** Host names in the server certificate (first one is also its CN). Default ['localhost']. */
  serverDnsNames?: string[];
  /** IP addresses in the server certificate. Default ['127.0.0.1']. */
  serverIpAddresses?: string[];
  /** Client certificate DN fields. Default {country: 'GB', organization: 'virtauth', commonName: 'client1'}. */
  client?: DistinguishedName;
}

export interface DistinguishedName {
  country?: string;
  organization?: string;
  commonName: string;
}

const validityDays = 30;

/**
 * A throw-away PKI made with GnuTLS's certtool: a CA, a server certificate for localhost and
 * 127.0.0.1, a client certificate, and a client certificate from an unrelated CA (for negative
 * tests: it carries the right cacert.pem, so only the client-certificate check can reject it).
 */
export class TestPki {
  private constructor(
    readonly dir: string,
    readonly caCertFile: string,
    readonly caKeyFile: string,
    readonly serverCertFile: string,
    readonly serverKeyFile: string,
    readonly client: ClientPkiDir,
    readonly otherCaClient: ClientPkiDir,
  ) {}

  static async create(options: TestPkiOptions = {}): Promise<TestPki> {
    const certtool = requireExecutable('certtool', 'gnutls-bin');
    const dir = await tempDir('vk');
    try {
      const generator = new CertificateGenerator(certtool, dir);
      const ca = await generator.selfSignedCa('ca', 'virtauth test CA');
      const otherCa = await generator.selfSignedCa('other-ca', 'virtauth unrelated CA');

      const dnsNames = options.serverDnsNames ?? ['localhost'];
      const ipAddresses = options.serverIpAddresses ?? ['127.0.0.1'];
      const server = await generator.issue('server', ca, [
        `cn = ${quoteTemplateValue(dnsNames[0] ?? ipAddresses[0] ?? 'localhost')}`,
        ...dnsNames.map((name) => `dns_name = ${quoteTemplateValue(name)}`),
        ...ipAddresses.map((address) => `ip_address = ${quoteTemplateValue(address)}`),
        'tls_www_server',
      ]);

      const clientName = options.client ?? { country: 'GB', organization: 'virtauth', commonName: 'client1' };
      const client = await generator.clientPkiDir('client', ca, ca, clientName);
      const otherCaClient = await generator.clientPkiDir('other-ca-client', otherCa, ca, clientName);
      return new TestPki(dir, ca.certFile, ca.keyFile, server.certFile, server.keyFile, client, otherCaClient);
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  /**
   * Issues another client certificate from this CA and a CRL, signed by the CA, that revokes it
   * (what `crl_file` names). The revoked client's pkipath trusts this CA like the good one.
   */
  async revokedClient(
    dn: DistinguishedName = { country: 'GB', organization: 'virtauth', commonName: 'revoked1' },
  ): Promise<{ client: ClientPkiDir; crlFile: string }> {
    const certtool = requireExecutable('certtool', 'gnutls-bin');
    const generator = new CertificateGenerator(certtool, this.dir);
    const ca = { certFile: this.caCertFile, keyFile: this.caKeyFile };
    const client = await generator.clientPkiDir('revoked-client', ca, ca, dn);
    const crlFile = await generator.revocationList('crl', ca, [client.certFile]);
    return { client, crlFile };
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

interface IssuedCertificate {
  certFile: string;
  keyFile: string;
}

function quoteTemplateValue(value: string): string {
  // Commas and '=' are refused too, so the DN string below needs no escaping.
  if (/["\n\\,=+]/.test(value)) {
    throw new Error(`certificate field ${JSON.stringify(value)} may not contain quotes, backslashes, newlines, ',', '=' or '+'`);
  }
  return `"${value}"`;
}

/**
 * The DN as libvirtd prints and matches it for tls_allowed_dn_list (`virt-pki-query-dn`):
 * most significant first, "C=GB,O=virtauth,CN=client1" (certtool -i shows the RFC 4514 reverse).
 */
function libvirtDnString(dn: DistinguishedName): string {
  return [
    ...(dn.country === undefined ? [] : [`C=${dn.country}`]),
    ...(dn.organization === undefined ? [] : [`O=${dn.organization}`]),
    `CN=${dn.commonName}`,
  ].join(',');
}

class CertificateGenerator {
  constructor(
    private readonly certtool: string,
    private readonly dir: string,
  ) {}

  async selfSignedCa(name: string, commonName: string): Promise<IssuedCertificate> {
    const keyFile = await this.privateKey(name);
    const certFile = join(this.dir, `${name}-cert.pem`);
    // crl_signing_key: OpenSSL takes a CRL only from an issuer whose key usage allows it.
    const template = await this.template(name, [`cn = ${quoteTemplateValue(commonName)}`, 'ca', 'cert_signing_key', 'crl_signing_key']);
    await this.run(['--generate-self-signed', '--load-privkey', keyFile, '--template', template, '--no-text', '--outfile', certFile]);
    return { certFile, keyFile };
  }

  async issue(name: string, issuer: IssuedCertificate, fields: string[]): Promise<IssuedCertificate> {
    const keyFile = await this.privateKey(name);
    const certFile = join(this.dir, `${name}-cert.pem`);
    const template = await this.template(name, [...fields, 'encryption_key', 'signing_key']);
    await this.run([
      '--generate-certificate',
      '--load-privkey',
      keyFile,
      '--load-ca-certificate',
      issuer.certFile,
      '--load-ca-privkey',
      issuer.keyFile,
      '--template',
      template,
      '--no-text',
      '--outfile',
      certFile,
    ]);
    return { certFile, keyFile };
  }

  /** Issues a client certificate from `issuer` and lays it out with `trusted`'s CA as a pkipath. */
  async clientPkiDir(name: string, issuer: IssuedCertificate, trusted: IssuedCertificate, dn: DistinguishedName): Promise<ClientPkiDir> {
    const fields = [
      ...(dn.country === undefined ? [] : [`country = ${quoteTemplateValue(dn.country)}`]),
      ...(dn.organization === undefined ? [] : [`organization = ${quoteTemplateValue(dn.organization)}`]),
      `cn = ${quoteTemplateValue(dn.commonName)}`,
      'tls_www_client',
    ];
    const issued = await this.issue(name, issuer, fields);
    const pkiPath = join(this.dir, name);
    await mkdir(pkiPath, { mode: 0o700 });
    const caCertFile = join(pkiPath, 'cacert.pem');
    const certFile = join(pkiPath, 'clientcert.pem');
    const keyFile = join(pkiPath, 'clientkey.pem');
    await this.copy(trusted.certFile, caCertFile, 0o644);
    await this.copy(issued.certFile, certFile, 0o644);
    await this.copy(issued.keyFile, keyFile, 0o600);
    return { pkiPath, caCertFile, certFile, keyFile, subject: libvirtDnString(dn) };
  }

  /** A CRL from `issuer` listing the certificates in `revokedCertFiles`. */
  async revocationList(name: string, issuer: IssuedCertificate, revokedCertFiles: string[]): Promise<string> {
    const crlFile = join(this.dir, `${name}.pem`);
    const template = join(this.dir, `${name}.template`);
    await writeFile(template, 'crl_next_update = 30\ncrl_number = 1\n');
    await this.run([
      '--generate-crl',
      '--load-ca-privkey',
      issuer.keyFile,
      '--load-ca-certificate',
      issuer.certFile,
      ...revokedCertFiles.flatMap((file) => ['--load-certificate', file]),
      '--template',
      template,
      '--no-text',
      '--outfile',
      crlFile,
    ]);
    return crlFile;
  }

  private async privateKey(name: string): Promise<string> {
    const keyFile = join(this.dir, `${name}-key.pem`);
    // RSA 2048 is what every TLS stack accepts and certtool makes one in tens of milliseconds.
    await this.run(['--generate-privkey', '--key-type=rsa', '--bits=2048', '--no-text', '--outfile', keyFile]);
    return keyFile;
  }

  private async template(name: string, lines: string[]): Promise<string> {
    const path = join(this.dir, `${name}.template`);
    await writeFile(path, [...lines, `expiration_days = ${validityDays}`, ''].join('\n'));
    return path;
  }

  private async copy(from: string, to: string, mode: number): Promise<void> {
    await copyFile(from, to);
    await chmod(to, mode);
  }

  private async run(args: string[]): Promise<string> {
    const result = await runProcess(this.certtool, args, { timeoutMs: 30_000 });
    if (result.code !== 0) {
      throw new Error(`certtool ${args[0]} failed: ${describeResult(result)}`);
    }
    return result.stdout;
  }
}
