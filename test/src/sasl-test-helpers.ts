// A bare RPC client for SASL tests that must see the wire (AUTH_LIST, AUTH_SASL_INIT, retries on
// one connection, when the server hangs up): virtauth's transport and SASL client half, without
// the remote driver around them, so the same steps can be run against virtauthd and libvirtd.

import {
  CredentialType,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  RemoteProc,
  RpcConnection,
  VirError,
  makeCredentialRequester,
  parseUri,
  remote,
  xdr,
  type ChannelBindingPolicy,
  type Codec,
  type ConnectAuth,
  type SaslMechanism,
  type TransportInfo,
} from '@virtauth/core';
import { openTransport } from '@virtauth/drivers';
import { PlainMechanism, SaslAuthProvider, ScramSha256Mechanism, ScramSha256PlusMechanism } from '@virtauth/providers';

export interface SaslFailure {
  code: number;
  domain: number;
  message: string;
}

export function describeFailure(error: unknown): SaslFailure {
  if (!(error instanceof VirError)) throw error;
  return { code: error.code, domain: error.domain, message: error.message };
}

export function defaultClientMechanisms(): SaslMechanism[] {
  return [new ScramSha256PlusMechanism(), new ScramSha256Mechanism(), new PlainMechanism()];
}

export interface LoginOptions {
  authname: string;
  passphrase: string;
  /** `auth=sasl.MECH`: only this mechanism. */
  mechanism?: string;
  channelBindingPolicy?: ChannelBindingPolicy;
  mechanisms?: () => readonly SaslMechanism[];
}

/** One connection to a daemon, spoken to procedure by procedure. */
export class RawClient {
  /** The procedures called so far, in order (which step a failure came at). */
  readonly procs: number[] = [];

  private constructor(
    readonly uri: string,
    readonly rpc: RpcConnection,
    readonly transport: TransportInfo,
  ) {}

  static async connect(uri: string): Promise<RawClient> {
    const { socket, info } = await openTransport(parseUri(uri), { readOnly: false, timeoutMs: 10_000 });
    const rpc = new RpcConnection(socket);
    socket.resume();
    return new RawClient(uri, rpc, info);
  }

  call<A, R>(proc: number, args: Codec<A>, value: A, ret: Codec<R>): Promise<R> {
    this.procs.push(proc);
    return this.rpc.call(REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION, proc, args, value, ret);
  }

  async authList(): Promise<number[]> {
    return (await this.call(RemoteProc.AUTH_LIST, xdr.xvoid, undefined, remote.authListRet)).types;
  }

  async saslInit(): Promise<string> {
    return (await this.call(RemoteProc.AUTH_SASL_INIT, xdr.xvoid, undefined, remote.authSaslInitRet)).mechlist;
  }

  /** A whole SASL exchange (AUTH_SASL_INIT, START, STEPs) with virtauth's client half. */
  async login(options: LoginOptions): Promise<void> {
    const provider = new SaslAuthProvider(options.mechanisms ?? defaultClientMechanisms);
    const auth: ConnectAuth = {
      credTypes: [CredentialType.AUTHNAME, CredentialType.PASSPHRASE],
      callback: (creds) => {
        for (const c of creds) c.result = c.type === CredentialType.AUTHNAME ? options.authname : options.passphrase;
      },
    };
    const parsed = parseUri(this.uri);
    await provider.client.authenticate({
      rpc: { call: (proc, args, value, ret) => this.call(proc, args, value, ret) },
      uri: parsed,
      mechanism: options.mechanism ?? null,
      transport: this.transport,
      auth,
      requestCredentials: makeCredentialRequester([], auth),
      service: 'libvirt',
      host: parsed.host || 'localhost',
      channelBindingPolicy: options.channelBindingPolicy ?? 'prefer',
    });
  }

  /** CONNECT_OPEN of the test driver, then the host name: proof the login took. */
  async openAndGetHostname(): Promise<string> {
    await this.call(RemoteProc.CONNECT_OPEN, remote.connectOpenArgs, { name: 'test:///default', flags: 0 }, xdr.xvoid);
    return (await this.call(RemoteProc.CONNECT_GET_HOSTNAME, xdr.xvoid, undefined, remote.connectGetHostnameRet)).hostname;
  }

  async closeConnection(): Promise<void> {
    await this.call(RemoteProc.CONNECT_CLOSE, xdr.xvoid, undefined, xdr.xvoid);
    this.rpc.close(null);
  }

  /** Resolves true if the server closes the connection within `ms`. */
  async closedWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    const closed = this.rpc.whenClosed().then(() => true as const);
    try {
      return await Promise.race([closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    this.rpc.close(null);
  }
}

/** AUTH_LIST then AUTH_SASL_INIT on a fresh connection; the error INIT fails with. */
export async function saslInitOutcome(uri: string): Promise<{ authList: number[]; failure: SaslFailure | null }> {
  const client = await RawClient.connect(uri);
  try {
    const authList = await client.authList();
    try {
      await client.saslInit();
      return { authList, failure: null };
    } catch (error) {
      return { authList, failure: describeFailure(error) };
    }
  } finally {
    client.close();
  }
}

/** The procedure (AUTH_SASL_START or AUTH_SASL_STEP) at which a login is refused, and the error. */
export async function failingStep(
  uri: string,
  authname: string,
  passphrase: string,
): Promise<{ proc: number; failure: SaslFailure } | null> {
  const client = await RawClient.connect(uri);
  try {
    await client.authList();
    await client.login({ authname, passphrase, mechanism: 'SCRAM-SHA-256' });
    return null;
  } catch (e) {
    return { proc: client.procs.at(-1)!, failure: describeFailure(e) };
  } finally {
    client.close();
  }
}
