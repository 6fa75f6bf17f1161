// What the gateway knows of libvirt's remote program, from remote_protocol.x of libvirt 9.0.0:
// the last procedure number, and the procedures that open a data stream on their call's serial.

/** REMOTE_PROC_DOMAIN_FD_ASSOCIATE, the highest procedure of 9.0.0; 1 to it are all defined. */
export const REMOTE_PROC_LAST = 443;

/**
 * Procedures whose successful call opens a stream: those annotated @readstream or @writestream
 * (MIGRATE_PREPARE_TUNNEL 148, OPEN_CONSOLE 201, STORAGE_VOL_UPLOAD 208, STORAGE_VOL_DOWNLOAD 209,
 * SCREENSHOT 211, MIGRATE_PREPARE_TUNNEL3 215, OPEN_CHANNEL 296) and MIGRATE_PREPARE_TUNNEL3_PARAMS
 * 304, whose daemon side is written by hand but opens one the same way.
 */
export const STREAM_PROCEDURES: ReadonlySet<number> = new Set([148, 201, 208, 209, 211, 215, 296, 304]);
