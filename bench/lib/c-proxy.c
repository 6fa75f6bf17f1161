// A unix-socket proxy in C that copies bytes both ways and understands nothing: one thread, epoll,
// nonblocking sockets, a 256 KiB buffer per direction. The benchmarks measure it beside the
// gateway to show what one more hop costs on the machine when the hop itself is nearly free.
// Not a benchmark itself, and not part of virtauth.
//   c-proxy LISTEN_PATH TARGET_PATH      (prints "ready" once listening)
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BUFFER_BYTES (256 * 1024)

// One socket of a proxied pair. `pending` holds bytes read from this socket that the peer's
// socket has not taken yet; while any are pending this socket is not read.
struct end {
  int fd;
  struct end *peer;
  char *pending;
  size_t offset, length;
};

static int poller;

// Read a socket while nothing of its own waits; wait for room while its peer's bytes wait.
static void rearm(struct end *e) {
  struct epoll_event ev = {.events = (e->length == 0 ? EPOLLIN : 0) | (e->peer->length > 0 ? EPOLLOUT : 0), .data.ptr = e};
  epoll_ctl(poller, EPOLL_CTL_MOD, e->fd, &ev);
}

static void close_pair(struct end *e) {
  struct end *p = e->peer;
  close(e->fd);
  close(p->fd);
  free(e->pending);
  free(p->pending);
  free(e);
  free(p);
}

// Writes what `from` holds to its peer; false on a broken connection.
static int flush(struct end *from) {
  while (from->offset < from->length) {
    ssize_t n = write(from->peer->fd, from->pending + from->offset, from->length - from->offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      rearm(from);
      rearm(from->peer);
      return 1;
    }
    if (n < 0) return 0;
    from->offset += (size_t)n;
  }
  from->offset = from->length = 0;
  return 1;
}

static int readable(struct end *e) {
  ssize_t n = read(e->fd, e->pending, BUFFER_BYTES);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 1;
  if (n <= 0) return 0;
  e->offset = 0;
  e->length = (size_t)n;
  return flush(e);
}

// `e` can take bytes again: its peer's pending ones go first.
static int writable(struct end *e) {
  struct end *from = e->peer;
  if (!flush(from)) return 0;
  rearm(e);
  rearm(from);
  return 1;
}

static struct end *new_end(int fd) {
  struct end *e = calloc(1, sizeof *e);
  e->fd = fd;
  e->pending = malloc(BUFFER_BYTES);
  return e;
}

static int unix_socket(const char *path, int listening) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_un address = {.sun_family = AF_UNIX};
  strncpy(address.sun_path, path, sizeof address.sun_path - 1);
  if (listening) {
    unlink(path);
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0 || listen(fd, 1024) < 0) return -1;
  } else if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: c-proxy LISTEN_PATH TARGET_PATH\n");
    return 2;
  }
  int listener = unix_socket(argv[1], 1);
  if (listener < 0) {
    perror("c-proxy: listen");
    return 1;
  }
  poller = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(poller, EPOLL_CTL_ADD, listener, &ev);
  printf("ready\n");
  fflush(stdout);
  struct epoll_event events[256];
  for (;;) {
    int ready = epoll_wait(poller, events, 256, -1);
    for (int i = 0; i < ready; i++) {
      struct end *e = events[i].data.ptr;
      if (e == NULL) {
        int client;
        while ((client = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          int upstream = unix_socket(argv[2], 0);
          if (upstream < 0) {
            close(client);
            continue;
          }
          struct end *c = new_end(client), *u = new_end(upstream);
          c->peer = u;
          u->peer = c;
          struct epoll_event ec = {.events = EPOLLIN, .data.ptr = c}, eu = {.events = EPOLLIN, .data.ptr = u};
          epoll_ctl(poller, EPOLL_CTL_ADD, client, &ec);
          epoll_ctl(poller, EPOLL_CTL_ADD, upstream, &eu);
        }
        continue;
      }
      int alive = (events[i].events & EPOLLOUT) ? writable(e) : readable(e);
      if (!alive) {
        close_pair(e);
        // Other events of this round may name the pair just freed; epoll reports the rest again.
        break;
      }
    }
  }
}
