// The server's user database contract: SCRAM verifiers, never plaintext passwords.

export interface ScramVerifier {
  /** Hash name as in the mechanism, e.g. `SHA-256`. */
  hash: string;
  salt: Buffer;
  iterations: number;
  storedKey: Buffer;
  serverKey: Buffer;
}

export interface UserRecord {
  username: string;
  verifiers: ScramVerifier[];
}

export interface UserDatabase {
  /** The verifier for a user and hash, or null when the user does not exist. */
  getVerifier(username: string, hash: string): Promise<ScramVerifier | null>;
  list(): Promise<string[]>;
  /** Adds or replaces a user; the password is turned into verifiers and dropped. */
  setPassword(username: string, password: string): Promise<void>;
  remove(username: string): Promise<boolean>;
}
