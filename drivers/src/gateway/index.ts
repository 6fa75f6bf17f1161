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
export type { ReservedStreamPump, RunningStreamPump, StreamPump, StreamPumpDone, StreamPumpError, StreamPumpJob } from './stream-pump.js';
