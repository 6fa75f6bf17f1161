// libvirt RPC packets: a length word, a 24-byte header, an XDR payload (virnetprotocol.x).

import {
  VIR_NET_MESSAGE_HEADER_MAX,
  VIR_NET_MESSAGE_LEN_MAX,
  VIR_NET_MESSAGE_MAX,
  VIR_NET_MESSAGE_STRING_MAX,
  VirNetMessageStatus,
  VirNetMessageType,
  messageError,
  type VirNetMessageError,
  type VirNetMessageHeader,
} from '../protocol/generated/virnet.js';
import { XdrReader, XdrWriter, type Codec } from '../xdr/codec.js';
import { VirError } from '../errors.js';

export const MESSAGE_MAX = VIR_NET_MESSAGE_MAX;
export const MESSAGE_LEN_MAX = VIR_NET_MESSAGE_LEN_MAX;
export const MESSAGE_HEADER_SIZE = VIR_NET_MESSAGE_HEADER_MAX;
/** Smallest packet: length word + header, void payload. */
export const PACKET_MIN = MESSAGE_LEN_MAX + MESSAGE_HEADER_SIZE;
/** Largest value the length word may carry. */
export const PACKET_MAX = MESSAGE_MAX + MESSAGE_LEN_MAX;
export const MESSAGE_STRING_MAX = VIR_NET_MESSAGE_STRING_MAX;

export const MessageType = VirNetMessageType;
export type MessageType = VirNetMessageType;

export const MessageStatus = VirNetMessageStatus;
export type MessageStatus = VirNetMessageStatus;

/** `virNetMessageHeader`, decoded field by field on the hot path (see readHeader). */
export type Header = VirNetMessageHeader;

export function readHeader(r: XdrReader): Header {
  return { prog: r.uint(), vers: r.uint(), proc: r.int(), type: r.int(), serial: r.uint(), status: r.int() };
}

/** Encodes a whole packet (length word, header, payload) in one buffer. */
export function encodePacket<T>(h: Header, codec: Codec<T>, payload: T, sizeHint = 128): Buffer {
  const w = new XdrWriter(PACKET_MIN + sizeHint, PACKET_MIN);
  codec.encode(w, payload);
  const len = w.offset;
  if (len > PACKET_MAX)
    throw new VirError({
      code: 39,
      domain: 7,
      detail: `message payload of ${len - PACKET_MIN} bytes exceeds the maximum of ${MESSAGE_MAX - MESSAGE_HEADER_SIZE}`,
    });
  w.setUint32At(0, len);
  w.setUint32At(4, h.prog);
  w.setUint32At(8, h.vers);
  w.setUint32At(12, h.proc >>> 0);
  w.setUint32At(16, h.type >>> 0);
  w.setUint32At(20, h.serial);
  w.setUint32At(24, h.status >>> 0);
  return w.finish();
}

/** `virNetMessageError` (the same layout as `remote_error`), generated from virnetprotocol.x. */
export const errorPayload = messageError;
export type ErrorPayload = VirNetMessageError;

export function errorToPayload(e: VirError): ErrorPayload {
  return {
    code: e.code,
    domain: e.domain,
    message: e.message,
    level: e.level,
    dom: null,
    str1: e.str1,
    str2: e.str2,
    str3: e.str3,
    int1: e.int1,
    int2: e.int2,
    net: null,
  };
}

export function payloadToError(p: ErrorPayload): VirError {
  return new VirError({
    code: p.code,
    domain: p.domain,
    message: p.message ?? 'Library function returned error but did not set virError',
    level: p.level,
    str1: p.str1,
    str2: p.str2,
    str3: p.str3,
    int1: p.int1,
    int2: p.int2,
  });
}
