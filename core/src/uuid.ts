// libvirt's UUIDs: 16 bytes on the wire (remote_uuid), 8-4-4-4-12 hex digits as text.

const UUID_TEXT = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** The 16 bytes of a UUID written as text (with or without its dashes), or null if it is not one. */
export function parseUuid(text: string): Buffer | null {
  return UUID_TEXT.test(text) ? Buffer.from(text.replace(/-/g, ''), 'hex') : null;
}

/** The text form of a 16-byte UUID, or null for any other length. */
export function formatUuid(bytes: Buffer): string | null {
  if (bytes.length !== 16) return null;
  const h = bytes.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
