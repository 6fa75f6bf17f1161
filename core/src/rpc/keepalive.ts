// libvirt's keepalive program: PING/PONG MESSAGE packets with no payload, valid before auth.

export const KEEPALIVE_PROGRAM = 0x6b656570;
export const KEEPALIVE_VERSION = 1;
export const KeepaliveProc = { PING: 1, PONG: 2 } as const;
