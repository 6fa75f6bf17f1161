// Node has no unix datagram sockets and cannot name the address of a descriptor it inherited.
// virtauthd needs both as a systemd service: readiness notifications and journal entries are
// datagrams, and sockets passed without names are matched by their address.

#include "socket-tools.h"

#include "addon-errors.h"

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

#ifdef __linux__
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>
#endif

namespace {

#ifdef __linux__
// A leading '@' names an abstract socket, as systemd writes NOTIFY_SOCKET.
bool FillAddress(const std::string& path, sockaddr_un& address, socklen_t& length) {
  std::memset(&address, 0, sizeof(address));
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() > sizeof(address.sun_path)) return false;
  std::memcpy(address.sun_path, path.data(), path.size());
  if (address.sun_path[0] == '@') address.sun_path[0] = '\0';
  // A filesystem path is NUL-terminated when it fits; an abstract name counts exactly.
  length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + (address.sun_path[0] == '\0' ? 0 : 1));
  if (length > sizeof(address)) length = sizeof(address);
  return true;
}

bool ReadString(napi_env env, napi_value value, std::string& out) {
  size_t length = 0;
  if (napi_get_value_string_utf8(env, value, nullptr, 0, &length) != napi_ok) return false;
  out.resize(length);
  size_t written = 0;
  if (napi_get_value_string_utf8(env, value, out.data(), length + 1, &written) != napi_ok) return false;
  out.resize(written);
  return true;
}

// One datagram socket for the whole process, non-blocking so a stalled receiver can never hold
// the event loop: a full queue is reported as EAGAIN and the caller decides what to drop.
int SharedDatagramSocket(int& error) {
  static int shared = -1;
  if (shared < 0) {
    shared = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (shared < 0) error = errno;
  }
  return shared;
}

// Sends `data` to `path`, either as the datagram's payload or, for entries too big for one
// datagram, as a sealed memfd passed with SCM_RIGHTS (the journal's protocol for large entries).
napi_value Send(napi_env env, napi_callback_info info, bool via_memfd) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok) return nullptr;
  std::string path;
  void* data = nullptr;
  size_t size = 0;
  bool is_buffer = false;
  if (argc < 2 || !ReadString(env, argv[0], path) || napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[1], &data, &size) != napi_ok) {
    return ThrowWithCode(env, "ERR_INVALID_ARG", "expects a socket path (string) and a Buffer");
  }
  sockaddr_un address;
  socklen_t address_length = 0;
  if (!FillAddress(path, address, address_length)) {
    return ThrowWithCode(env, "ENAMETOOLONG", "the socket path is empty or longer than a unix socket address allows");
  }
  int error = 0;
  int fd = SharedDatagramSocket(error);
  if (fd < 0) return ThrowErrno(env, "socket", error);

  msghdr message;
  std::memset(&message, 0, sizeof(message));
  message.msg_name = &address;
  message.msg_namelen = address_length;
  iovec payload{data, size};
  if (!via_memfd) {
    message.msg_iov = &payload;
    message.msg_iovlen = 1;
    if (sendmsg(fd, &message, MSG_NOSIGNAL) < 0) return ThrowErrno(env, "sendmsg", errno);
    return nullptr;
  }

  int memory = memfd_create("virtauth-datagram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (memory < 0) return ThrowErrno(env, "memfd_create", errno);
  const char* cursor = static_cast<const char*>(data);
  size_t left = size;
  while (left > 0) {
    ssize_t written = write(memory, cursor, left);
    if (written < 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      close(memory);
      return ThrowErrno(env, "write(memfd)", saved);
    }
    cursor += written;
    left -= static_cast<size_t>(written);
  }
  // The journal only accepts a memfd nobody can change any more.
  if (fcntl(memory, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
    int saved = errno;
    close(memory);
    return ThrowErrno(env, "fcntl(F_ADD_SEALS)", saved);
  }
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  std::memset(control, 0, sizeof(control));
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(header), &memory, sizeof(int));
  int result = sendmsg(fd, &message, MSG_NOSIGNAL);
  int saved = errno;
  close(memory);
  if (result < 0) return ThrowErrno(env, "sendmsg(memfd)", saved);
  return nullptr;
}

napi_value SendDatagram(napi_env env, napi_callback_info info) { return Send(env, info, false); }
napi_value SendDatagramViaMemfd(napi_env env, napi_callback_info info) { return Send(env, info, true); }

napi_value SetString(napi_env env, napi_value object, const char* name, const std::string& value) {
  napi_value text;
  if (napi_create_string_utf8(env, value.data(), value.size(), &text) != napi_ok) return nullptr;
  if (napi_set_named_property(env, object, name, text) != napi_ok) return nullptr;
  return object;
}

napi_value SetInt(napi_env env, napi_value object, const char* name, int32_t value) {
  napi_value number;
  if (napi_create_int32(env, value, &number) != napi_ok) return nullptr;
  if (napi_set_named_property(env, object, name, number) != napi_ok) return nullptr;
  return object;
}

napi_value SetBool(napi_env env, napi_value object, const char* name, bool value) {
  napi_value flag;
  if (napi_get_boolean(env, value, &flag) != napi_ok) return nullptr;
  if (napi_set_named_property(env, object, name, flag) != napi_ok) return nullptr;
  return object;
}

// socketAddress(fd): {family: 'unix', path} | {family: 'inet'|'inet6', address, port}, plus
// whether it is a listening stream socket.
napi_value SocketAddress(napi_env env, napi_callback_info info) {
  int32_t fd = -1;
  if (!ReadDescriptorArgument(env, info, "socketAddress", fd)) return nullptr;
  sockaddr_storage local;
  socklen_t length = sizeof(local);
  std::memset(&local, 0, sizeof(local));
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) != 0) return ThrowErrno(env, "getsockname", errno);
  int type = 0;
  socklen_t type_length = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_length) != 0) return ThrowErrno(env, "getsockopt(SO_TYPE)", errno);
  int listening = 0;
  socklen_t listening_length = sizeof(listening);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &listening_length) != 0) return ThrowErrno(env, "getsockopt(SO_ACCEPTCONN)", errno);

  napi_value result;
  if (napi_create_object(env, &result) != napi_ok) return nullptr;
  if (!SetBool(env, result, "stream", type == SOCK_STREAM)) return nullptr;
  if (!SetBool(env, result, "listening", listening != 0)) return nullptr;
  if (local.ss_family == AF_UNIX) {
    const sockaddr_un* unix_address = reinterpret_cast<const sockaddr_un*>(&local);
    size_t path_length = length > offsetof(sockaddr_un, sun_path) ? length - offsetof(sockaddr_un, sun_path) : 0;
    std::string path(unix_address->sun_path, path_length);
    if (!path.empty() && path[0] == '\0') {
      path[0] = '@';
    } else {
      path = std::string(path.c_str());
    }
    if (!SetString(env, result, "family", "unix") || !SetString(env, result, "path", path)) return nullptr;
  } else if (local.ss_family == AF_INET || local.ss_family == AF_INET6) {
    char text[INET6_ADDRSTRLEN] = {0};
    int port = 0;
    if (local.ss_family == AF_INET) {
      const sockaddr_in* v4 = reinterpret_cast<const sockaddr_in*>(&local);
      inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
      port = ntohs(v4->sin_port);
    } else {
      const sockaddr_in6* v6 = reinterpret_cast<const sockaddr_in6*>(&local);
      inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
      port = ntohs(v6->sin6_port);
    }
    if (!SetString(env, result, "family", local.ss_family == AF_INET ? "inet" : "inet6") || !SetString(env, result, "address", text) ||
        !SetInt(env, result, "port", port)) {
      return nullptr;
    }
  } else {
    if (!SetString(env, result, "family", "other")) return nullptr;
  }
  return result;
}
#else
napi_value Unsupported(napi_env env, napi_callback_info) {
  return ThrowWithCode(env, "ERR_UNSUPPORTED", "unix datagrams and socket addresses are only implemented for Linux");
}
#endif

}  // namespace

napi_value RegisterSocketTools(napi_env env, napi_value exports) {
#ifdef __linux__
  if (!AddFunction(env, exports, "sendDatagram", SendDatagram)) return nullptr;
  if (!AddFunction(env, exports, "sendDatagramViaMemfd", SendDatagramViaMemfd)) return nullptr;
  if (!AddFunction(env, exports, "socketAddress", SocketAddress)) return nullptr;
#else
  if (!AddFunction(env, exports, "sendDatagram", Unsupported)) return nullptr;
  if (!AddFunction(env, exports, "sendDatagramViaMemfd", Unsupported)) return nullptr;
  if (!AddFunction(env, exports, "socketAddress", Unsupported)) return nullptr;
#endif
  return exports;
}
