// What the gateway knows of libvirt's remote program, taken from the table generated from
// remote_protocol.x: the last procedure number, and the procedures that open a data stream on
// their call's serial.

import { RemoteProc, remoteProcedures } from '@virtauth/core';

/** The highest procedure number of the generated table (DOMAIN_FD_ASSOCIATE, 443, in 9.0.0); 1 to it are all defined. */
export const REMOTE_PROC_LAST = Math.max(...remoteProcedures.map((p) => p.number));

/**
 * Procedures whose successful call opens a stream: those annotated @readstream or @writestream
 * (MIGRATE_PREPARE_TUNNEL, OPEN_CONSOLE, STORAGE_VOL_UPLOAD/DOWNLOAD, SCREENSHOT,
 * MIGRATE_PREPARE_TUNNEL3, OPEN_CHANNEL) and MIGRATE_PREPARE_TUNNEL3_PARAMS, whose daemon side is
 * written by hand but opens one the same way.
 */
export const STREAM_PROCEDURES: ReadonlySet<number> = new Set([
  ...remoteProcedures.filter((p) => p.stream !== null).map((p) => p.number),
  RemoteProc.DOMAIN_MIGRATE_PREPARE_TUNNEL3_PARAMS,
]);
