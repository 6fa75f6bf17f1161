// The gateway's stream data, copied between two sockets without passing through JavaScript.
//
// A vol-download arrives as libvirt STREAM packets of 256 KiB. Through Node each one costs
// several reads into fresh buffers, the stream machinery and as many writes; a thread that
// copies the bytes itself costs one read and one write per packet. JavaScript still reads the
// header of the first packet and decides that it belongs to an open stream; it then hands the
// rest of that packet to a pump, which also passes on every following packet that is more data
// (type STREAM, status CONTINUE) of the same call, and stops at the first packet that is
// anything else. That packet, and whatever was read after it, goes back to JavaScript unread,
// so replies, events, the stream's end and keepalive are still handled there.
//
// The pump owns duplicates of both descriptors while it runs (JavaScript has stopped reading the
// source and holds its writes to the destination meanwhile), and an eventfd through which it is
// told to stop at the next packet boundary or to give up at once.

#include "stream-pump.h"

#include "addon-errors.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#ifdef __linux__
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>
#endif

namespace {

#ifdef __linux__

constexpr size_t kBufferBytes = 256 * 1024;
// Length word plus libvirt's six-word header.
constexpr size_t kHeaderBytes = 28;
constexpr uint32_t kTypeStream = 3;
constexpr uint32_t kStatusContinue = 2;

uint32_t ReadWord(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

enum class Ending { kBoundary, kFailed, kCancelled };

struct Pump {
  int from = -1;
  int to = -1;
  int wake = -1;
  uint32_t prog = 0, vers = 0, proc = 0, serial = 0;
  uint32_t max_packet = 0;
  // Bytes of the packet in progress that have not been read yet.
  uint64_t remaining = 0;
  std::chrono::milliseconds run_limit{0};
  std::atomic<bool> stop_soon{false};
  std::atomic<bool> cancelled{false};

  // What the thread reports.
  Ending ending = Ending::kBoundary;
  const char* failure_side = "";
  std::string failure_code;
  std::string failure_text;
  std::vector<uint8_t> leftover;
  uint64_t forwarded = 0;

  napi_threadsafe_function done = nullptr;
  napi_ref callback = nullptr;
  pthread_t thread{};
  bool started = false;
};

// `side`: which socket failed, "source" or "destination".
void Fail(Pump& pump, const char* side, const char* code, const std::string& text) {
  pump.ending = Ending::kFailed;
  pump.failure_side = side;
  pump.failure_code = code;
  pump.failure_text = text;
}

// Clears the eventfd; the flags say why it was written.
void DrainWake(int wake) {
  uint64_t value;
  while (read(wake, &value, sizeof(value)) > 0) {
  }
}

// Waits until `fd` is ready for `events`, the eventfd is written, or `timeout_ms` passes.
// Returns 1 when `fd` is ready, 0 on a wake or timeout, -1 on error (errno set).
int WaitFor(Pump& pump, int fd, short events, int timeout_ms) {
  pollfd fds[2] = {{fd, events, 0}, {pump.wake, POLLIN, 0}};
  for (;;) {
    int n = poll(fds, 2, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (fds[1].revents & POLLIN) DrainWake(pump.wake);
    // Readiness includes hang-up and error: the read or write that follows reports them.
    if (fds[0].revents) return 1;
    return 0;
  }
}

// Writes all of `data`, waiting for room as needed. False when it failed or was cancelled.
bool WriteAll(Pump& pump, const uint8_t* data, size_t length) {
  while (length > 0) {
    if (pump.cancelled.load()) {
      pump.ending = Ending::kCancelled;
      return false;
    }
    ssize_t n = write(pump.to, data, length);
    if (n > 0) {
      data += n;
      length -= static_cast<size_t>(n);
      pump.forwarded += static_cast<uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (WaitFor(pump, pump.to, POLLOUT, -1) < 0) {
        Fail(pump, "destination", ErrnoName(errno), std::string("poll: ") + std::strerror(errno));
        return false;
      }
      continue;
    }
    Fail(pump, "destination", ErrnoName(errno), std::string("write: ") + std::strerror(errno));
    return false;
  }
  return true;
}

// Whether the header at `p` starts another data packet of the same stream, small enough.
bool IsMoreData(const Pump& pump, const uint8_t* p) {
  uint32_t length = ReadWord(p);
  return length >= kHeaderBytes && length <= pump.max_packet && ReadWord(p + 4) == pump.prog && ReadWord(p + 8) == pump.vers &&
         ReadWord(p + 12) == pump.proc && ReadWord(p + 16) == kTypeStream && ReadWord(p + 20) == pump.serial &&
         ReadWord(p + 24) == kStatusContinue;
}

void Run(Pump& pump) {
  // Not zeroed: every byte is read into before it is looked at.
  std::unique_ptr<uint8_t[]> storage(new uint8_t[kBufferBytes]);
  uint8_t* const buffer = storage.get();
  size_t held = 0;  // bytes at the start of `buffer` not yet passed on (at most a partial header)
  const auto started = std::chrono::steady_clock::now();
  auto over_time = [&] { return std::chrono::steady_clock::now() - started >= pump.run_limit; };

  for (;;) {
    if (pump.cancelled.load()) {
      pump.ending = Ending::kCancelled;
      return;
    }
    const bool at_boundary = pump.remaining == 0 && held == 0;
    if (at_boundary && (pump.stop_soon.load() || over_time())) return;

    ssize_t n = read(pump.from, buffer + held, kBufferBytes - held);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Between packets the wait is bounded, so JavaScript sees the connection again now and
      // then (keepalive); inside a packet the bytes must come, or the connection is closed.
      int timeout = -1;
      if (at_boundary) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(pump.run_limit - (std::chrono::steady_clock::now() - started));
        timeout = left.count() > 0 ? static_cast<int>(left.count()) : 0;
      }
      if (WaitFor(pump, pump.from, POLLIN, timeout) < 0) {
        Fail(pump, "source", ErrnoName(errno), std::string("poll: ") + std::strerror(errno));
        return;
      }
      continue;
    }
    if (n < 0) {
      Fail(pump, "source", ErrnoName(errno), std::string("read: ") + std::strerror(errno));
      return;
    }
    if (n == 0) {
      // The end of input between packets is JavaScript's to see (its next read meets it too);
      // inside a packet the stream cannot be completed.
      if (!at_boundary) Fail(pump, "source", "EPROTO", "the upstream closed the connection inside a stream packet");
      if (held > 0) pump.leftover.assign(buffer, buffer + static_cast<std::ptrdiff_t>(held));
      return;
    }

    const size_t have = held + static_cast<size_t>(n);
    size_t position = 0;
    bool stop = false;
    while (position < have) {
      if (pump.remaining > 0) {
        size_t take = have - position < pump.remaining ? have - position : static_cast<size_t>(pump.remaining);
        position += take;
        pump.remaining -= take;
        continue;
      }
      // A packet boundary: stop when asked or out of time (a partial header goes back too).
      if (pump.stop_soon.load() || over_time()) {
        stop = true;
        break;
      }
      if (have - position < kHeaderBytes) break;  // a header cut short: wait for the rest of it
      if (!IsMoreData(pump, buffer + position)) {
        stop = true;
        break;
      }
      pump.remaining = ReadWord(buffer + position) - kHeaderBytes;
      position += kHeaderBytes;
    }
    if (!WriteAll(pump, buffer, position)) return;
    if (stop) {
      pump.leftover.assign(buffer + static_cast<std::ptrdiff_t>(position), buffer + static_cast<std::ptrdiff_t>(have));
      return;
    }
    held = have - position;
    if (held > 0) std::memmove(buffer, buffer + position, held);
  }
}

// The socket duplicates: closed by the thread as it ends, so the peers see a hang-up as soon as
// JavaScript's own descriptors go, whenever the callback runs.
void CloseSockets(Pump& pump) {
  if (pump.from >= 0) close(pump.from);
  if (pump.to >= 0) close(pump.to);
  pump.from = pump.to = -1;
}

// The eventfd is closed on the main thread only, where stop() and cancel() write it: closed by
// the thread, its number could be reused (by libuv's threads) before a stop() that raced the
// end wrote eight bytes into whatever it now names.
void CloseDescriptors(Pump& pump) {
  CloseSockets(pump);
  if (pump.wake >= 0) close(pump.wake);
  pump.wake = -1;
}

// On the main thread once the pump's thread is done: reports to the callback, frees the pump.
void Finished(napi_env env, void* data, void*) {
  Pump* pump = static_cast<Pump*>(data);
  if (pump->started) pthread_join(pump->thread, nullptr);
  CloseDescriptors(*pump);
  if (env != nullptr && pump->callback != nullptr) {
    napi_value callback, global, error, leftover, forwarded;
    napi_get_reference_value(env, pump->callback, &callback);
    napi_get_global(env, &global);
    if (pump->ending == Ending::kFailed) {
      napi_value code, message;
      napi_create_string_utf8(env, pump->failure_code.c_str(), NAPI_AUTO_LENGTH, &code);
      napi_create_string_utf8(env, pump->failure_text.c_str(), NAPI_AUTO_LENGTH, &message);
      napi_create_error(env, code, message, &error);
      napi_value side;
      napi_create_string_utf8(env, pump->failure_side, NAPI_AUTO_LENGTH, &side);
      napi_set_named_property(env, error, "side", side);
    } else if (pump->ending == Ending::kCancelled) {
      napi_value code, message;
      napi_create_string_utf8(env, "ECANCELED", NAPI_AUTO_LENGTH, &code);
      napi_create_string_utf8(env, "the stream pump was cancelled", NAPI_AUTO_LENGTH, &message);
      napi_create_error(env, code, message, &error);
    } else {
      napi_get_null(env, &error);
    }
    void* copy = nullptr;
    napi_create_buffer_copy(env, pump->leftover.size(), pump->leftover.data(), &copy, &leftover);
    napi_create_double(env, static_cast<double>(pump->forwarded), &forwarded);
    napi_value argv[3] = {error, leftover, forwarded};
    napi_call_function(env, global, callback, 3, argv, nullptr);
    napi_delete_reference(env, pump->callback);
  }
  delete pump;
}

void* PumpThread(void* data) {
  Pump* pump = static_cast<Pump*>(data);
  Run(*pump);
  CloseSockets(*pump);
  // The last release: Node then runs Finished on the main thread.
  napi_release_threadsafe_function(pump->done, napi_tsfn_release);
  return nullptr;
}

// Nothing is ever queued on the thread-safe function; Node requires a call_js all the same.
void NeverCalled(napi_env, napi_value, void*, void*) {}

bool GetUint32Property(napi_env env, napi_value object, const char* name, uint32_t& out) {
  napi_value value;
  if (napi_get_named_property(env, object, name, &value) != napi_ok) return false;
  return napi_get_value_uint32(env, value, &out) == napi_ok;
}

bool GetNumberProperty(napi_env env, napi_value object, const char* name, double& out) {
  napi_value value;
  if (napi_get_named_property(env, object, name, &value) != napi_ok) return false;
  return napi_get_value_double(env, value, &out) == napi_ok;
}

// startStreamPump({ from, to, prog, vers, proc, serial, remaining, maxPacket, runLimitMs }, callback)
//   -> a handle for stopStreamPump / cancelStreamPump. `callback(error, leftover, forwarded)`
//   runs once, after the thread has closed its descriptors.
napi_value StartStreamPump(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok) return nullptr;
  napi_valuetype callback_type = napi_undefined;
  if (argc == 2) napi_typeof(env, argv[1], &callback_type);
  if (callback_type != napi_function) return ThrowWithCode(env, "ERR_INVALID_ARG", "startStreamPump expects (options, callback)");

  uint32_t from = 0, to = 0, max_packet = 0, run_limit = 0;
  double remaining = 0;
  Pump* pump = new Pump();
  if (!GetUint32Property(env, argv[0], "from", from) || !GetUint32Property(env, argv[0], "to", to) ||
      !GetUint32Property(env, argv[0], "prog", pump->prog) || !GetUint32Property(env, argv[0], "vers", pump->vers) ||
      !GetUint32Property(env, argv[0], "proc", pump->proc) || !GetUint32Property(env, argv[0], "serial", pump->serial) ||
      !GetNumberProperty(env, argv[0], "remaining", remaining) || !GetUint32Property(env, argv[0], "maxPacket", max_packet) ||
      !GetUint32Property(env, argv[0], "runLimitMs", run_limit) || remaining < 0 || max_packet < kHeaderBytes) {
    delete pump;
    return ThrowWithCode(env, "ERR_INVALID_ARG",
                         "startStreamPump: options need descriptors from and to, the stream's prog, vers, proc and serial, "
                         "remaining >= 0, maxPacket >= 28 and runLimitMs");
  }
  pump->remaining = static_cast<uint64_t>(remaining);
  pump->max_packet = max_packet;
  pump->run_limit = std::chrono::milliseconds(run_limit);

  pump->from = fcntl(static_cast<int>(from), F_DUPFD_CLOEXEC, 0);
  if (pump->from < 0) {
    int error = errno;
    delete pump;
    return ThrowErrno(env, "dup(from)", error);
  }
  pump->to = fcntl(static_cast<int>(to), F_DUPFD_CLOEXEC, 0);
  pump->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (pump->to < 0 || pump->wake < 0) {
    int error = errno;
    const char* what = pump->to < 0 ? "dup(to)" : "eventfd";
    CloseDescriptors(*pump);
    delete pump;
    return ThrowErrno(env, what, error);
  }

  napi_value name;
  napi_create_string_utf8(env, "virtauth stream pump", NAPI_AUTO_LENGTH, &name);
  napi_create_reference(env, argv[1], 1, &pump->callback);
  // The finalizer is the only thing the thread-safe function is for: the thread releases it,
  // and the finalizer then runs on the main thread with the result.
  if (napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, pump, Finished, pump, NeverCalled, &pump->done) != napi_ok) {
    napi_delete_reference(env, pump->callback);
    CloseDescriptors(*pump);
    delete pump;
    return ThrowWithCode(env, "ERR_PUMP", "startStreamPump: cannot create the completion callback");
  }
  int error = pthread_create(&pump->thread, nullptr, PumpThread, pump);
  if (error != 0) {
    napi_delete_reference(env, pump->callback);
    pump->callback = nullptr;
    CloseDescriptors(*pump);
    // Releasing runs Finished, which frees the pump; with no callback it reports nothing.
    napi_release_threadsafe_function(pump->done, napi_tsfn_abort);
    return ThrowErrno(env, "startStreamPump: pthread_create", error);
  }
  pump->started = true;

  napi_value handle;
  napi_create_external(env, pump, nullptr, nullptr, &handle);
  return handle;
}

Pump* PumpArgument(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void* data = nullptr;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 1 ||
      napi_get_value_external(env, argv[0], &data) != napi_ok) {
    ThrowWithCode(env, "ERR_INVALID_ARG", "expects a stream pump handle");
    return nullptr;
  }
  return static_cast<Pump*>(data);
}

void Wake(Pump& pump) {
  uint64_t one = 1;
  if (pump.wake >= 0) (void)!write(pump.wake, &one, sizeof(one));
}

// Raises one of the pump's flags and wakes its thread. Only valid until the pump's callback has
// run (the TypeScript wrapper keeps to that).
napi_value Signal(napi_env env, napi_callback_info info, std::atomic<bool> Pump::*flag) {
  Pump* pump = PumpArgument(env, info);
  if (pump == nullptr) return nullptr;
  (pump->*flag).store(true);
  Wake(*pump);
  return nullptr;
}

// Stop at the next packet boundary.
napi_value StopStreamPump(napi_env env, napi_callback_info info) { return Signal(env, info, &Pump::stop_soon); }

// Give up at once, mid-packet if need be: for a connection that is closing.
napi_value CancelStreamPump(napi_env env, napi_callback_info info) { return Signal(env, info, &Pump::cancelled); }

#else

napi_value Unsupported(napi_env env, napi_callback_info) {
  return ThrowWithCode(env, "ERR_UNSUPPORTED", "the stream pump is only implemented for Linux");
}

#endif

}  // namespace

napi_value RegisterStreamPump(napi_env env, napi_value exports) {
#ifdef __linux__
  if (!AddFunction(env, exports, "startStreamPump", StartStreamPump)) return nullptr;
  if (!AddFunction(env, exports, "stopStreamPump", StopStreamPump)) return nullptr;
  if (!AddFunction(env, exports, "cancelStreamPump", CancelStreamPump)) return nullptr;
#else
  if (!AddFunction(env, exports, "startStreamPump", Unsupported)) return nullptr;
  if (!AddFunction(env, exports, "stopStreamPump", Unsupported)) return nullptr;
  if (!AddFunction(env, exports, "cancelStreamPump", Unsupported)) return nullptr;
#endif
  return exports;
}
