// The CLI's relay policy: which file holds it, and what the user is told when a daemon's request
// is refused. Without a file, no stored credential answers a relayed request.

import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { loadRelayPolicy, type ClientRelayAuditRecord, type RelayPolicy } from '@virtauth/relay';

/** `--relay-policy FILE`, else $VIRTAUTH_RELAY_POLICY, else the user's file when it exists. */
export function relayPolicyPath(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string | null {
  if (option) return option;
  if (env.VIRTAUTH_RELAY_POLICY) return env.VIRTAUTH_RELAY_POLICY;
  const userFile = join(env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config'), 'virtauth', 'relay-policy.json');
  return existsSync(userFile) ? userFile : null;
}

export function clientRelayPolicy(option: string | undefined): RelayPolicy | null {
  const file = relayPolicyPath(option);
  return file === null ? null : loadRelayPolicy(file);
}

/** A refused request is worth a line on stderr: a daemon asked for something it may not have. */
export function reportRefusedRelayRequest(record: ClientRelayAuditRecord, write: (line: string) => void): void {
  if (record.outcome !== 'DENIED') return;
  write(
    `virtauth: refused a credential request (${record.credentialTypes.join(', ')}) relayed by ${record.daemon}: ${record.message ?? 'denied'}\n`,
  );
}
