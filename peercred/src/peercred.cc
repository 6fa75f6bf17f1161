// Peer credentials of a connected unix-domain socket, for virtauthd's authorization of local
// clients. Node exposes no API for SO_PEERCRED, so this addon reads it from the socket's fd.
// The kernel records the credentials when the client calls connect(), so they stay valid (and
// describe the connecting process) even if that process has exited since.

#include <node_api.h>

#include "addon-errors.h"
#include "socket-tools.h"
#include "stream-pump.h"

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#ifdef __linux__
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>
// Linux 4.13 added SO_PEERGROUPS; older libc headers may lack the constant.
#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif
#endif

namespace {

#ifdef __linux__
napi_value SetNumber(napi_env env, napi_value object, const char* name, double value) {
  napi_value number;
  if (napi_create_double(env, value, &number) != napi_ok) return nullptr;
  if (napi_set_named_property(env, object, name, number) != napi_ok) return nullptr;
  return object;
}

// SO_PEERGROUPS reports the size it needs with ERANGE; grow the buffer until the list fits.
bool ReadPeerGroups(int fd, std::vector<gid_t>& groups, int& error) {
  groups.resize(64);
  for (int attempt = 0; attempt < 4; attempt++) {
    socklen_t length = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &length) == 0) {
      groups.resize(length / sizeof(gid_t));
      return true;
    }
    if (errno != ERANGE) {
      error = errno;
      return false;
    }
    groups.resize(length / sizeof(gid_t) + 1);
  }
  error = ERANGE;
  return false;
}
#endif

// peerCredentials(fd: number): {pid, uid, gid, groups?: number[]}
napi_value PeerCredentials(napi_env env, napi_callback_info info) {
  int32_t fd = -1;
  if (!ReadDescriptorArgument(env, info, "peerCredentials", fd)) return nullptr;
#ifdef __linux__
  sockaddr_storage local;
  socklen_t local_length = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length) != 0) {
    return ThrowErrno(env, "getsockname", errno);
  }
  if (local.ss_family != AF_UNIX) {
    return ThrowWithCode(env, "ERR_NOT_UNIX_SOCKET", "the socket is not a unix-domain socket");
  }

  ucred credentials;
  socklen_t credentials_length = sizeof(credentials);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &credentials_length) != 0) {
    return ThrowErrno(env, "getsockopt(SO_PEERCRED)", errno);
  }

  napi_value result;
  if (napi_create_object(env, &result) != napi_ok) return nullptr;
  if (!SetNumber(env, result, "pid", credentials.pid)) return nullptr;
  if (!SetNumber(env, result, "uid", credentials.uid)) return nullptr;
  if (!SetNumber(env, result, "gid", credentials.gid)) return nullptr;

  std::vector<gid_t> groups;
  int groups_error = 0;
  if (ReadPeerGroups(fd, groups, groups_error)) {
    napi_value list;
    if (napi_create_array_with_length(env, groups.size(), &list) != napi_ok) return nullptr;
    for (size_t i = 0; i < groups.size(); i++) {
      napi_value gid;
      if (napi_create_double(env, groups[i], &gid) != napi_ok) return nullptr;
      if (napi_set_element(env, list, static_cast<uint32_t>(i), gid) != napi_ok) return nullptr;
    }
    if (napi_set_named_property(env, result, "groups", list) != napi_ok) return nullptr;
  } else if (groups_error != ENOPROTOOPT) {
    // A kernel without SO_PEERGROUPS simply gives no list; any other failure is real.
    return ThrowErrno(env, "getsockopt(SO_PEERGROUPS)", groups_error);
  }
  return result;
#else
  return ThrowWithCode(env, "ERR_PEERCRED_UNSUPPORTED", "SO_PEERCRED is only implemented for Linux");
#endif
}

napi_value Init(napi_env env, napi_value exports) {
  napi_value function;
  if (napi_create_function(env, "peerCredentials", NAPI_AUTO_LENGTH, PeerCredentials, nullptr, &function) != napi_ok) return nullptr;
  if (napi_set_named_property(env, exports, "peerCredentials", function) != napi_ok) return nullptr;
  napi_value supported;
#ifdef __linux__
  napi_get_boolean(env, true, &supported);
#else
  napi_get_boolean(env, false, &supported);
#endif
  napi_set_named_property(env, exports, "supported", supported);
  if (RegisterSocketTools(env, exports) == nullptr) return nullptr;
  return RegisterStreamPump(env, exports);
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
