// The SCRAM exchange itself, client and server halves, shared by SCRAM-SHA-256 and its -PLUS
// variant (which differ only in how channel binding is negotiated).

import { createHmac, randomBytes } from 'node:crypto';
import {
  SaslAuthenticationError,
  VirError,
  type SaslClientContext,
  type SaslClientSession,
  type SaslMechanism,
  type SaslServerContext,
  type SaslServerSession,
  type SaslStepResult,
  type ScramVerifier,
} from '@virtauth/core';
import { collectPasswordCredentials, saslClientError, throwIfAborted } from './client-support.js';
import {
  authMessage,
  clientProof,
  constantTimeEqual,
  decodeScramMessage,
  DEFAULT_SALT_LENGTH,
  DEFAULT_SCRAM_ITERATIONS,
  deriveKeys,
  formatClientFinalWithoutProof,
  formatClientFirstBare,
  formatGs2Header,
  formatServerFirst,
  generateNonce,
  hi,
  hmac,
  isPrintableNonce,
  parseClientFinal,
  parseClientFirst,
  parseServerFinal,
  parseServerFirst,
  prepareString,
  SaslPrepError,
  ScramProtocolError,
  ScramServerError,
  serverSignature,
  verifyClientProof,
  type ChannelBindingFlag,
  type ClientFirstMessage,
  type ScramHashAlgorithm,
} from './scram.js';

export interface ScramMechanismOptions {
  /** Source of nonces (the client nonce, and the part the server appends); injectable for test vectors. */
  generateNonce?: () => string;
  /**
   * Iteration count announced for user names the database does not know. Set it to the count the
   * user database uses for new verifiers, so that unknown and known users look alike.
   */
  unknownUserIterations?: number;
  /**
   * Go on with a fake salt for an unknown user name and fail at the final step, as for a wrong
   * password, so a probe cannot tell which names exist. Off by default: libvirtd (through
   * Cyrus) refuses an unknown user at AUTH_SASL_START, and virtauth answers at the same step.
   */
  concealUnknownUsers?: boolean;
}

interface ResolvedOptions {
  generateNonce: () => string;
  unknownUserIterations: number;
  concealUnknownUsers: boolean;
}

/**
 * Key for the fake salts of unknown users. Per process: a probe sees a stable salt per name (as
 * for a real user) but cannot compare salts across daemon restarts to tell real from fake.
 */
const UNKNOWN_USER_SECRET = randomBytes(32);

/**
 * SaltedPassword computed by this process's clients, so that logging in again with the same
 * password, salt and iteration count skips PBKDF2 (RFC 5802 §5.1 lets a client keep it). Entries
 * are found by an HMAC under a per-process key: the cache holds no password. Small and bounded;
 * the least recently used entry goes first.
 */
class SaltedPasswordCache {
  private readonly entries = new Map<string, Buffer>();
  private readonly key = randomBytes(32);

  constructor(private readonly capacity: number) {}

  async derive(hash: ScramHashAlgorithm, password: string, salt: Buffer, iterations: number): Promise<Buffer> {
    const id = createHmac('sha256', this.key)
      .update(`${hash.name}\0${iterations}\0`)
      .update(salt)
      .update('\0')
      .update(password, 'utf8')
      .digest('base64');
    const cached = this.entries.get(id);
    if (cached) {
      this.entries.delete(id);
      this.entries.set(id, cached);
      return cached;
    }
    const salted = await hi(hash, password, salt, iterations);
    this.entries.set(id, salted);
    if (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
    return salted;
  }
}

const clientSaltedPasswords = new SaltedPasswordCache(64);

export abstract class ScramMechanism implements SaslMechanism {
  abstract readonly name: string;
  abstract readonly priority: number;
  /** SCRAM never reveals the password, so it may run on any channel. */
  readonly requiresSecureChannel = false;
  abstract readonly requiresChannelBinding: boolean;
  private readonly options: ResolvedOptions;

  protected constructor(
    readonly hash: ScramHashAlgorithm,
    options: ScramMechanismOptions,
  ) {
    const unknownUserIterations = options.unknownUserIterations ?? DEFAULT_SCRAM_ITERATIONS;
    if (!Number.isInteger(unknownUserIterations) || unknownUserIterations < 1) {
      throw new RangeError(`unknownUserIterations must be a positive integer, got ${unknownUserIterations}`);
    }
    this.options = {
      generateNonce: options.generateNonce ?? generateNonce,
      unknownUserIterations,
      concealUnknownUsers: options.concealUnknownUsers ?? false,
    };
  }

  /** Whether this is the channel-binding (-PLUS) variant. */
  protected abstract readonly plus: boolean;

  /** The name of the channel-binding variant of this mechanism family. */
  protected get plusName(): string {
    return this.plus ? this.name : `${this.name}-PLUS`;
  }

  createClient(ctx: SaslClientContext): SaslClientSession {
    return new ScramClientSession(this.name, this.hash, this.chooseClientBinding.bind(this, ctx), ctx, this.options);
  }

  createServer(ctx: SaslServerContext): SaslServerSession {
    return new ScramServerSession(this.name, this.hash, this.plus, ctx, this.options);
  }

  /** RFC 5802 §6: which GS2 channel binding flag the client sends, and the binding data. */
  private chooseClientBinding(ctx: SaslClientContext): { flag: ChannelBindingFlag; data: Buffer } {
    const binding = ctx.channelBinding;
    if (this.plus) {
      if (ctx.channelBindingPolicy === 'disable')
        throw saslClientError(this.name, 'channel binding is disabled by configuration, but this mechanism needs it');
      if (!binding) throw saslClientError(this.name, 'this mechanism needs TLS channel binding, but the connection provides none');
      return { flag: { kind: 'p', name: binding.type }, data: binding.data };
    }
    const serverOffersPlus = ctx.serverMechanisms.some((m) => m.toUpperCase() === this.plusName.toUpperCase());
    if (ctx.channelBindingPolicy === 'require') {
      if (!binding)
        throw saslClientError(this.name, 'channel binding is required, but the connection provides no TLS channel binding data');
      if (!serverOffersPlus)
        throw saslClientError(this.name, `channel binding is required, but the server does not offer ${this.plusName}`);
      throw saslClientError(this.name, `channel binding is required: use ${this.plusName}, which the server offers`);
    }
    // "y": we could bind but the server seems unable to; a server that can will detect a downgrade.
    if (binding && ctx.channelBindingPolicy !== 'disable' && !serverOffersPlus) return { flag: { kind: 'y' }, data: Buffer.alloc(0) };
    return { flag: { kind: 'n' }, data: Buffer.alloc(0) };
  }
}

type ClientState = 'initial' | 'awaiting-server-first' | 'awaiting-server-final' | 'complete' | 'failed';

class ScramClientSession implements SaslClientSession {
  private state: ClientState = 'initial';
  private gs2Header = '';
  private bindingData: Buffer = Buffer.alloc(0);
  private clientNonce = '';
  private clientFirstBare = '';
  /** SASLprep'd password, kept only until the salted password is derived. */
  private preparedPassword: string | null = null;
  private expectedServerSignature: Buffer | null = null;

  constructor(
    private readonly mechanism: string,
    private readonly hash: ScramHashAlgorithm,
    private readonly chooseBinding: () => { flag: ChannelBindingFlag; data: Buffer },
    private readonly ctx: SaslClientContext,
    private readonly options: ResolvedOptions,
  ) {}

  get complete(): boolean {
    return this.state === 'complete';
  }

  start(): Promise<Buffer | null> {
    return this.guard('initial', async () => {
      // Decided before prompting: a policy failure must not cost the user a password prompt.
      const binding = this.chooseBinding();
      const creds = await collectPasswordCredentials(this.mechanism, this.ctx);
      const username = prepareString(creds.authcid, 'user name', 'query');
      const authzid = creds.authzid !== null ? prepareString(creds.authzid, 'authorization name', 'query') : null;
      this.preparedPassword = prepareString(creds.password, 'password', 'query');
      this.clientNonce = this.options.generateNonce();
      if (!isPrintableNonce(this.clientNonce))
        throw new RangeError('the nonce generator produced a nonce with non-printable characters or ","');
      this.gs2Header = formatGs2Header(binding.flag, authzid);
      this.bindingData = binding.data;
      this.clientFirstBare = formatClientFirstBare(username, this.clientNonce);
      this.state = 'awaiting-server-first';
      return Buffer.from(this.gs2Header + this.clientFirstBare, 'utf8');
    });
  }

  step(challenge: Buffer | null): Promise<Buffer | null> {
    if (this.state === 'awaiting-server-first') return this.guard('awaiting-server-first', () => this.answerServerFirst(challenge));
    return this.guard('awaiting-server-final', () => this.checkServerFinal(challenge));
  }

  private async answerServerFirst(challenge: Buffer | null): Promise<Buffer> {
    const serverFirstText = decodeScramMessage(challenge, 'the server-first-message');
    const serverFirst = parseServerFirst(serverFirstText);
    if (!serverFirst.nonce.startsWith(this.clientNonce) || serverFirst.nonce.length === this.clientNonce.length) {
      throw saslClientError(this.mechanism, "the server's nonce does not extend the client's nonce");
    }
    const minIterations = this.ctx.minIterations ?? DEFAULT_SCRAM_ITERATIONS;
    if (serverFirst.iterations < minIterations) {
      throw saslClientError(
        this.mechanism,
        `the server asks for only ${serverFirst.iterations} PBKDF2 iterations, fewer than the required minimum of ${minIterations}: a proof made with so few would be cheap to crack offline`,
      );
    }
    if (serverFirst.iterations > this.ctx.maxIterations) {
      throw saslClientError(
        this.mechanism,
        `the server asks for ${serverFirst.iterations} PBKDF2 iterations, more than the accepted maximum of ${this.ctx.maxIterations}`,
      );
    }
    throwIfAborted(this.mechanism, this.ctx.signal);
    const password = this.preparedPassword;
    this.preparedPassword = null;
    if (password === null) throw saslClientError(this.mechanism, 'internal state error: no password');
    const keys = deriveKeys(this.hash, await clientSaltedPasswords.derive(this.hash, password, serverFirst.salt, serverFirst.iterations));
    throwIfAborted(this.mechanism, this.ctx.signal);
    const cbindInput = Buffer.concat([Buffer.from(this.gs2Header, 'utf8'), this.bindingData]);
    const withoutProof = formatClientFinalWithoutProof(cbindInput, serverFirst.nonce);
    const message = authMessage(this.clientFirstBare, serverFirstText, withoutProof);
    this.expectedServerSignature = serverSignature(this.hash, keys.serverKey, message);
    this.state = 'awaiting-server-final';
    return Buffer.from(`${withoutProof},p=${clientProof(this.hash, keys, message).toString('base64')}`, 'utf8');
  }

  private async checkServerFinal(challenge: Buffer | null): Promise<null> {
    const serverFinal = parseServerFinal(decodeScramMessage(challenge, 'the server-final-message'));
    if (serverFinal.kind === 'error') throw new ScramServerError(serverFinal.errorValue);
    if (!this.expectedServerSignature || !constantTimeEqual(serverFinal.signature, this.expectedServerSignature)) {
      throw saslClientError(this.mechanism, "the server's signature is wrong: the server could not prove it knows the password verifier");
    }
    this.state = 'complete';
    return null;
  }

  /** Runs one step in the expected state; any failure ends the session with a VirError. */
  private async guard<T>(expected: ClientState, run: () => Promise<T>): Promise<T> {
    if (this.state !== expected) {
      const was = this.state;
      this.state = 'failed';
      throw saslClientError(
        this.mechanism,
        was === 'complete' ? 'the server sent data after the exchange completed' : `unexpected exchange step (session is ${was})`,
      );
    }
    try {
      return await run();
    } catch (e) {
      this.state = 'failed';
      this.preparedPassword = null;
      if (e instanceof VirError) throw e;
      if (e instanceof ScramServerError) throw saslClientError(this.mechanism, `the server rejected the authentication (${e.errorValue})`);
      if (e instanceof ScramProtocolError) throw saslClientError(this.mechanism, `malformed server message: ${e.message}`);
      if (e instanceof SaslPrepError) throw saslClientError(this.mechanism, e.message);
      throw saslClientError(this.mechanism, 'internal error during the exchange', e);
    }
  }
}

type ServerState = 'awaiting-client-first' | 'awaiting-client-final' | 'done' | 'failed';

/**
 * Server half. An unknown user name fails at the first step, as libvirtd's does; with
 * `concealUnknownUsers` the exchange goes on with a fake salt and the configured iteration count
 * and fails at the final step exactly as a wrong password does.
 */
class ScramServerSession implements SaslServerSession {
  private state: ServerState = 'awaiting-client-first';
  private claimedUser: string | undefined;
  private authzid: string | null = null;
  private clientFirst: ClientFirstMessage | null = null;
  private serverFirst = '';
  private nonce = '';
  private verifier: ScramVerifier | null = null;
  username: string | null = null;

  constructor(
    private readonly mechanism: string,
    private readonly hash: ScramHashAlgorithm,
    private readonly plus: boolean,
    private readonly ctx: SaslServerContext,
    private readonly options: ResolvedOptions,
  ) {}

  async step(response: Buffer | null): Promise<SaslStepResult> {
    const state = this.state;
    try {
      if (state === 'awaiting-client-first') return await this.handleClientFirst(response);
      if (state === 'awaiting-client-final') return this.handleClientFinal(response);
      throw new SaslAuthenticationError(
        `${this.mechanism}: client sent data after the exchange ${state === 'done' ? 'completed' : 'failed'}`,
        this.claimedUser,
      );
    } catch (e) {
      this.state = 'failed';
      this.username = null;
      if (e instanceof SaslAuthenticationError) throw e;
      if (e instanceof ScramProtocolError) throw this.fail(`${e.errorValue}: ${e.message}`);
      if (e instanceof SaslPrepError) throw this.fail(`invalid-username-encoding: ${e.message}`);
      throw this.fail(`internal error: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  private fail(reason: string): SaslAuthenticationError {
    return new SaslAuthenticationError(`${this.mechanism}: ${reason}`, this.claimedUser);
  }

  private async handleClientFirst(response: Buffer | null): Promise<SaslStepResult> {
    const clientFirst = parseClientFirst(decodeScramMessage(response, 'the client-first-message'));
    this.claimedUser = clientFirst.username;
    this.checkBindingFlag(clientFirst.flag);
    const username = prepareString(clientFirst.username, 'user name', 'query');
    this.claimedUser = username;
    this.authzid = clientFirst.authzid !== null ? prepareString(clientFirst.authzid, 'authorization name', 'query') : null;
    let verifier: ScramVerifier | null;
    try {
      verifier = await this.ctx.users.getVerifier(username, this.hash.name);
    } catch (e) {
      throw this.fail(`user database lookup failed: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (verifier !== null && verifier.hash !== this.hash.name)
      throw this.fail(`user database returned a ${verifier.hash} verifier for ${this.hash.name}`);
    if (verifier === null && !this.options.concealUnknownUsers) throw this.fail('unknown-user: no such user in the user database');
    this.verifier = verifier;
    const suffix = this.options.generateNonce();
    if (!isPrintableNonce(suffix)) throw this.fail('internal error: the nonce generator produced an invalid nonce');
    this.nonce = clientFirst.nonce + suffix;
    const salt = verifier?.salt ?? this.fakeSalt(username);
    const iterations = verifier?.iterations ?? this.options.unknownUserIterations;
    this.serverFirst = formatServerFirst(this.nonce, salt, iterations);
    this.clientFirst = clientFirst;
    this.state = 'awaiting-client-final';
    return { done: false, data: Buffer.from(this.serverFirst, 'utf8') };
  }

  /** RFC 5802 §6 rules for the GS2 channel binding flag. */
  private checkBindingFlag(flag: ChannelBindingFlag): void {
    if (!this.plus) {
      if (flag.kind === 'p')
        throw this.fail(
          'channel-binding-not-supported: the client asked for channel binding on a mechanism without it (use the -PLUS variant)',
        );
      if (flag.kind === 'y' && this.ctx.serverOffersChannelBinding) {
        throw this.fail(
          'server-does-support-channel-binding: the client supports channel binding but believes the server does not (possible downgrade attack: the mechanism list may have been tampered with)',
        );
      }
      return;
    }
    if (flag.kind !== 'p')
      throw this.fail(`channel-binding-not-supported: the client sent "${flag.kind}" but ${this.mechanism} requires channel binding`);
    const binding = this.ctx.channelBinding;
    if (!binding) throw this.fail('channel-binding-not-supported: this connection has no TLS channel binding data');
    if (flag.name !== binding.type)
      throw this.fail(`unsupported-channel-binding-type: the client asked for "${flag.name}", this connection provides "${binding.type}"`);
  }

  private handleClientFinal(response: Buffer | null): SaslStepResult {
    const clientFirst = this.clientFirst;
    if (!clientFirst) throw this.fail('internal state error: no client-first-message');
    const clientFinal = parseClientFinal(decodeScramMessage(response, 'the client-final-message'));
    const cbindData = this.plus && this.ctx.channelBinding ? this.ctx.channelBinding.data : Buffer.alloc(0);
    const expectedCbindInput = Buffer.concat([Buffer.from(clientFirst.gs2Header, 'utf8'), cbindData]);
    if (!constantTimeEqual(clientFinal.channelBinding, expectedCbindInput)) {
      throw this.fail(
        'channel-bindings-dont-match: the channel binding data differs from this connection (man-in-the-middle, or a GS2 header mismatch)',
      );
    }
    if (!constantTimeEqual(Buffer.from(clientFinal.nonce, 'utf8'), Buffer.from(this.nonce, 'utf8'))) {
      throw this.fail('invalid-encoding: the client-final-message nonce differs from the negotiated nonce');
    }
    const message = authMessage(clientFirst.bare, this.serverFirst, clientFinal.withoutProof);
    const verifier = this.verifier ?? this.fakeVerifier(this.claimedUser ?? '');
    const proofValid = verifyClientProof(this.hash, verifier.storedKey, message, clientFinal.proof);
    if (this.verifier === null) throw this.fail('unknown-user: no such user in the user database');
    if (!proofValid) throw this.fail('invalid-proof: wrong password');
    const authcid = this.claimedUser!;
    if (this.authzid !== null && this.authzid !== authcid) {
      throw this.fail(`other-error: ${authcid} may not act as ${this.authzid} (proxy authorization is not supported)`);
    }
    this.username = this.authzid ?? authcid;
    this.state = 'done';
    return { done: true, data: Buffer.from(`v=${serverSignature(this.hash, verifier.serverKey, message).toString('base64')}`, 'utf8') };
  }

  private fakeSalt(username: string): Buffer {
    return hmac(this.hash, UNKNOWN_USER_SECRET, `salt\0${this.hash.name}\0${username}`).subarray(0, DEFAULT_SALT_LENGTH);
  }

  /** Keys no password can match; used so that unknown users cost the same work as known ones. */
  private fakeVerifier(username: string): ScramVerifier {
    const salted = hmac(this.hash, UNKNOWN_USER_SECRET, `keys\0${this.hash.name}\0${username}`);
    const keys = deriveKeys(this.hash, salted);
    return {
      hash: this.hash.name,
      salt: this.fakeSalt(username),
      iterations: this.options.unknownUserIterations,
      storedKey: keys.storedKey,
      serverKey: keys.serverKey,
    };
  }
}
