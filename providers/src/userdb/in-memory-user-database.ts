// A user database held in memory: for tests and for embedding virtauth without a password file.

import type { ScramVerifier, UserDatabase, UserRecord } from '@virtauth/core';
import { checkIterations, copyVerifier, DEFAULT_SCRAM_ITERATIONS, lookupName, prepareUserName, verifiersForPassword } from './common.js';

export interface InMemoryUserDatabaseOptions {
  /** PBKDF2 iterations for new verifiers (default 4096). */
  iterations?: number;
}

export class InMemoryUserDatabase implements UserDatabase {
  private readonly users = new Map<string, ScramVerifier[]>();
  readonly iterations: number;

  constructor(options: InMemoryUserDatabaseOptions = {}) {
    this.iterations = checkIterations(options.iterations ?? DEFAULT_SCRAM_ITERATIONS);
  }

  async getVerifier(username: string, hash: string): Promise<ScramVerifier | null> {
    const name = lookupName(username);
    const found = name === null ? undefined : this.users.get(name)?.find((v) => v.hash === hash);
    return found ? copyVerifier(found) : null;
  }

  async list(): Promise<string[]> {
    return [...this.users.keys()].sort();
  }

  async setPassword(username: string, password: string): Promise<void> {
    const name = prepareUserName(username, 'stored');
    this.users.set(name, await verifiersForPassword(password, this.iterations));
  }

  /** Stores ready-made verifiers (e.g. imported ones, or fixed test vectors). */
  setUser(record: UserRecord): void {
    this.users.set(prepareUserName(record.username, 'stored'), record.verifiers.map(copyVerifier));
  }

  async remove(username: string): Promise<boolean> {
    const name = lookupName(username);
    return name !== null && this.users.delete(name);
  }
}
