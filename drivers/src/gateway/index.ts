export {
  PassThrough,
  type CallCheck,
  type EventCheck,
  type ForwardedCall,
  type ForwardedReply,
  type PassThroughLogger,
  type PassThroughOptions,
  type ReplyCheck,
} from './pass-through.js';
export { REMOTE_PROC_LAST, STREAM_PROCEDURES } from './remote-procedures.js';
